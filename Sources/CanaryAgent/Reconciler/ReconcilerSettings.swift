import KubernetesClient

extension Reconciler {
    /// How the reconciler paces itself.
    public struct Settings: Sendable {
        /// Between full syncs (dump, plan, repair).
        public var driftCheckInterval: Duration = .seconds(30)
        /// How long to wait after a change for more changes, to plan them together.
        public var syncWindow: Duration = .milliseconds(10)
        /// How long a leaving destination may hold connections before it is deleted anyway.
        public var drainTimeout: Duration = .seconds(300)
        /// How often services with draining destinations are read back from the kernel.
        public var drainPollInterval: Duration = .seconds(1)
        /// The first retry of a failing service comes after at most this; each next one waits up to twice as long.
        public var retryBase: Duration = .seconds(1)
        /// The longest wait between two retries.
        public var retryMax: Duration = .seconds(60)
        /// How long one turn of the loop (a sync, or the wait past its planned wake-up) may take
        /// before the agent counts as stalled: `/healthz` then fails, so that the kubelet or systemd
        /// restarts it. Above the longest full sync (10,000 services take about 90 s under emulation).
        public var stallTimeout: Duration = .seconds(300)
        /// How long the masquerade rules or the hairpin set may keep failing before `/readyz` says
        /// the node is not ready (node-local and hairpin clients are failing meanwhile).
        public var degradedAfter: Duration = .seconds(60)
        /// Between attempts of a refused service, and of a full sync whose dump or address read
        /// failed: grows from `retryBase` to `retryMax`, with jitter, the informers' `Backoff`.
        var retryBackoff: Backoff { Backoff(initial: retryBase, maximum: retryMax) }

        public init() {}

        /// The ranges the command line accepts: a drift check at most once a second (more often is
        /// a full dump per check) and at least once a day; a window of at most 10 s; a drain of at
        /// most a week. Anything else, non-finite numbers included, is refused with one line naming
        /// the flag, before a conversion could trap.
        public static let driftCheckSeconds: ClosedRange<Double> = 1...86_400
        public static let syncWindowMilliseconds: ClosedRange<Int> = 0...10_000
        public static let drainTimeoutSeconds: ClosedRange<Double> = 0...604_800

        /// Settings from the command line's numbers, each checked against its range.
        public init(
            driftCheckIntervalSeconds: Double, syncWindowMilliseconds: Int, drainTimeoutSeconds: Double
        ) throws(SettingsError) {
            self.init()
            driftCheckInterval = try Self.duration(
                seconds: driftCheckIntervalSeconds, within: Self.driftCheckSeconds, flag: "--drift-check-interval")
            guard Self.syncWindowMilliseconds.contains(syncWindowMilliseconds) else {
                throw SettingsError(flag: "--sync-window-ms", value: "\(syncWindowMilliseconds)", range: "0 to 10000 milliseconds")
            }
            syncWindow = .milliseconds(syncWindowMilliseconds)
            drainTimeout = try Self.duration(
                seconds: drainTimeoutSeconds, within: Self.drainTimeoutSeconds, flag: "--drain-timeout")
        }

        private static func duration(seconds: Double, within range: ClosedRange<Double>, flag: String) throws(SettingsError) -> Duration {
            // `contains` is false for NaN and for ±infinity (outside any finite range).
            guard range.contains(seconds) else {
                throw SettingsError(
                    flag: flag, value: "\(seconds)",
                    range: "\(Int(range.lowerBound)) to \(Int(range.upperBound)) seconds")
            }
            return .milliseconds(Int64((seconds * 1000).rounded()))
        }
    }

    /// A command-line number outside the range the reconciler accepts.
    public struct SettingsError: Error, CustomStringConvertible, Equatable {
        public var flag: String
        public var value: String
        public var range: String
        public var description: String { "\(flag): \(value) is out of range (\(range))" }
    }
}
