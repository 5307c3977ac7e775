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
        public var stable: [Endpoint]
        public var canary: [Endpoint]
        /// The canary's share of new connections in hundredths of a percent (1000 = 10%).
        public var canaryBasisPoints: Int
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
                canaryBasisPoints: service.canaryShare.basisPoints)
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
            services.append(
                DesiredService(
                    origin: service.origin ?? .staticService(service.name),
                    key: .inet(proto, SocketAddress(address: address, port: service.port)),
                    scheduler: Scheduler(rawValue: service.scheduler),
                    persistence: service.persistenceTimeout.map { Persistence(timeout: $0, netmask: service.persistenceNetmask) },
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
