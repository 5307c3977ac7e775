import CanaryCore
import KubernetesClient

/// The Gateway API route kinds the agent honours when their parent is a Service (GEP-1294, the
/// mesh profile "GAMMA"), with what L4 can do of each. Field meanings, defaults and limits follow
/// the CRDs of kubernetes-sigs/gateway-api (`config/crd/standard` and `experimental`).
public enum RouteKind: String, Sendable, Hashable, CaseIterable, Comparable {
    case tcp = "TCPRoute"
    case udp = "UDPRoute"
    case http = "HTTPRoute"
    case grpc = "GRPCRoute"

    public static let group = "gateway.networking.k8s.io"

    /// The collection's name.
    public var plural: String { rawValue.lowercased() + "s" }

    /// The versions the agent reads, preferred first: TCPRoute and UDPRoute are v1 from Gateway
    /// API v1.6 (standard channel) and v1alpha2 before (still served by the experimental channel).
    public var versions: [String] {
        switch self {
        case .tcp, .udp: ["v1", "v1alpha2"]
        case .http, .grpc: ["v1"]
        }
    }

    /// GEP-1294's precedence on one Service port, highest first: GRPCRoute > HTTPRoute >
    /// TLSRoute > TCPRoute. (UDPRoute governs UDP ports, which no other kind does.)
    public var precedence: Int {
        switch self {
        case .grpc: 4
        case .http: 3
        case .tcp: 1
        case .udp: 0
        }
    }

    /// The protocol of the ports it governs.
    public var governsUDP: Bool { self == .udp }

    /// The kind of input object the core names.
    public var inputKind: InputObject.Kind {
        switch self {
        case .tcp: .tcpRoute
        case .udp: .udpRoute
        case .http: .httpRoute
        case .grpc: .grpcRoute
        }
    }

    public func resource(version: String) -> ResourceDescriptor {
        ResourceDescriptor(groupVersionPath: "/apis/\(Self.group)/\(version)", plural: plural, namespaced: true)
    }

    public static func < (l: RouteKind, r: RouteKind) -> Bool { l.rawValue < r.rawValue }
}

/// Any JSON value, kept as it came (other controllers' status entries are written back untouched).
public enum JSONValue: Codable, Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// The value of `key` in an object.
    public subscript(key: String) -> JSONValue? {
        if case .object(let fields) = self { return fields[key] }
        return nil
    }

    public var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }
}

/// A field whose content the agent does not read, only whether it is there.
public struct PresentField: Decodable, Sendable, Hashable {
    public init(from decoder: any Decoder) throws {}
    public init() {}
}

/// `parentRefs[]`: what the route attaches to. For the mesh profile, a Service: group "" and kind
/// `Service` (the defaults are Gateway's: group gateway.networking.k8s.io, kind Gateway).
public struct ParentReference: Codable, Sendable, Hashable {
    public var group: String?
    public var kind: String?
    public var namespace: String?
    public var name: String
    public var sectionName: String?
    public var port: Int?

    public init(group: String? = "", kind: String? = "Service", namespace: String? = nil, name: String, port: Int? = nil) {
        self.group = group
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.port = port
    }

    /// True for a Service parent (GAMMA).
    public var isService: Bool { isCoreGroup(group ?? RouteKind.group) && (kind ?? "Gateway") == "Service" }
}

/// The core API group: "" as Gateway API writes it, or "core" as Flagger's documentation does.
func isCoreGroup(_ group: String) -> Bool { group.isEmpty || group == "core" }

/// `rules[].backendRefs[]`: a backend and its weight (default 1, 0 ... 1,000,000).
public struct RouteBackendRef: Decodable, Sendable, Hashable {
    public var group: String?
    public var kind: String?
    public var name: String
    public var namespace: String?
    public var port: Int?
    public var weight: Int?
    /// HTTPRoute and GRPCRoute: per-backend filters (L7: not honoured).
    public var filters: [PresentField]?

    public init(name: String, namespace: String? = nil, port: Int?, weight: Int? = nil) {
        self.name = name
        self.namespace = namespace
        self.port = port
        self.weight = weight
    }

    /// True for a core Service (the default group and kind).
    public var isService: Bool { isCoreGroup(group ?? "") && (kind ?? "Service") == "Service" }
}

/// `rules[]` of any of the kinds: its backends, and the L7 fields whose presence the agent checks.
public struct RouteRule: Decodable, Sendable, Hashable {
    public struct Match: Decodable, Sendable, Hashable {
        public struct PathMatch: Decodable, Sendable, Hashable {
            public var type: String?
            public var value: String?
        }
        public var path: PathMatch?
        public var headers: [PresentField]?
        public var queryParams: [PresentField]?
        public var method: JSONValue?
    }

    public var backendRefs: [RouteBackendRef]?
    public var matches: [Match]?
    public var filters: [PresentField]?
    public var timeouts: PresentField?
    public var retry: PresentField?
    public var sessionPersistence: PresentField?

    public init(backendRefs: [RouteBackendRef]) {
        self.backendRefs = backendRefs
    }
}

/// A TCPRoute, UDPRoute, HTTPRoute or GRPCRoute, decoded down to what the agent reads.
public struct Route: Decodable, Sendable, Hashable, KubernetesObject {
    public struct Spec: Decodable, Sendable, Hashable {
        public var parentRefs: [ParentReference]?
        public var hostnames: [String]?
        public var rules: [RouteRule]?
    }

    public struct Status: Decodable, Sendable, Hashable {
        /// Every parent entry, of every controller, as the server has them.
        public var parents: [JSONValue]?
    }

    public var apiVersion: String?
    public var kind: String?
    public var metadata: ObjectMeta
    public var spec: Spec?
    public var status: Status?

    public init(kind: RouteKind, metadata: ObjectMeta, parentRefs: [ParentReference], rules: [RouteRule]) {
        self.kind = kind.rawValue
        self.metadata = metadata
        spec = Spec(parentRefs: parentRefs, hostnames: nil, rules: rules)
    }
}

/// A ReferenceGrant (v1, or v1beta1): lets routes of the `from` namespaces and kinds refer to the
/// `to` objects of its own namespace.
public struct ReferenceGrant: Decodable, Sendable, Hashable, KubernetesObject {
    public struct From: Decodable, Sendable, Hashable {
        public var group: String
        public var kind: String
        public var namespace: String
    }
    public struct To: Decodable, Sendable, Hashable {
        public var group: String
        public var kind: String
        public var name: String?
    }
    public struct Spec: Decodable, Sendable, Hashable {
        public var from: [From]
        public var to: [To]
    }

    public var metadata: ObjectMeta
    public var spec: Spec?

    /// True when a route of `kind` in `namespace` may refer to the Service `name` of this grant's namespace.
    public func allows(routeKind: RouteKind, from namespace: String, service name: String) -> Bool {
        guard let spec else { return false }
        return spec.from.contains { $0.group == RouteKind.group && $0.kind == routeKind.rawValue && $0.namespace == namespace }
            && spec.to.contains { $0.group.isEmpty && $0.kind == "Service" && ($0.name == nil || $0.name == name) }
    }
}
