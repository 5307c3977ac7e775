import CanaryCore
import IPVS
import KubernetesClient

/// The annotation and label scheme (see the README).
public enum CanaryScheme {
    /// The label with which kube-proxy leaves a Service to another proxy; its value for us.
    public static let serviceProxyNameLabel = "service.kubernetes.io/service-proxy-name"
    public static let serviceProxyName = "canary-agent"
    /// On the stable Service: the name of its canary Service, in the same namespace.
    public static let canaryServiceAnnotation = "canary-agent.io/canary-service"
    /// On the stable Service: the canary's percent of new connections, 0 to 100, up to two decimals.
    public static let canaryWeightAnnotation = "canary-agent.io/canary-weight"
    /// On the stable Service: sh, rr, wrr or mh.
    public static let schedulerAnnotation = "canary-agent.io/scheduler"
    /// On the stable Service: client persistence in seconds, 0 (off) to 86400.
    public static let persistenceTimeoutAnnotation = "canary-agent.io/persistence-timeout"
    /// On the Node: the node's default scheduler.
    public static let nodeSchedulerLabel = "canary-agent.io/scheduler"
    /// Kubernetes' default ClientIP affinity timeout.
    public static let defaultAffinityTimeout: UInt32 = 10_800
    /// The longest persistence accepted, as Kubernetes allows for ClientIP affinity.
    public static let maximumPersistenceTimeout: UInt32 = 86_400

    static func annotationField(_ key: String) -> String { "metadata.annotations[\(key)]" }
    static func labelField(_ key: String) -> String { "metadata.labels[\(key)]" }
}

/// The endpoint objects the agent reads: EndpointSlices, or core/v1 Endpoints on old clusters.
public enum EndpointObjects: Sendable {
    case slices([EndpointSlice])
    case endpoints([Endpoints])
}

/// Everything the translator reads.
public struct TranslationInput: Sendable {
    /// Every Service the agent sees: the stable ones (with our proxy-name label) and the canaries they name.
    public var services: [Service]
    public var endpoints: EndpointObjects
    /// The agent's own Node, for its scheduler label.
    public var node: Node?
    /// The `--scheduler` flag.
    public var defaultScheduler: Scheduler
    /// The `--external-ips` flag: program each Service's `spec.externalIPs` too (off: they are ignored).
    public var acceptExternalIPs: Bool
    /// Gateway API routes (any of `RouteKind`) and ReferenceGrants; empty without the CRDs.
    public var routes: [RouteRef: Route]
    public var grants: [ReferenceGrant]

    public init(
        services: [Service], endpoints: EndpointObjects, node: Node?, defaultScheduler: Scheduler, acceptExternalIPs: Bool = false,
        routes: [RouteRef: Route] = [:], grants: [ReferenceGrant] = []
    ) {
        self.services = services
        self.endpoints = endpoints
        self.node = node
        self.defaultScheduler = defaultScheduler
        self.acceptExternalIPs = acceptExternalIPs
        self.routes = routes
        self.grants = grants
    }
}

/// The routes that govern Service ports: every route's verdict, and the winner of each port.
public struct RouteDecisions: Sendable, Hashable {
    public var verdicts: [RouteRef: RouteVerdict] = [:]
    public var winners: [RouteEvaluation.PortKey: RouteRef] = [:]

    public init() {}

    public init(routes: [RouteRef: Route], services: [ObjectKey: Service], grants: [ReferenceGrant]) {
        for (ref, route) in routes {
            verdicts[ref] = RouteEvaluation.evaluate(route, kind: ref.kind, services: services, grants: grants)
        }
        winners = RouteEvaluation.winners(Array(verdicts.values))
        for key in winners.keys { winnerPorts[key.service, default: []].append(key.portIndex) }
    }

    /// Sets (or, nil, removes) one route's verdict, then decides again the ports of `parents`
    /// (each with the routes that may govern it): one route's change costs its own evaluation and
    /// its parents' ports, not every route's.
    mutating func update(_ ref: RouteRef, _ verdict: RouteVerdict?) {
        verdicts[ref] = verdict
    }

    /// Decides again who governs each port of `parent`, among the verdicts of `candidates`.
    mutating func redecide(parent: ObjectKey, candidates: Set<RouteRef>) {
        for port in winnerPorts[parent] ?? [] { winners[RouteEvaluation.PortKey(service: parent, portIndex: port)] = nil }
        winnerPorts[parent] = nil
        let decided = RouteEvaluation.winners(candidates.compactMap { verdicts[$0] }).filter { $0.key.service == parent }
        for (key, ref) in decided {
            winners[key] = ref
            winnerPorts[parent, default: []].append(key.portIndex)
        }
    }

    /// The ports of each parent that have a winner (to clear them when deciding again).
    private var winnerPorts: [ObjectKey: [Int]] = [:]

    /// The verdict of the route governing each port of a Service that a route governs.
    public func governing(_ service: ObjectKey, portCount: Int) -> [Int: RouteVerdict] {
        guard !winners.isEmpty else { return [:] }
        var result: [Int: RouteVerdict] = [:]
        for index in 0..<portCount {
            if let ref = winners[RouteEvaluation.PortKey(service: service, portIndex: index)], let verdict = verdicts[ref] {
                result[index] = verdict
            }
        }
        return result
    }

    /// The backend Services of the routes governing a Service's ports.
    public func backendServices(of service: ObjectKey, portCount: Int) -> [ObjectKey] {
        governing(service, portCount: portCount).values.flatMap { $0.backends?.map(\.service) ?? [] }
    }
}

/// What the translator makes of the cluster: the desired state and what is wrong in it.
public struct Translation: Sendable, Hashable {
    public var desiredState: DesiredState
    /// Sorted; at most one per object.
    public var problems: [InputProblem]
    /// What the routes decided (for their status).
    public var routes: RouteDecisions

    public init(desiredState: DesiredState, problems: [InputProblem], routes: RouteDecisions = RouteDecisions()) {
        self.desiredState = desiredState
        self.problems = problems
        self.routes = routes
    }
}

/// Turns Services, their endpoints and the Node into the desired state. A pure function.
///
/// For each Service labelled `service.kubernetes.io/service-proxy-name: canary-agent`, each of its
/// ClusterIPs (both families) and externalIPs, for each of its ports, is one virtual service named
/// `namespace/name:port-name` (the port number when unnamed) and knows its origin (the Service and port). Its stable endpoints are the Service's
/// own, its canary endpoints those of the Service named by `canary-agent.io/canary-service`, with
/// `canary-agent.io/canary-weight` percent of new connections. Target ports are resolved per endpoint
/// group (EndpointSlice or subset) through the group's ports, matched by the Service port's name and
/// protocol; a canary Service's port is the one with the same name and protocol, or its only port of
/// that protocol.
///
/// A Service with bad input (see ``InputProblem``) keeps the virtual services it had in `previous`
/// (found by their origin), or gets none if it is new; every other Service is
/// translated as usual.
public enum Translator {
    public static func translate(_ input: TranslationInput, previous: DesiredState = DesiredState()) -> Translation {
        var problems: [InputProblem] = []
        let servicesByKey = Dictionary(input.services.map { ($0.key, $0) }, uniquingKeysWith: { _, last in last })
        let endpointIndex = EndpointIndex(input.endpoints)
        let previousByObject = Dictionary(grouping: previous.services.values, by: \.origin.object)
        let routes = RouteDecisions(routes: input.routes, services: servicesByKey, grants: input.grants)
        for verdict in routes.verdicts.values {
            if let problem = verdict.problem { problems.append(problem) }
        }

        // The node's scheduler; a bad label leaves each Service on the scheduler it has now.
        var nodeScheduler: Scheduler?
        var nodeLabelInvalid = false
        if let node = input.node, let value = node.metadata.labels?[CanaryScheme.nodeSchedulerLabel] {
            if let scheduler = parseScheduler(value) {
                nodeScheduler = scheduler
            } else {
                nodeLabelInvalid = true
                problems.append(
                    InputProblem(
                        object: InputObject(kind: .node, name: node.metadata.name ?? ""), field: CanaryScheme.labelField(CanaryScheme.nodeSchedulerLabel),
                        message: "unknown scheduler \(quoted(value)); use \(Scheduler.supportedList); Services keep their current scheduler",
                        reason: "UnknownScheduler"))
            }
        }

        let stableServices = input.services
            .filter { $0.metadata.labels?[CanaryScheme.serviceProxyNameLabel] == CanaryScheme.serviceProxyName }
            .sorted { $0.key < $1.key }

        var output: [DesiredService] = []
        var owners: [ServiceKey: InputObject] = [:]
        for service in stableServices {
            let objectName = service.key.reference
            let fallbackScheduler: Scheduler =
                nodeScheduler
                ?? (nodeLabelInvalid ? previousByObject[objectName]?.first?.scheduler : nil)
                ?? input.defaultScheduler
            var result = translateService(
                service, services: servicesByKey, endpoints: endpointIndex, fallbackScheduler: fallbackScheduler,
                acceptExternalIPs: input.acceptExternalIPs,
                routes: routes.governing(service.key, portCount: service.spec?.ports?.count ?? 0))
            if case .success(let desired) = result,
                let taken = desired.first(where: { owners[$0.key] != nil && owners[$0.key] != objectName })
            {
                var field = "spec.clusterIPs"
                if case .inet(_, let socket) = taken.key,
                    (service.spec?.externalIPs ?? []).compactMap(IPAddress.init).contains(socket.address)
                {
                    field = "spec.externalIPs"
                }
                result = .failure(
                    problem(
                        service, field: field,
                        "\(taken.key) is already a virtual service of \(owners[taken.key].map(\.qualifiedName) ?? "another Service")",
                        reason: "AddressConflict"))
            }
            switch result {
            case .success(let desired):
                for item in desired {
                    owners[item.key] = objectName
                    output.append(item)
                }
            case .failure(let failure):
                // A route's problem is reported once, on the route.
                if !failure.object.isRoute { problems.append(failure) }
                for item in previousByObject[objectName] ?? [] where owners[item.key] == nil {
                    owners[item.key] = objectName
                    output.append(item)
                }
            }
        }
        return Translation(desiredState: DesiredState(services: output), problems: problems.sorted(), routes: routes)
    }

    /// A value from the cluster as a message quotes it: at most 64 Unicode scalars (then "…"), quotes,
    /// backslashes and control characters escaped, so that a problem stays one short line in the log,
    /// the Event and `status`, whatever an annotation holds.
    static func quoted(_ text: String) -> String {
        var result = "\""
        for (index, scalar) in text.unicodeScalars.enumerated() {
            if index == 64 {
                result += "…"
                break
            }
            if scalar.properties.generalCategory == .control || scalar == "\"" || scalar == "\\" {
                result += scalar.escaped(asASCII: false)
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    static func parseScheduler(_ text: String) -> Scheduler? {
        let scheduler = Scheduler(rawValue: text.trimmingSpaces)
        return Scheduler.supportedByAgent.contains(scheduler) ? scheduler : nil
    }

    static func parseProtocol(_ text: String?) -> IPProtocol? {
        switch (text ?? "TCP").uppercased() {
        case "TCP": .tcp
        case "UDP": .udp
        case "SCTP": .sctp
        default: nil
        }
    }

    private static func problem(_ service: Service, field: String, _ message: String, reason: String) -> InputProblem {
        InputProblem(object: service.key.reference, field: field, message: message, reason: reason)
    }

    private struct ResolvedPort {
        var index: Int
        var name: String
        var port: UInt16
        var proto: IPProtocol
    }

    /// - Parameter routes: for each port index a route governs, that route's verdict: its backends
    ///   replace the annotation scheme's stable and canary on that port; a route that cannot be
    ///   programmed makes the whole Service keep its last good state.
    static func translateService(
        _ service: Service, services: [ObjectKey: Service], endpoints: EndpointIndex, fallbackScheduler: Scheduler,
        acceptExternalIPs: Bool = false, routes: [Int: RouteVerdict] = [:]
    ) -> Result<[DesiredService], InputProblem> {
        for verdict in routes.values.sorted(by: { $0.route < $1.route }) where !verdict.programmable {
            return .failure(
                verdict.problem
                    ?? InputProblem(object: verdict.route.object, field: "spec", message: "cannot be programmed", reason: "UnsupportedValue"))
        }
        let annotations = service.metadata.annotations ?? [:]
        let spec = service.spec ?? Service.Spec(type: nil)

        // Virtual addresses: each ClusterIP (both families), then each externalIP when they are
        // accepted at all (`--external-ips`: anyone who can edit a Service could otherwise bind any
        // address on every node). None may be loopback, link-local, multicast or unspecified.
        let clusterIPTexts = (spec.clusterIPs?.isEmpty == false ? spec.clusterIPs : spec.clusterIP.map { [$0] }) ?? []
        let usableClusterIPs = clusterIPTexts.filter { !$0.isEmpty && $0 != "None" }
        guard !usableClusterIPs.isEmpty else {
            let what = spec.type == "ExternalName" ? "an ExternalName Service" : clusterIPTexts.contains("None") ? "a headless Service" : "no ClusterIP is set"
            return .failure(
                problem(service, field: "spec.clusterIP", "no ClusterIP (\(what)); canary-agent needs a virtual address", reason: "NoClusterIP"))
        }
        var virtualAddresses: [IPAddress] = []
        let candidates =
            usableClusterIPs.enumerated().map { ("spec.clusterIPs[\($0.offset)]", $0.element) }
            + (acceptExternalIPs ? spec.externalIPs ?? [] : []).enumerated().map { ("spec.externalIPs[\($0.offset)]", $0.element) }
        for (field, text) in candidates {
            guard let address = IPAddress(text) else {
                return .failure(problem(service, field: field, "\(quoted(text)) is not an IP address", reason: "InvalidAddress"))
            }
            if let reason = address.unusableAsVirtualAddress {
                return .failure(problem(service, field: field, "\(text) is \(reason): not a virtual address", reason: "UnusableAddress"))
            }
            if !virtualAddresses.contains(address) { virtualAddresses.append(address) }
        }

        var ports: [ResolvedPort] = []
        for (index, port) in (spec.ports ?? []).enumerated() {
            guard let proto = parseProtocol(port.protocol) else {
                return .failure(
                    problem(service, field: "spec.ports[\(index)].protocol", "unsupported protocol \(quoted(port.protocol ?? "")); IPVS balances TCP, UDP and SCTP", reason: "UnsupportedProtocol"))
            }
            guard let number = UInt16(exactly: port.port), number > 0 else {
                return .failure(
                    problem(service, field: "spec.ports[\(index)].port", "\(port.port) is not a port number", reason: "InvalidPort"))
            }
            ports.append(ResolvedPort(index: index, name: port.name ?? "", port: number, proto: proto))
        }

        // Scheduler: the annotation, else the node's label, else the flag.
        var scheduler = fallbackScheduler
        if let value = annotations[CanaryScheme.schedulerAnnotation] {
            guard let parsed = parseScheduler(value) else {
                return .failure(
                    problem(
                        service, field: CanaryScheme.annotationField(CanaryScheme.schedulerAnnotation),
                        "unknown scheduler \(quoted(value)); use \(Scheduler.supportedList)", reason: "UnknownScheduler"))
            }
            scheduler = parsed
        }

        // Persistence: sessionAffinity ClientIP, overridden by the annotation.
        var persistence: Persistence?
        if spec.sessionAffinity == "ClientIP" {
            let timeout = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds
                .flatMap { UInt32(exactly: $0) }.flatMap { $0 > 0 ? $0 : nil }
            persistence = Persistence(timeout: timeout ?? CanaryScheme.defaultAffinityTimeout)
        }
        if let value = annotations[CanaryScheme.persistenceTimeoutAnnotation] {
            guard let seconds = UInt32(value.trimmingSpaces), seconds <= CanaryScheme.maximumPersistenceTimeout else {
                return .failure(
                    problem(
                        service, field: CanaryScheme.annotationField(CanaryScheme.persistenceTimeoutAnnotation),
                        "\(quoted(value)) is not a whole number of seconds from 0 to \(CanaryScheme.maximumPersistenceTimeout)",
                        reason: "InvalidPersistenceTimeout"))
            }
            persistence = seconds == 0 ? nil : Persistence(timeout: seconds)
        }

        // The canary: its Service and its share.
        var canaryService: Service?
        var canaryShare = CanaryShare.zero
        if let name = annotations[CanaryScheme.canaryServiceAnnotation]?.trimmingSpaces, !name.isEmpty {
            let field = CanaryScheme.annotationField(CanaryScheme.canaryServiceAnnotation)
            // A Service name is a DNS subdomain: anything else is no Service, and is not echoed whole.
            guard name.utf8.count <= 253, name.utf8.allSatisfy({ (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2D || $0 == 0x2E })
            else {
                return .failure(problem(service, field: field, "\(quoted(name)) is not a Service name", reason: "InvalidCanaryService"))
            }
            let canaryKey = ObjectKey(namespace: service.metadata.namespace, name: name)
            guard canaryKey != service.key else {
                return .failure(problem(service, field: field, "a Service cannot be its own canary", reason: "InvalidCanaryService"))
            }
            guard let found = services[canaryKey] else {
                return .failure(
                    problem(service, field: field, "canary Service \(canaryKey) does not exist", reason: "CanaryServiceNotFound"))
            }
            canaryService = found
            let weightField = CanaryScheme.annotationField(CanaryScheme.canaryWeightAnnotation)
            guard let weightText = annotations[CanaryScheme.canaryWeightAnnotation] else {
                return .failure(
                    problem(service, field: weightField, "missing: a canary Service needs a weight, in percent", reason: "MissingCanaryWeight"))
            }
            guard let share = CanaryShare(percentText: weightText.trimmingSpaces) else {
                return .failure(
                    problem(
                        service, field: weightField,
                        "\(quoted(weightText)) is not a percentage from 0 to 100 with at most two decimals",
                        reason: "InvalidCanaryWeight"))
            }
            canaryShare = share
        }

        var desired: [DesiredService] = []
        for port in ports {
            let displayName = port.name.isEmpty ? String(port.port) : port.name
            if let verdict = routes[port.index], let backends = verdict.backends {
                let origin = ServiceOrigin(object: service.key.reference, port: displayName, route: verdict.route.object)
                let groups = routeGroups(backends, services: services, endpoints: endpoints, proto: port.proto)
                for address in virtualAddresses {
                    desired.append(
                        DesiredService(
                            origin: origin, key: .inet(port.proto, SocketAddress(address: address, port: port.port)),
                            scheduler: scheduler, persistence: persistence, forwarding: .masquerade,
                            backends: groups.map { group in
                                var group = group
                                group.endpoints = group.endpoints.filter { $0.address.address.family == address.family }
                                return group
                            },
                            unweightedFallback: .refuseNewConnections))
                }
                continue
            }
            let origin = ServiceOrigin(object: service.key.reference, port: displayName)
            let stableByFamily = endpoints.resolve(service: service.key, portName: port.name, proto: port.proto)

            var canaryByFamily: [IPAddress.Family: [SocketAddress: Endpoint.State]] = [:]
            if let canaryService {
                let candidates = (canaryService.spec?.ports ?? []).filter { parseProtocol($0.protocol) == port.proto }
                guard let canaryPort = candidates.first(where: { ($0.name ?? "") == port.name }) ?? (candidates.count == 1 ? candidates.first : nil)
                else {
                    return .failure(
                        problem(
                            service, field: CanaryScheme.annotationField(CanaryScheme.canaryServiceAnnotation),
                            "canary Service \(canaryService.key) has no \(port.proto) port named \(quoted(port.name)) (nor a single \(port.proto) port) to match spec.ports[\(port.index)]",
                            reason: "CanaryPortNotFound"))
                }
                canaryByFamily = endpoints.resolve(service: canaryService.key, portName: canaryPort.name ?? "", proto: port.proto)
            }

            // A pod in both Services would count for both sides.
            for family in Set(stableByFamily.keys).intersection(canaryByFamily.keys) {
                let stableAddresses = Set(stableByFamily[family, default: [:]].keys.map(\.address))
                if let shared = canaryByFamily[family, default: [:]].keys.map(\.address).sorted().first(where: stableAddresses.contains) {
                    return .failure(
                        problem(
                            service, field: CanaryScheme.annotationField(CanaryScheme.canaryServiceAnnotation),
                            "endpoint \(shared) is in both \(service.key) and its canary \(canaryService?.key.description ?? ""); their selectors must not overlap",
                            reason: "EndpointInStableAndCanary"))
                }
            }

            for address in virtualAddresses {
                func endpointList(_ byFamily: [IPAddress.Family: [SocketAddress: Endpoint.State]]) -> [Endpoint] {
                    (byFamily[address.family] ?? [:]).map { Endpoint($0.key, state: $0.value) }.sorted()
                }
                desired.append(
                    DesiredService(
                        origin: origin, key: .inet(port.proto, SocketAddress(address: address, port: port.port)),
                        scheduler: scheduler, persistence: persistence, forwarding: .masquerade,
                        stable: endpointList(stableByFamily), canary: endpointList(canaryByFamily),
                        canaryShare: canaryShare))
            }
        }
        return .success(desired)
    }
}

extension Translator {
    /// A route's backends as groups: each backend Service's port (by number) resolved to its
    /// endpoints' target ports per slice, as for the annotation scheme.
    static func routeGroups(
        _ backends: [RouteVerdict.Backend], services: [ObjectKey: Service], endpoints: EndpointIndex, proto: IPProtocol
    ) -> [BackendGroup] {
        backends.map { backend in
            let port = services[backend.service]?.spec?.ports?.first {
                $0.port == backend.port && parseProtocol($0.protocol) == proto
            }
            var members: [Endpoint] = []
            if let port {
                let byFamily = endpoints.resolve(service: backend.service, portName: port.name ?? "", proto: proto)
                for family in byFamily.keys.sorted(by: { "\($0)" < "\($1)" }) {
                    members += (byFamily[family] ?? [:]).map { Endpoint($0.key, state: $0.value) }.sorted()
                }
            }
            return BackendGroup(
                name: backend.name, origin: .service(namespace: backend.service.namespace, name: backend.service.name),
                weight: backend.weight, endpoints: members)
        }
    }
}

extension InputObject {
    /// True for a Gateway API route.
    var isRoute: Bool { [.tcpRoute, .udpRoute, .httpRoute, .grpcRoute].contains(kind) }
}

/// Endpoints by Service: groups of addresses sharing one set of resolved ports (an EndpointSlice, or a
/// subset of core/v1 Endpoints).
struct EndpointIndex {
    struct Group {
        var ports: [EndpointPort]
        var endpoints: [(address: IPAddress, state: Endpoint.State)]
    }

    var groups: [ObjectKey: [Group]] = [:]

    init(_ objects: EndpointObjects) {
        switch objects {
        case .slices(let slices):
            for slice in slices {
                guard let serviceName = slice.metadata.labels?[EndpointSlice.serviceNameLabel],
                    slice.addressType == "IPv4" || slice.addressType == "IPv6"
                else { continue }
                var group = Group(ports: slice.ports ?? [], endpoints: [])
                for endpoint in slice.endpoints ?? [] {
                    let ready = endpoint.conditions?.ready ?? true
                    let serving = endpoint.conditions?.serving ?? ready
                    let terminating = endpoint.conditions?.terminating ?? false
                    let state: Endpoint.State
                    if ready {
                        state = .live
                    } else if serving && terminating {
                        state = .draining
                    } else {
                        continue  // not serving: gone
                    }
                    for text in endpoint.addresses {
                        if let address = IPAddress(text) { group.endpoints.append((address, state)) }
                    }
                }
                groups[ObjectKey(namespace: slice.metadata.namespace, name: serviceName), default: []].append(group)
            }
        case .endpoints(let list):
            for endpoints in list {
                let key = endpoints.key
                for subset in endpoints.subsets ?? [] {
                    // core/v1 Endpoints know ready and not ready only: not ready is gone.
                    let addresses = (subset.addresses ?? []).compactMap { IPAddress($0.ip) }
                    groups[key, default: []].append(
                        Group(ports: subset.ports ?? [], endpoints: addresses.map { ($0, .live) }))
                }
            }
        }
    }

    /// The endpoints of a Service for one of its ports (by the port's name and protocol), by family.
    /// An address listed twice counts once, live if any listing is live.
    func resolve(service: ObjectKey, portName: String, proto: IPProtocol) -> [IPAddress.Family: [SocketAddress: Endpoint.State]] {
        var result: [IPAddress.Family: [SocketAddress: Endpoint.State]] = [:]
        for group in groups[service] ?? [] {
            guard
                let port = group.ports.first(where: {
                    ($0.name ?? "") == portName && Translator.parseProtocol($0.protocol) == proto
                }),
                let number = port.port.flatMap({ UInt16(exactly: $0) }), number > 0
            else { continue }
            for (address, state) in group.endpoints {
                let socket = SocketAddress(address: address, port: number)
                if result[address.family]?[socket] != .live {
                    result[address.family, default: [:]][socket] = state
                }
            }
        }
        return result
    }
}

extension String {
    var trimmingSpaces: String {
        var text = Substring(self)
        while text.first?.isWhitespace == true { text.removeFirst() }
        while text.last?.isWhitespace == true { text.removeLast() }
        return String(text)
    }
}

extension ObjectKey {
    /// The Service with this key, as the core names objects.
    var reference: InputObject { .service(namespace: namespace, name: name) }

    /// The key of a namespaced object the core names.
    init(_ reference: InputObject) {
        self.init(namespace: reference.namespace, name: reference.name)
    }
}
