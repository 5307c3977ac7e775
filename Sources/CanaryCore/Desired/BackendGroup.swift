/// One group of a virtual service's endpoints with its weight: the stable or the canary
/// Deployment's pods, a static file's `backends:` entry, a Gateway API backendRef.
///
/// Weights mean what Gateway API's `backendRefs[].weight` means: a group's target share of new
/// connections is its weight over the sum of the weights of the service's groups; weight 0 takes
/// no new connections (its endpoints keep the ones they have).
public struct BackendGroup: Hashable, Sendable {
    /// Gateway API's range for a backend weight.
    public static let weightRange = 0...1_000_000

    /// For people: `stable`, `canary`, a backend Service's name, a static entry's backend name.
    public var name: String
    /// The object the group's endpoints come from (a backend Service), when it is not the
    /// service's own origin.
    public var origin: InputObject?
    /// 0 ... 1,000,000 (`weightRange`); sources reject anything else before it gets here.
    public var weight: Int
    public var endpoints: [Endpoint]

    public init(name: String, origin: InputObject? = nil, weight: Int, endpoints: [Endpoint]) {
        precondition(Self.weightRange.contains(weight), "a backend weight is 0 ... 1,000,000")
        self.name = name
        self.origin = origin
        self.weight = weight
        self.endpoints = endpoints
    }

    /// The number of live endpoints, each address once.
    public var liveCount: Int { Set(endpoints.lazy.filter { $0.state == .live }.map(\.address)).count }
}

/// What a service does when no group that has weight can take new connections (every such
/// group has no live endpoint) while a group of weight 0 has some.
public enum UnweightedFallback: String, Hashable, Sendable, Codable {
    /// The stable/canary split's rule since its first version: rather than refuse, the groups of
    /// weight 0 take the new connections (a canary at 100 % without live pods sends to stable).
    case useGroupsOfWeightZero
    /// Gateway API's rule: weight 0 takes no new connections, ever; with no usable weighted
    /// group new connections are refused (existing ones finish).
    case refuseNewConnections
}
