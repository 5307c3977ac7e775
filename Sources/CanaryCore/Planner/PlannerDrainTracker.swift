import IPVS

/// When each leaving destination started draining: the planner's memory between plans.
///
/// A destination that leaves the desired state is first set to weight 0 and is deleted only
/// once it has no connections left or the drain timeout has passed since it started draining.
/// This value records that start, per service and destination. It is a plain value: the
/// planner updates it in place (`inout`) so that a plan touching one service costs O(that
/// service), and the caller keeps it from one plan to the next.
public struct DrainTracker: Hashable, Sendable {
    private var startedByService: [ServiceKey: [SocketAddress: ContinuousClock.Instant]] = [:]
    /// How many destinations are draining, across all services.
    public private(set) var count = 0

    public init() {}

    /// True when no destination is draining.
    public var isEmpty: Bool { count == 0 }

    /// The services that have at least one draining destination: plan these again (with
    /// `Planner.plan(changed:...)`) to delete what has drained.
    public var serviceKeys: some Collection<ServiceKey> { startedByService.keys }

    /// When the destination started draining, or nil when it is not draining.
    public func drainStart(of address: SocketAddress, in service: ServiceKey) -> ContinuousClock.Instant? {
        startedByService[service]?[address]
    }

    /// The draining destinations of one service, with the instant each started draining.
    public func draining(in service: ServiceKey) -> [SocketAddress: ContinuousClock.Instant] {
        startedByService[service] ?? [:]
    }

    /// The earliest instant at which some drain times out, or nil when nothing drains: the
    /// moment to plan the draining services again.
    public func nextDeadline(timeout: Duration) -> ContinuousClock.Instant? {
        var earliest: ContinuousClock.Instant?
        for destinations in startedByService.values {
            for start in destinations.values where earliest.map({ start < $0 }) ?? true { earliest = start }
        }
        return earliest.map { $0 + timeout }
    }

    /// Records that a destination starts draining now, unless it already drains; returns the
    /// instant its drain started.
    @discardableResult
    mutating func start(_ address: SocketAddress, in service: ServiceKey, at now: ContinuousClock.Instant)
        -> ContinuousClock.Instant
    {
        if let started = startedByService[service]?[address] { return started }
        startedByService[service, default: [:]][address] = now
        count += 1
        return now
    }

    /// Forgets a destination: it was deleted, came back, or is gone from the kernel.
    mutating func stop(_ address: SocketAddress, in service: ServiceKey) {
        guard startedByService[service]?.removeValue(forKey: address) != nil else { return }
        count -= 1
        if startedByService[service]?.isEmpty == true { startedByService[service] = nil }
    }

    /// Forgets every destination of a service.
    mutating func stopAll(in service: ServiceKey) {
        guard let removed = startedByService.removeValue(forKey: service) else { return }
        count -= removed.count
    }
}
