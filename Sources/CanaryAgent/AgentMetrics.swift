import CanaryCore
import CoreMetrics
import Foundation
import IPVS

/// The agent's metrics, through swift-metrics (the daemon bootstraps the Prometheus backend; tests
/// pass a `TestMetrics` factory). Names and labels are listed in the README.
public final class AgentMetrics: @unchecked Sendable {
    private let factory: any MetricsFactory
    private let lock = NSLock()
    private var shareGauges: [String: (target: Gauge, effective: Gauge)] = [:]
    private var trafficCounters: [DestinationLabel: TrafficCounters] = [:]

    public init(factory: any MetricsFactory) {
        self.factory = factory
    }

    /// How long one sync took, by kind (`full`: dump, plan, apply; `incremental`: the changed services).
    public func syncDuration(_ duration: Duration, kind: SyncKind) {
        Timer(label: "canary_agent_sync_duration_seconds", dimensions: [("kind", kind.rawValue)], factory: factory)
            .recordNanoseconds(duration.nanoseconds)
    }

    /// From the source's change to the kernel holding it.
    public func eventToKernel(_ duration: Duration) {
        Timer(label: "canary_agent_event_to_kernel_seconds", factory: factory).recordNanoseconds(duration.nanoseconds)
    }

    /// One netlink operation and how it ended (`ok` or the error's reason).
    public func netlinkOperation(_ kind: String, result: String) {
        Counter(label: "canary_agent_netlink_operations_total", dimensions: [("operation", kind), ("result", result)], factory: factory)
            .increment()
    }

    /// An error, by reason (`kernel_dump`, `source_rejected`, `address_bind`, …).
    public func error(reason: String) {
        Counter(label: "canary_agent_errors_total", dimensions: [("reason", reason)], factory: factory).increment()
    }

    /// Services and destinations the agent owns in the kernel now.
    public func programmed(services: Int, destinations: Int) {
        Gauge(label: "canary_agent_services", factory: factory).record(services)
        Gauge(label: "canary_agent_destinations", factory: factory).record(destinations)
    }

    /// 1 once the first full sync is done.
    public func ready(_ ready: Bool) {
        Gauge(label: "canary_agent_ready", factory: factory).record(ready ? 1 : 0)
    }

    /// The target and effective canary share of each programmed service (0…1); others are removed.
    public func shares(_ shares: [String: (target: Double, effective: Double)]) {
        lock.withLock {
            for (name, gauges) in shareGauges where shares[name] == nil {
                gauges.target.destroy()
                gauges.effective.destroy()
                shareGauges[name] = nil
            }
            for (name, share) in shares {
                let gauges = shareGauges[name] ?? (
                    Gauge(label: "canary_agent_canary_share_target", dimensions: [("service", name)], factory: factory),
                    Gauge(label: "canary_agent_canary_share_effective", dimensions: [("service", name)], factory: factory)
                )
                gauges.target.record(share.target)
                gauges.effective.record(share.effective)
                shareGauges[name] = gauges
            }
        }
    }

    /// Per destination, the traffic the kernel counted: connections and bytes, as counters that
    /// follow the kernel's (a counter the kernel restarted, because the destination was deleted and
    /// added again, continues from its new value). Destinations not given are forgotten.
    public func traffic(_ rows: [(label: DestinationLabel, stats: TrafficStats)]) {
        lock.withLock {
            var seen = Set<DestinationLabel>()
            for (label, stats) in rows {
                seen.insert(label)
                var counters = trafficCounters[label] ?? TrafficCounters(label: label, factory: factory)
                counters.advance(to: stats)
                trafficCounters[label] = counters
            }
            for (label, counters) in trafficCounters where !seen.contains(label) {
                counters.destroy()
                trafficCounters[label] = nil
            }
        }
    }

    public enum SyncKind: String, Sendable {
        case full, incremental
    }

    /// The labels of one destination's traffic.
    public struct DestinationLabel: Hashable, Sendable {
        public var service: String
        public var destination: String
        public var role: String
        public init(service: String, destination: String, role: String) {
            self.service = service
            self.destination = destination
            self.role = role
        }
    }

    private struct TrafficCounters {
        let connections: Counter
        let inBytes: Counter
        let outBytes: Counter
        var last = TrafficStats()

        init(label: DestinationLabel, factory: any MetricsFactory) {
            let dimensions = [("service", label.service), ("destination", label.destination), ("role", label.role)]
            connections = Counter(label: "canary_agent_destination_connections_total", dimensions: dimensions, factory: factory)
            inBytes = Counter(label: "canary_agent_destination_bytes_total", dimensions: dimensions + [("direction", "in")], factory: factory)
            outBytes = Counter(label: "canary_agent_destination_bytes_total", dimensions: dimensions + [("direction", "out")], factory: factory)
        }

        mutating func advance(to stats: TrafficStats) {
            connections.increment(by: Self.delta(stats.connections, last.connections))
            inBytes.increment(by: Self.delta(stats.inBytes, last.inBytes))
            outBytes.increment(by: Self.delta(stats.outBytes, last.outBytes))
            last = stats
        }

        func destroy() {
            connections.destroy()
            inBytes.destroy()
            outBytes.destroy()
        }

        static func delta(_ now: UInt64, _ before: UInt64) -> Int64 {
            Int64(clamping: now >= before ? now - before : now)
        }
    }
}

extension Duration {
    /// The duration in whole nanoseconds (saturating).
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds.multipliedReportingOverflow(by: 1_000_000_000).overflow
            ? Int64.max : seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    /// The duration in seconds, as a Double.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
