import CanaryCore
import IPVS

/// The desired state as JSON (`GET /desired`), so that the CLI can plan and explain what a running
/// agent wants, in Kubernetes mode too.
public struct DesiredStateDocument: Codable, Sendable, Hashable {
    public struct Service: Codable, Sendable, Hashable {
        public var name: String
        /// The object and port it comes from (absent from an older agent's document: then the name).
        public var origin: ServiceOrigin?
        /// `tcp`, `udp` or `sctp`.
        public var `protocol`: String
        public var address: String
        public var port: UInt16
        public var scheduler: String
        public var persistenceTimeout: UInt32?
        public var persistenceNetmask: UInt32?
        public var forwarding: ForwardingMethod
        /// The first group's endpoints, the others' and their share (an older agent's whole
        /// description of a service; kept for older CLIs).
        public var stable: [Endpoint]
        public var canary: [Endpoint]
        /// The share of the groups after the first in hundredths of a percent (1000 = 10%).
        public var canaryBasisPoints: Int
        /// Every backend group with its weight (absent from an older agent's document).
        public var backends: [Backend]?
        public var unweightedFallback: UnweightedFallback?
    }

    public struct Backend: Codable, Sendable, Hashable {
        public var name: String
        public var origin: InputObject?
        public var weight: Int
        public var endpoints: [Endpoint]
    }

    public struct Endpoint: Codable, Sendable, Hashable {
        public var address: String
        public var draining: Bool
    }

    public var services: [Service]

    public init(_ state: DesiredState) {
        services = state.services.values.sorted { $0.key < $1.key }.compactMap { service in
            // Sources make only address services; a firewall-mark one would have no address here.
            guard case .inet(let proto, let socket) = service.key else { return nil }
            return Service(
                name: service.name, origin: service.origin, protocol: proto.description.lowercased(), address: "\(socket.address)",
                port: socket.port, scheduler: service.scheduler.rawValue, persistenceTimeout: service.persistence?.timeout,
                persistenceNetmask: service.persistence?.netmask, forwarding: service.forwarding,
                stable: service.stable.map { Endpoint(address: "\($0.address)", draining: $0.state == .draining) },
                canary: service.canary.map { Endpoint(address: "\($0.address)", draining: $0.state == .draining) },
                canaryBasisPoints: service.canaryShare.basisPoints,
                // A stable/canary split is described whole by the fields above.
                backends: service.isPlainStableAndCanary ? nil : service.backends.map { group in
                    Backend(
                        name: group.name, origin: group.origin, weight: group.weight,
                        endpoints: group.endpoints.map { Endpoint(address: "\($0.address)", draining: $0.state == .draining) })
                },
                unweightedFallback: service.isPlainStableAndCanary ? nil : service.unweightedFallback)
        }
    }

    /// The document as a desired state; the first field that does not parse is named in the error.
    public func desiredState() throws(DocumentError) -> DesiredState {
        var services: [DesiredService] = []
        for (index, service) in self.services.enumerated() {
            let field = "services[\(index)]"
            guard let proto = IPProtocol.allCases.first(where: { $0.description.lowercased() == service.protocol }) else {
                throw DocumentError(field: "\(field).protocol", value: service.protocol)
            }
            guard let address = IPAddress(service.address) else {
                throw DocumentError(field: "\(field).address", value: service.address)
            }
            guard let share = CanaryShare(basisPoints: service.canaryBasisPoints) else {
                throw DocumentError(field: "\(field).canaryBasisPoints", value: "\(service.canaryBasisPoints)")
            }
            func endpoints(_ list: [Endpoint], _ name: String) throws(DocumentError) -> [CanaryCore.Endpoint] {
                var result: [CanaryCore.Endpoint] = []
                for (position, endpoint) in list.enumerated() {
                    guard let socket = SocketAddress(endpoint.address) else {
                        throw DocumentError(field: "\(field).\(name)[\(position)]", value: endpoint.address)
                    }
                    result.append(CanaryCore.Endpoint(socket, state: endpoint.draining ? .draining : .live))
                }
                return result
            }
            let key = ServiceKey.inet(proto, SocketAddress(address: address, port: service.port))
            let origin = service.origin ?? .staticService(service.name)
            let persistence = service.persistenceTimeout.map { Persistence(timeout: $0, netmask: service.persistenceNetmask) }
            if let backends = service.backends {
                var groups: [BackendGroup] = []
                for (position, backend) in backends.enumerated() {
                    guard BackendGroup.weightRange.contains(backend.weight) else {
                        throw DocumentError(field: "\(field).backends[\(position)].weight", value: "\(backend.weight)")
                    }
                    groups.append(
                        BackendGroup(
                            name: backend.name, origin: backend.origin, weight: backend.weight,
                            endpoints: try endpoints(backend.endpoints, "backends[\(position)].endpoints")))
                }
                services.append(
                    DesiredService(
                        origin: origin, key: key, scheduler: Scheduler(rawValue: service.scheduler), persistence: persistence,
                        forwarding: service.forwarding, backends: groups,
                        unweightedFallback: service.unweightedFallback ?? .refuseNewConnections))
                continue
            }
            services.append(
                DesiredService(
                    origin: origin, key: key, scheduler: Scheduler(rawValue: service.scheduler), persistence: persistence,
                    forwarding: service.forwarding, stable: try endpoints(service.stable, "stable"),
                    canary: try endpoints(service.canary, "canary"), canaryShare: share))
        }
        return DesiredState(services: services)
    }

    /// A field of the document that does not parse.
    public struct DocumentError: Error, CustomStringConvertible {
        public var field: String
        public var value: String
        public var description: String { "desired state from the agent: \(field): '\(value)' does not parse" }
    }
}

extension DesiredService {
    /// A stable/canary split as `init(…stable:canary:canaryShare:)` makes it: the document's
    /// stable, canary and canaryBasisPoints describe it whole.
    var isPlainStableAndCanary: Bool {
        isStableAndCanary && unweightedFallback == .useGroupsOfWeightZero && backends.allSatisfy { $0.origin == nil }
            && backends[0].weight + backends[1].weight == 10_000
    }
}
