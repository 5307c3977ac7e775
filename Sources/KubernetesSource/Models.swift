import KubernetesClient

// The Kubernetes objects the agent reads, with only the fields it uses. Unknown fields are ignored,
// and every field the API may leave out is optional.

/// An int or a string, as in a Service port's `targetPort`.
public enum IntOrString: Codable, Sendable, Hashable, CustomStringConvertible {
    case int(Int)
    case string(String)

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int.self) {
            self = .int(number)
        } else {
            self = .string(try container.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .int(let number): try container.encode(number)
        case .string(let text): try container.encode(text)
        }
    }

    public var description: String {
        switch self {
        case .int(let number): "\(number)"
        case .string(let text): text
        }
    }
}

/// core/v1 Service.
public struct Service: KubernetesObject, Hashable {
    public var metadata: ObjectMeta
    public var spec: Spec?

    public init(metadata: ObjectMeta, spec: Spec?) {
        self.metadata = metadata
        self.spec = spec
    }

    public struct Spec: Codable, Sendable, Hashable {
        /// ClusterIP, NodePort, LoadBalancer, ExternalName.
        public var type: String?
        /// "None" for a headless Service.
        public var clusterIP: String?
        /// Both families' addresses of a dual-stack Service, the primary first.
        public var clusterIPs: [String]?
        public var externalIPs: [String]?
        public var ports: [Port]?
        /// "None" or "ClientIP".
        public var sessionAffinity: String?
        public var sessionAffinityConfig: SessionAffinityConfig?

        public init(
            type: String? = "ClusterIP", clusterIP: String? = nil, clusterIPs: [String]? = nil,
            externalIPs: [String]? = nil, ports: [Port]? = nil, sessionAffinity: String? = nil,
            sessionAffinityConfig: SessionAffinityConfig? = nil
        ) {
            self.type = type
            self.clusterIP = clusterIP
            self.clusterIPs = clusterIPs
            self.externalIPs = externalIPs
            self.ports = ports
            self.sessionAffinity = sessionAffinity
            self.sessionAffinityConfig = sessionAffinityConfig
        }
    }

    /// A ServicePort.
    public struct Port: Codable, Sendable, Hashable {
        public var name: String?
        /// TCP (the default), UDP or SCTP.
        public var `protocol`: String?
        public var port: Int
        /// A number, or the name of a container port; defaults to `port`.
        public var targetPort: IntOrString?

        public init(name: String? = nil, protocol: String? = "TCP", port: Int, targetPort: IntOrString? = nil) {
            self.name = name
            self.protocol = `protocol`
            self.port = port
            self.targetPort = targetPort
        }
    }

    public struct SessionAffinityConfig: Codable, Sendable, Hashable {
        public struct ClientIP: Codable, Sendable, Hashable {
            public var timeoutSeconds: Int?
            public init(timeoutSeconds: Int?) { self.timeoutSeconds = timeoutSeconds }
        }
        public var clientIP: ClientIP?
        public init(clientIP: ClientIP?) { self.clientIP = clientIP }
    }
}

/// The port of an EndpointSlice or of an Endpoints subset: the Service port's name and the number it
/// resolved to for these endpoints.
public struct EndpointPort: Codable, Sendable, Hashable {
    public var name: String?
    public var port: Int?
    public var `protocol`: String?

    public init(name: String? = nil, port: Int?, protocol: String? = "TCP") {
        self.name = name
        self.port = port
        self.protocol = `protocol`
    }
}

/// discovery.k8s.io/v1 EndpointSlice.
public struct EndpointSlice: KubernetesObject, Hashable {
    public var metadata: ObjectMeta
    /// IPv4, IPv6 or FQDN.
    public var addressType: String?
    public var endpoints: [Endpoint]?
    public var ports: [EndpointPort]?

    public init(metadata: ObjectMeta, addressType: String?, endpoints: [Endpoint]?, ports: [EndpointPort]?) {
        self.metadata = metadata
        self.addressType = addressType
        self.endpoints = endpoints
        self.ports = ports
    }

    /// The label naming the Service a slice belongs to.
    public static let serviceNameLabel = "kubernetes.io/service-name"

    public struct Endpoint: Codable, Sendable, Hashable {
        public var addresses: [String]
        public var conditions: Conditions?

        public init(addresses: [String], conditions: Conditions?) {
            self.addresses = addresses
            self.conditions = conditions
        }

        enum CodingKeys: String, CodingKey { case addresses, conditions }
        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            addresses = try container.decodeIfPresent([String].self, forKey: .addresses) ?? []
            conditions = try container.decodeIfPresent(Conditions.self, forKey: .conditions)
        }
    }

    /// EndpointConditions. Nil values mean: ready unknown → ready; serving unknown → as ready;
    /// terminating unknown → not terminating (the API reference's reading).
    public struct Conditions: Codable, Sendable, Hashable {
        public var ready: Bool?
        public var serving: Bool?
        public var terminating: Bool?

        public init(ready: Bool?, serving: Bool? = nil, terminating: Bool? = nil) {
            self.ready = ready
            self.serving = serving
            self.terminating = terminating
        }
    }
}

/// core/v1 Endpoints (for clusters without EndpointSlices: `--endpoints-api=endpoints`).
public struct Endpoints: KubernetesObject, Hashable {
    public var metadata: ObjectMeta
    public var subsets: [Subset]?

    public init(metadata: ObjectMeta, subsets: [Subset]?) {
        self.metadata = metadata
        self.subsets = subsets
    }

    public struct Address: Codable, Sendable, Hashable {
        public var ip: String
        public init(ip: String) { self.ip = ip }
    }

    public struct Subset: Codable, Sendable, Hashable {
        public var addresses: [Address]?
        public var notReadyAddresses: [Address]?
        public var ports: [EndpointPort]?

        public init(addresses: [Address]?, notReadyAddresses: [Address]? = nil, ports: [EndpointPort]?) {
            self.addresses = addresses
            self.notReadyAddresses = notReadyAddresses
            self.ports = ports
        }
    }
}

/// core/v1 Node: only its labels matter.
public struct Node: KubernetesObject, Hashable {
    public var metadata: ObjectMeta
    public init(metadata: ObjectMeta) { self.metadata = metadata }
}
