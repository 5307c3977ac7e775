import IPVS

/// The weights the solver chose for one service, and what the kernel will make of them.
public struct WeightAssignment: Hashable, Sendable {
    /// What one backend group is to get and gets.
    public struct GroupShare: Hashable, Sendable, Codable {
        public var name: String
        /// The group's weight as asked (0 ... 1,000,000).
        public var weight: Int
        /// Its weight over the sum of the weights, 0 ... 1.
        public var target: Double
        /// The share of new connections the kernel's scheduler will really give its endpoints
        /// with these weights, 0 ... 1 (an endpoint shared with other groups counts for each in
        /// proportion to what they ask of it).
        public var effective: Double
        /// Its live endpoints (an address in other groups too counts here as well).
        public var liveEndpoints: Int
        /// One line saying why `effective` differs from `target`; nil when it does not.
        public var reason: String?

        public init(name: String, weight: Int, target: Double, effective: Double, liveEndpoints: Int, reason: String? = nil) {
            self.name = name
            self.weight = weight
            self.target = target
            self.effective = effective
            self.liveEndpoints = liveEndpoints
            self.reason = reason
        }
    }

    /// The weight of every endpoint of the service, draining ones at 0.
    public var weights: [SocketAddress: Int32]
    /// The share of new connections of every group but the first (the canary's, in a
    /// stable/canary split) that the kernel's scheduler will really give with these weights, 0 ... 1.
    public var effectiveCanaryShare: Double
    /// Per backend group, in the service's order: target and effective share.
    public var groups: [GroupShare] = []
    /// One line saying why the effective shares differ from the targets; nil when they do not.
    public var explanation: String?
    /// Problems a person should hear of: an endpoint that gets no traffic, a degraded plan.
    public var warnings: [String]
    /// wrr only: connections in one cycle of the kernel's scheduler (`sum(weights) / gcd`); the
    /// share holds exactly over each whole cycle. nil for other schedulers.
    public var cycleLength: Int?
    /// Every endpoint address once, in the service's order (the groups in order; a duplicate's
    /// first occurrence): the destinations of the kernel's entry, in the order they are added.
    public var destinationOrder: [SocketAddress] = []
    /// True when the service takes no new connections: no group can (no live endpoint, or every
    /// weight 0 under Gateway API's rule).
    public var refusesNewConnections: Bool = false

    public init(
        weights: [SocketAddress: Int32], effectiveCanaryShare: Double, explanation: String? = nil,
        warnings: [String] = [], cycleLength: Int? = nil
    ) {
        self.weights = weights
        self.effectiveCanaryShare = effectiveCanaryShare
        self.explanation = explanation
        self.warnings = warnings
        self.cycleLength = cycleLength
    }
}
