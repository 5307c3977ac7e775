import IPVS

/// The weights the solver chose for one service, and what the kernel will make of them.
public struct WeightAssignment: Hashable, Sendable {
    /// The weight of every endpoint of the service, stable and canary, draining ones at 0.
    public var weights: [SocketAddress: Int32]
    /// The canary's share of new connections that the kernel's scheduler will really give
    /// with these weights, 0 ... 1.
    public var effectiveCanaryShare: Double
    /// One line saying why the effective share differs from the target; nil when it does not.
    public var explanation: String?
    /// Problems a person should hear of: an endpoint that gets no traffic, a degraded plan.
    public var warnings: [String]
    /// wrr only: connections in one cycle of the kernel's scheduler (`sum(weights) / gcd`); the
    /// share holds exactly over each whole cycle. nil for other schedulers.
    public var cycleLength: Int?
    /// Every endpoint address once, in the service's order (stable, then canary; a duplicate's
    /// first occurrence): the destinations of the kernel's entry, in the order they are added.
    public var destinationOrder: [SocketAddress] = []

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
