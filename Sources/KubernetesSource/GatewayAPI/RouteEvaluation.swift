import CanaryCore
import IPVS
import KubernetesClient

/// A route's identity: its kind, namespace and name.
public struct RouteRef: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var kind: RouteKind
    public var namespace: String
    public var name: String

    public init(kind: RouteKind, namespace: String, name: String) {
        self.kind = kind
        self.namespace = namespace
        self.name = name
    }

    /// The route as the core names input objects.
    public var object: InputObject { InputObject(kind: kind.inputKind, namespace: namespace, name: name) }
    public var description: String { "\(kind.rawValue) \(namespace)/\(name)" }
    public static func < (l: RouteRef, r: RouteRef) -> Bool { (l.kind, l.namespace, l.name) < (r.kind, r.namespace, r.name) }
}

/// What the agent makes of one route: for each Service parent, whether it is accepted and which
/// ports it governs; the backends of its one rule when they resolve; the first problem otherwise.
/// A pure function of the route, the Services and the ReferenceGrants (`RouteEvaluation.evaluate`).
public struct RouteVerdict: Sendable, Hashable {
    /// A condition as Gateway API writes it: `Accepted` or `ResolvedRefs`, with its reason.
    public struct Condition: Sendable, Hashable {
        public var status: Bool
        public var reason: String
        public var message: String
    }

    /// One `spec.parentRefs[]` entry that names a Service.
    public struct Parent: Sendable, Hashable {
        public var index: Int
        public var reference: ParentReference
        /// The parent Service, when it exists in the route's namespace.
        public var service: ObjectKey?
        /// The indices of the parent's `spec.ports` this route governs (empty when the parent is not
        /// usable; set even when the rule cannot be programmed: the route still governs them).
        public var ports: [Int]
        public var accepted: Condition
        public var resolvedRefs: Condition
    }

    /// One backendRef that resolved: the backend Service, the port number on it, the weight.
    public struct Backend: Sendable, Hashable {
        /// The group's name: the backend Service's name (`namespace/name` from another namespace).
        public var name: String
        public var service: ObjectKey
        public var port: Int
        public var weight: Int
    }

    public var route: RouteRef
    public var generation: Int64?
    /// When it was created, for precedence (the oldest wins): as the server wrote it (RFC 3339 sorts as text).
    public var createdAt: String
    public var parents: [Parent]
    /// The rule's backends, in order; nil when the rule cannot be programmed (see `problem`).
    public var backends: [Backend]?
    /// The first thing wrong with the route itself (its rule or a backendRef), naming the field.
    public var problem: InputProblem?

    /// The parents the route may govern (accepted, with its backends resolved).
    public var programmable: Bool { backends != nil }
}

/// Evaluates routes against the Services and ReferenceGrants (see `RouteVerdict`).
public enum RouteEvaluation {
    /// The label a parent Service must carry: the only way to keep kube-proxy off its ClusterIP.
    static let proxyNameLabel = CanaryScheme.serviceProxyNameLabel

    public static func evaluate(
        _ route: Route, kind: RouteKind, services: [ObjectKey: Service], grants: [ReferenceGrant]
    ) -> RouteVerdict {
        let namespace = route.metadata.namespace ?? ""
        let ref = RouteRef(kind: kind, namespace: namespace, name: route.metadata.name ?? "")
        var verdict = RouteVerdict(
            route: ref, generation: route.metadata.generation, createdAt: route.metadata.creationTimestamp ?? "",
            parents: [], backends: nil, problem: nil)
        func problem(_ field: String, _ message: String, _ reason: String) -> InputProblem {
            InputProblem(object: ref.object, field: field, message: message, reason: reason)
        }

        // The rule: what L4 can honour is one rule of weighted Service backends.
        var ruleProblem: (problem: InputProblem, refs: Bool)? = nil
        let rules = route.spec?.rules ?? []
        if rules.count != 1 {
            ruleProblem = (problem("spec.rules", "\(rules.count) rules: canary-agent honours one rule of weighted backends at L4", "UnsupportedValue"), false)
        } else {
            let rule = rules[0]
            if let unsupported = l7Field(rule, kind: kind) {
                ruleProblem = (problem("spec.rules[0].\(unsupported)", "an L7 feature canary-agent cannot honour at L4: not programmed", "UnsupportedValue"), false)
            }
            var backends: [RouteVerdict.Backend] = []
            for (index, backendRef) in (rule.backendRefs ?? []).enumerated() where ruleProblem == nil {
                let field = "spec.rules[0].backendRefs[\(index)]"
                if backendRef.filters?.isEmpty == false {
                    ruleProblem = (problem("\(field).filters", "an L7 feature canary-agent cannot honour at L4: not programmed", "UnsupportedValue"), false)
                    break
                }
                guard backendRef.isService else {
                    ruleProblem = (problem("\(field).kind", "\(backendRef.kind ?? "") of group \(Translator.quoted(backendRef.group ?? "")) is not a Service", "InvalidKind"), true)
                    break
                }
                let weight = backendRef.weight ?? 1
                guard BackendGroup.weightRange.contains(weight) else {
                    ruleProblem = (problem("\(field).weight", "\(weight) is not a weight (0-1000000)", "UnsupportedValue"), false)
                    break
                }
                guard let port = backendRef.port, (1...65_535).contains(port) else {
                    ruleProblem = (problem("\(field).port", "a Service backend needs its port", "UnsupportedValue"), false)
                    break
                }
                let backendNamespace = backendRef.namespace ?? namespace
                if backendNamespace != namespace
                    && !grants.contains(where: {
                        $0.metadata.namespace == backendNamespace && $0.allows(routeKind: kind, from: namespace, service: backendRef.name)
                    })
                {
                    ruleProblem = (problem("\(field).namespace", "no ReferenceGrant in \(backendNamespace) lets \(kind.rawValue)s of \(namespace) refer to Service \(backendRef.name)", "RefNotPermitted"), true)
                    break
                }
                let key = ObjectKey(namespace: backendNamespace, name: backendRef.name)
                guard let backendService = services[key] else {
                    ruleProblem = (problem("\(field).name", "backend Service \(key) does not exist", "BackendNotFound"), true)
                    break
                }
                guard (backendService.spec?.ports ?? []).contains(where: { $0.port == port }) else {
                    ruleProblem = (problem("\(field).port", "backend Service \(key) has no port \(port)", "BackendNotFound"), true)
                    break
                }
                backends.append(
                    RouteVerdict.Backend(
                        name: backendNamespace == namespace ? backendRef.name : "\(backendNamespace)/\(backendRef.name)",
                        service: key, port: port, weight: weight))
            }
            if ruleProblem == nil { verdict.backends = backends }
        }
        verdict.problem = ruleProblem?.problem

        for (index, reference) in (route.spec?.parentRefs ?? []).enumerated() where reference.isService {
            var parent = RouteVerdict.Parent(
                index: index, reference: reference, service: nil, ports: [],
                accepted: .init(status: true, reason: "Accepted", message: "programmed by canary-agent on every node"),
                resolvedRefs: .init(status: true, reason: "ResolvedRefs", message: "every backendRef resolves"))
            if let (failure, refs) = ruleProblem {
                let condition = RouteVerdict.Condition(status: false, reason: failure.reason, message: "\(failure.field): \(failure.message)")
                if refs { parent.resolvedRefs = condition } else { parent.accepted = condition }
            }
            func reject(_ reason: String, _ message: String) {
                parent.accepted = .init(status: false, reason: reason, message: message)
                parent.ports = []
            }
            let parentNamespace = reference.namespace ?? namespace
            let key = ObjectKey(namespace: parentNamespace, name: reference.name)
            if parentNamespace != namespace {
                reject("UnsupportedValue", "spec.parentRefs[\(index)].namespace: a consumer route (another namespace's Service) is not supported")
            } else if let service = services[key] {
                parent.service = key
                let ports = (service.spec?.ports ?? []).enumerated().filter { _, port in
                    let proto = Translator.parseProtocol(port.protocol)
                    return (kind.governsUDP ? proto == .udp : proto == .tcp)
                        && (reference.port == nil || reference.port == port.port)
                        && (reference.sectionName == nil || reference.sectionName == port.name)
                }.map(\.offset)
                let clusterIPs = (service.spec?.clusterIPs ?? service.spec?.clusterIP.map { [$0] } ?? []).filter { !$0.isEmpty && $0 != "None" }
                if service.metadata.labels?[proxyNameLabel] != CanaryScheme.serviceProxyName {
                    reject("NoMatchingParent", "Service \(key) lacks the label \(proxyNameLabel)=\(CanaryScheme.serviceProxyName): kube-proxy keeps its ClusterIP")
                } else if clusterIPs.isEmpty {
                    reject("NoMatchingParent", "Service \(key) has no ClusterIP")
                } else if ports.isEmpty {
                    reject("NoMatchingParent", "Service \(key) has no \(kind.governsUDP ? "UDP" : "TCP") port\(reference.port.map { " \($0)" } ?? "")\(reference.sectionName.map { " named \($0)" } ?? "")")
                } else {
                    // The route governs these ports even when its rule cannot be programmed: they
                    // keep their last good state rather than fall back to another split.
                    parent.ports = ports
                }
            } else {
                reject("NoMatchingParent", "Service \(key) does not exist")
            }
            verdict.parents.append(parent)
        }
        return verdict
    }

    /// The first field of a rule that only an L7 proxy could honour, as a path under the rule.
    static func l7Field(_ rule: RouteRule, kind: RouteKind) -> String? {
        if rule.filters?.isEmpty == false { return "filters" }
        if rule.timeouts != nil { return "timeouts" }
        if rule.retry != nil { return "retry" }
        if rule.sessionPersistence != nil { return "sessionPersistence" }
        for (index, match) in (rule.matches ?? []).enumerated() {
            switch kind {
            case .grpc: return "matches[\(index)]"
            case .http:
                if match.headers?.isEmpty == false { return "matches[\(index)].headers" }
                if match.queryParams?.isEmpty == false { return "matches[\(index)].queryParams" }
                if match.method != nil { return "matches[\(index)].method" }
                if let path = match.path, (path.type ?? "PathPrefix") != "PathPrefix" || (path.value ?? "/") != "/" {
                    return "matches[\(index)].path"
                }
            case .tcp, .udp: break
            }
        }
        return nil
    }

    /// For each parent Service port, the route that governs it: the highest kind by GEP-1294's
    /// order, then the oldest, then by namespace/name. Routes that cannot be programmed still
    /// claim the ports they would govern (their parent keeps its last good state).
    public static func winners(_ verdicts: [RouteVerdict]) -> [PortKey: RouteRef] {
        var winners: [PortKey: RouteVerdict] = [:]
        for verdict in verdicts {
            for parent in verdict.parents {
                guard let service = parent.service else { continue }
                for port in parent.ports {
                    let key = PortKey(service: service, portIndex: port)
                    if let current = winners[key], !beats(verdict, current) { continue }
                    winners[key] = verdict
                }
            }
        }
        return winners.mapValues(\.route)
    }

    static func beats(_ l: RouteVerdict, _ r: RouteVerdict) -> Bool {
        if l.route.kind.precedence != r.route.kind.precedence { return l.route.kind.precedence > r.route.kind.precedence }
        if l.createdAt != r.createdAt { return l.createdAt < r.createdAt }
        return (l.route.namespace, l.route.name) < (r.route.namespace, r.route.name)
    }

    /// One port of a Service.
    public struct PortKey: Hashable, Sendable {
        public var service: ObjectKey
        /// Index into the Service's `spec.ports`.
        public var portIndex: Int
    }
}
