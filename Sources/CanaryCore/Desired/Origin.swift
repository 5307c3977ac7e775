/// The input object something comes from, as a value: its kind, namespace and name. Status,
/// Events and metrics find a desired service's problems by comparing these, never by parsing a name.
public struct InputObject: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable, Codable, Comparable {
        /// A Kubernetes Service (core/v1).
        case service = "Service"
        /// A Kubernetes Node: the agent's own.
        case node = "Node"
        /// The static configuration file as a whole (its name is the path).
        case file = "File"
        /// One entry of the static file's `services:` list (its name is the entry's name).
        case staticService = "StaticService"
        /// Gateway API routes (gateway.networking.k8s.io) whose parent is a Service (GAMMA).
        case tcpRoute = "TCPRoute"
        case udpRoute = "UDPRoute"
        case httpRoute = "HTTPRoute"
        case grpcRoute = "GRPCRoute"

        public static func < (l: Kind, r: Kind) -> Bool { l.rawValue < r.rawValue }
    }

    public var kind: Kind
    /// The Kubernetes namespace; nil for cluster-scoped objects and the static file's entries.
    public var namespace: String?
    public var name: String

    public init(kind: Kind, namespace: String? = nil, name: String) {
        self.kind = kind
        self.namespace = namespace
        self.name = name
    }

    /// A Kubernetes Service.
    public static func service(namespace: String, name: String) -> InputObject {
        InputObject(kind: .service, namespace: namespace, name: name)
    }

    /// `namespace/name`, or the name alone.
    public var qualifiedName: String { namespace.map { "\($0)/\(name)" } ?? name }

    /// `Service default/web`, `Node node-1`, `/etc/canary-agent/config.yaml`, `service web`.
    public var description: String {
        switch kind {
        case .file: name
        case .staticService: "service \(name)"
        case .service, .node, .tcpRoute, .udpRoute, .httpRoute, .grpcRoute: "\(kind.rawValue) \(qualifiedName)"
        }
    }

    public static func < (l: InputObject, r: InputObject) -> Bool {
        (l.kind, l.namespace ?? "", l.name) < (r.kind, r.namespace ?? "", r.name)
    }
}

/// Where a desired service comes from: the object, and which of its ports (a Service has several).
public struct ServiceOrigin: Hashable, Sendable, Codable {
    public var object: InputObject
    /// The Service port's name, or its number when unnamed; nil for a static entry.
    public var port: String?
    /// The Gateway API route whose backends the service's groups are, when a route (rather than
    /// the Service's own annotations) decides its split.
    public var route: InputObject?

    public init(object: InputObject, port: String? = nil, route: InputObject? = nil) {
        self.object = object
        self.port = port
        self.route = route
    }

    /// A static file's entry, by its name.
    public static func staticService(_ name: String) -> ServiceOrigin {
        ServiceOrigin(object: InputObject(kind: .staticService, name: name))
    }

    /// For people and metric labels: `default/web:http`, or the static entry's name `web`.
    public var displayName: String {
        port.map { "\(object.qualifiedName):\($0)" } ?? object.qualifiedName
    }
}

/// Something wrong in the input, named so a person can fix it: the object, the field, what is
/// wrong. The one type every source reports with (a Service's bad annotation, a Node's label, a
/// static file's bad line); the object's last good state is kept meanwhile.
public struct InputProblem: Error, Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public var object: InputObject
    /// The 1-based line in a file, when known.
    public var line: Int?
    /// The field at fault: `metadata.annotations[canary-agent.io/canary-weight]`, `services[0].port`;
    /// empty for the object (or document) as a whole.
    public var field: String
    public var message: String
    /// A CamelCase reason, for Kubernetes Events and metrics: `InvalidCanaryWeight`.
    public var reason: String

    public init(object: InputObject, line: Int? = nil, field: String, message: String, reason: String = "InvalidInput") {
        self.object = object
        self.line = line
        self.field = field
        self.message = message
        self.reason = reason
    }

    /// `Service default/web: metadata.annotations[…]: message`, `config.yaml:7: services[0].port: message`.
    public var description: String {
        let location = line.map { "\(object):\($0)" } ?? "\(object)"
        return field.isEmpty ? "\(location): \(message)" : "\(location): \(field): \(message)"
    }

    public static func < (l: InputProblem, r: InputProblem) -> Bool {
        (l.object, l.line ?? 0, l.field, l.message) < (r.object, r.line ?? 0, r.field, r.message)
    }
}
