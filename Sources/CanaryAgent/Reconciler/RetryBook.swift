import IPVS
import KubernetesClient

/// When to try again: each service the kernel refused, and the full sync after a failed read of
/// the table. Both wait after the informers' `Backoff` (exponential, with jitter), so that nothing
/// failing makes the agent spin.
struct RetryBook: Sendable {
    /// A service the kernel refused, and when to try again.
    struct Failure: Sendable {
        var attempts: Int
        var error: String
        var retryAt: ContinuousClock.Instant
    }

    let backoff: Backoff
    private(set) var failures: [ServiceKey: Failure] = [:]
    /// Set while full syncs fail: none is tried before this, however overdue the drift check is.
    private(set) var fullSyncRetryAt: ContinuousClock.Instant?
    private(set) var fullSyncFailures = 0

    init(backoff: Backoff) { self.backoff = backoff }

    /// Records a refusal; the next attempt waits longer than the last.
    mutating func failed(_ key: ServiceKey, error: String, now: ContinuousClock.Instant) {
        let attempts = (failures[key]?.attempts ?? 0) + 1
        failures[key] = Failure(attempts: attempts, error: error, retryAt: now + backoff.delay(attempt: attempts - 1))
    }

    /// A service that went through (or needs nothing) needs no retry.
    mutating func succeeded(_ key: ServiceKey) { failures[key] = nil }

    /// Forgets the services for which `isGone` is true (neither desired nor in the kernel).
    mutating func forget(where isGone: (ServiceKey) -> Bool) {
        failures = failures.filter { !isGone($0.key) }
    }

    /// The services due for a retry now.
    func due(_ now: ContinuousClock.Instant) -> [ServiceKey] {
        failures.filter { $0.value.retryAt <= now }.map(\.key)
    }

    /// The earliest retry of a service.
    var nextRetry: ContinuousClock.Instant? { failures.values.map(\.retryAt).min() }

    /// Records a failed full sync; returns how long until the next one may run.
    mutating func fullSyncFailed(now: ContinuousClock.Instant) -> Duration {
        let delay = backoff.delay(attempt: fullSyncFailures)
        fullSyncFailures += 1
        fullSyncRetryAt = now + delay
        return delay
    }

    mutating func fullSyncSucceeded() {
        fullSyncRetryAt = nil
        fullSyncFailures = 0
    }
}
