import IPVS

/// A share of new connections, in hundredths of a percent: 1000 is 10.00 %.
public struct CanaryShare: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    /// 0 ... 10_000.
    public let basisPoints: Int

    public static let zero = CanaryShare(unchecked: 0)
    public static let all = CanaryShare(unchecked: 10_000)

    /// nil outside 0 ... 10_000.
    public init?(basisPoints: Int) {
        guard (0...10_000).contains(basisPoints) else { return nil }
        self.basisPoints = basisPoints
    }

    private init(unchecked: Int) { basisPoints = unchecked }

    /// Parses a percentage with at most two decimals: "10", "12.5", "0.01", "100".
    /// Anything else ("abc", "150", "-1", "1e3", "10.001", "") is nil.
    public init?(percentText text: String) {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty, whole.count <= 3, whole.allSatisfy({ $0.isASCII && $0.isNumber })
        else { return nil }
        var fraction = parts.count == 2 ? String(parts[1]) : ""
        if parts.count == 2 && fraction.isEmpty { return nil }
        guard fraction.count <= 2, fraction.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        while fraction.count < 2 { fraction += "0" }
        guard let w = Int(whole), let f = Int(fraction) else { return nil }
        self.init(basisPoints: w * 100 + f)
    }

    /// The share as a fraction, 0 ... 1.
    public var fraction: Double { Double(basisPoints) / 10_000 }

    /// "10%", "12.5%", "0.01%".
    public var description: String {
        let whole = basisPoints / 100, part = basisPoints % 100
        if part == 0 { return "\(whole)%" }
        if part % 10 == 0 { return "\(whole).\(part / 10)%" }
        return "\(whole).\(part < 10 ? "0" : "")\(part)%"
    }

    public static func < (l: CanaryShare, r: CanaryShare) -> Bool { l.basisPoints < r.basisPoints }
}

/// An endpoint of a service, as the agent wants it in the kernel.
public struct Endpoint: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Whether the endpoint takes new connections.
    public enum State: Hashable, Sendable, Codable {
        /// Ready: takes new connections.
        case live
        /// Terminating but still serving: weight 0, existing connections finish.
        case draining
    }

    public var address: SocketAddress
    public var state: State

    public init(_ address: SocketAddress, state: State = .live) {
        self.address = address
        self.state = state
    }

    public var description: String { state == .live ? "\(address)" : "\(address) (draining)" }
    public static func < (l: Endpoint, r: Endpoint) -> Bool { l.address < r.address }
}

/// Client persistence (IPVS persistent services): one client keeps its destination for `timeout` seconds.
public struct Persistence: Hashable, Sendable, Codable {
    public var timeout: UInt32
    /// IPv4 mask in host order, or IPv6 prefix length; nil is one client address (/32 or /128).
    public var netmask: UInt32?
    public init(timeout: UInt32, netmask: UInt32? = nil) {
        self.timeout = timeout
        self.netmask = netmask
    }
}

/// One virtual service as the agent wants it: where it listens, how it schedules, and its backend
/// groups, each with its endpoints and its weight (the share of new connections it is to get).
///
/// The stable/canary split is the two-group case: stable weighs `10,000 − b` and canary `b`, for
/// a canary share of `b` basis points (`init(origin:…stable:canary:canaryShare:)`).
public struct DesiredService: Hashable, Sendable {
    /// The object and port it comes from.
    public var origin: ServiceOrigin
    public var key: ServiceKey
    public var scheduler: Scheduler
    public var persistence: Persistence?
    public var forwarding: ForwardingMethod
    /// The groups in order; an address in several groups is one destination carrying the sum of
    /// their shares for it.
    public var backends: [BackendGroup]
    /// What happens when no group with weight has a live endpoint.
    public var unweightedFallback: UnweightedFallback

    /// A service of any number of weighted groups.
    public init(
        origin: ServiceOrigin, key: ServiceKey, scheduler: Scheduler, persistence: Persistence? = nil,
        forwarding: ForwardingMethod = .masquerade, backends: [BackendGroup],
        unweightedFallback: UnweightedFallback = .refuseNewConnections
    ) {
        self.origin = origin
        self.key = key
        self.scheduler = scheduler
        self.persistence = persistence
        self.forwarding = forwarding
        self.backends = backends
        self.unweightedFallback = unweightedFallback
    }

    /// A stable/canary service: groups `stable` (weight `10,000 − canaryShare`) and `canary`
    /// (weight `canaryShare`, in basis points), with the split's fallback to a group of weight 0.
    public init(
        origin: ServiceOrigin, key: ServiceKey, scheduler: Scheduler, persistence: Persistence? = nil,
        forwarding: ForwardingMethod = .masquerade, stable: [Endpoint], canary: [Endpoint] = [],
        canaryShare: CanaryShare = .zero
    ) {
        self.init(
            origin: origin, key: key, scheduler: scheduler, persistence: persistence, forwarding: forwarding,
            backends: Self.stableAndCanary(stable: stable, canary: canary, canaryShare: canaryShare),
            unweightedFallback: .useGroupsOfWeightZero)
    }

    /// A static entry named `name` (tests, benchmarks and tools that make services by hand).
    public init(
        name: String, key: ServiceKey, scheduler: Scheduler, persistence: Persistence? = nil,
        forwarding: ForwardingMethod = .masquerade, stable: [Endpoint], canary: [Endpoint] = [],
        canaryShare: CanaryShare = .zero
    ) {
        self.init(
            origin: .staticService(name), key: key, scheduler: scheduler, persistence: persistence, forwarding: forwarding,
            stable: stable, canary: canary, canaryShare: canaryShare)
    }

    /// The two groups of a stable/canary split.
    public static func stableAndCanary(stable: [Endpoint], canary: [Endpoint], canaryShare: CanaryShare) -> [BackendGroup] {
        [
            BackendGroup(name: "stable", weight: 10_000 - canaryShare.basisPoints, endpoints: stable),
            BackendGroup(name: "canary", weight: canaryShare.basisPoints, endpoints: canary),
        ]
    }

    /// For people and metric labels: "default/web:http" in Kubernetes, the entry's name in static mode.
    public var name: String { origin.displayName }

    /// True for the stable/canary split: exactly two groups named `stable` and `canary`.
    public var isStableAndCanary: Bool {
        backends.count == 2 && backends[0].name == "stable" && backends[1].name == "canary"
    }

    /// The sum of the groups' weights.
    public var totalWeight: Int { backends.reduce(0) { $0 + $1.weight } }

    /// Each group's target share (its weight over the total), 0 ... 1; all 0 when every weight is 0.
    public var targetShares: [Double] {
        let total = totalWeight
        return backends.map { total == 0 ? 0 : Double($0.weight) / Double(total) }
    }

    /// The first group's endpoints (stable, in a stable/canary split).
    public var stable: [Endpoint] {
        get { backends.first?.endpoints ?? [] }
        set {
            if backends.isEmpty { backends = Self.stableAndCanary(stable: [], canary: [], canaryShare: .zero) }
            backends[0].endpoints = newValue
        }
    }

    /// Every endpoint of the groups after the first (canary, in a stable/canary split).
    public var canary: [Endpoint] {
        get { backends.dropFirst().flatMap(\.endpoints) }
        set {
            precondition(backends.count <= 2, "canary is the second group of a two-group service")
            if backends.count < 2 { backends = Self.stableAndCanary(stable: stable, canary: [], canaryShare: canaryShare) }
            backends[1].endpoints = newValue
        }
    }

    /// The target share of the groups after the first (the canary's, in a stable/canary split),
    /// rounded to a basis point; setting it makes the first two groups weigh `10,000 − b` and `b`.
    public var canaryShare: CanaryShare {
        get {
            let total = totalWeight
            guard total > 0, let first = backends.first else { return .zero }
            let rest = total - first.weight
            return CanaryShare(basisPoints: (rest * 10_000 + total / 2) / total) ?? .zero
        }
        set {
            precondition(backends.count <= 2, "the canary share is that of a two-group service")
            if backends.count < 2 { backends = Self.stableAndCanary(stable: stable, canary: canary, canaryShare: .zero) }
            backends[0].weight = 10_000 - newValue.basisPoints
            backends[1].weight = newValue.basisPoints
        }
    }
}

/// Everything the agent wants in the kernel, keyed by virtual service.
public struct DesiredState: Hashable, Sendable {
    public var services: [ServiceKey: DesiredService]

    public init(services: [DesiredService] = []) {
        self.services = Dictionary(services.map { ($0.key, $0) }, uniquingKeysWith: { _, last in last })
    }
}
