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

/// One virtual service as the agent wants it: where it listens, how it schedules, and its
/// stable and canary endpoints with the share of new connections the canary gets.
public struct DesiredService: Hashable, Sendable {
    /// The object and port it comes from.
    public var origin: ServiceOrigin
    public var key: ServiceKey
    public var scheduler: Scheduler
    public var persistence: Persistence?
    public var forwarding: ForwardingMethod
    public var stable: [Endpoint]
    public var canary: [Endpoint]
    /// Target share of new connections for the canary endpoints together.
    public var canaryShare: CanaryShare

    public init(
        origin: ServiceOrigin, key: ServiceKey, scheduler: Scheduler, persistence: Persistence? = nil,
        forwarding: ForwardingMethod = .masquerade, stable: [Endpoint], canary: [Endpoint] = [],
        canaryShare: CanaryShare = .zero
    ) {
        self.origin = origin
        self.key = key
        self.scheduler = scheduler
        self.persistence = persistence
        self.forwarding = forwarding
        self.stable = stable
        self.canary = canary
        self.canaryShare = canaryShare
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

    /// For people and metric labels: "default/web:http" in Kubernetes, the entry's name in static mode.
    public var name: String { origin.displayName }
}

/// Everything the agent wants in the kernel, keyed by virtual service.
public struct DesiredState: Hashable, Sendable {
    public var services: [ServiceKey: DesiredService]

    public init(services: [DesiredService] = []) {
        self.services = Dictionary(services.map { ($0.key, $0) }, uniquingKeysWith: { _, last in last })
    }
}
