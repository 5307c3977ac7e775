import CanaryCore
import CoreMetrics
import Foundation
import IPVS

/// The agent's metrics, through swift-metrics (the daemon bootstraps the Prometheus backend; tests
/// pass a `TestMetrics` factory). Names and labels are listed in the README.
public final class AgentMetrics: @unchecked Sendable {
    private let factory: any MetricsFactory
    private let lock = NSLock()
    private var trafficTotals: [DestinationLabel: TrafficTotals] = [:]
    private var omittedDestinations: Int?
    /// Per service and backend group: connections counted (a shared destination's split by what
    /// each group asks of it), and each group's part of the last sample's new connections.
    private var groupConnections: [GroupLabel: Double] = [:]
    private var observedShares: [GroupLabel: Double] = [:]
    /// Above this many destinations the per-destination series are not kept or exported: on a node
    /// with 100,000 destinations they would be 300,000 series per scrape (and per node, cluster-wide).
    public let destinationSeriesLimit: Int

    public init(factory: any MetricsFactory, destinationSeriesLimit: Int = 10_000) {
        self.factory = factory
        self.destinationSeriesLimit = destinationSeriesLimit
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

    /// Netlink operations and how they ended (`ok` or the error's reason): one counter update per
    /// (operation, result) pair of a sync, not one per operation.
    public func netlinkOperations(_ counts: [NetlinkOutcome: Int]) {
        for (outcome, count) in counts where count > 0 {
            Counter(
                label: "canary_agent_netlink_operations_total",
                dimensions: [("operation", outcome.operation), ("result", outcome.result)], factory: factory
            ).increment(by: Int64(count))
        }
    }

    /// One kind of netlink operation and how it ended.
    public struct NetlinkOutcome: Hashable, Sendable {
        public var operation: String
        public var result: String
        public init(operation: String, result: String) {
            self.operation = operation
            self.result = result
        }
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

    /// Per destination, the traffic the kernel counted: connections and bytes, kept as counters
    /// that follow the kernel's (a counter the kernel restarted, because the destination was
    /// deleted and added again, continues from its new value). Destinations not given are
    /// forgotten. Plain values, rendered by `renderScrapeTimeSeries` at scrape time: a node with
    /// 100,000 destinations would otherwise register 300,000 labelled series with the registry.
    ///
    /// - Parameter groupParts: per destination, the backend groups it serves and the part of its
    ///   connections that is each one's: the per-group connection counters and observed shares
    ///   follow from them.
    public func traffic(
        _ rows: [(label: DestinationLabel, stats: TrafficStats)], groupParts: [DestinationLabel: [GroupPart]] = [:]
    ) {
        guard rows.count <= destinationSeriesLimit else { return omitTraffic(destinations: rows.count) }
        lock.withLock {
            omittedDestinations = nil
            var next: [DestinationLabel: TrafficTotals] = [:]
            next.reserveCapacity(rows.count)
            var sampled: [GroupLabel: Double] = [:]
            for (label, stats) in rows {
                var totals = trafficTotals[label] ?? TrafficTotals()
                let before = totals.connections
                totals.advance(to: stats)
                next[label] = totals
                let delta = Double(totals.connections &- before)
                for part in groupParts[label] ?? [] {
                    sampled[GroupLabel(service: label.service, backend: part.backend), default: 0] += delta * part.fraction
                }
            }
            trafficTotals = next
            for (group, count) in sampled { groupConnections[group, default: 0] += count }
            // A group's observed share: its part of its service's new connections since the last
            // sample, kept from the last sample that saw any.
            let perService = Dictionary(grouping: sampled, by: \.key.service)
            for (_, groups) in perService {
                let total = groups.reduce(0) { $0 + $1.value }
                guard total > 0 else { continue }
                for (group, count) in groups { observedShares[group] = count / total }
            }
            // Groups no longer desired are forgotten.
            observedShares = observedShares.filter { sampled[$0.key] != nil }
            groupConnections = groupConnections.filter { sampled[$0.key] != nil }
        }
    }

    /// The part of a destination's connections that belongs to one backend group.
    public struct GroupPart: Hashable, Sendable {
        public var backend: String
        /// 0 ... 1: 1 unless the destination is in several groups.
        public var fraction: Double
        public init(backend: String, fraction: Double) {
            self.backend = backend
            self.fraction = fraction
        }
    }

    struct GroupLabel: Hashable {
        var service: String
        var backend: String
        var rendered: String { "service=\"\(AgentMetrics.escape(service))\",backend=\"\(AgentMetrics.escape(backend))\"" }
    }

    /// Drops the per-destination series: the agent owns more destinations than the limit.
    public func omitTraffic(destinations: Int) {
        lock.withLock {
            trafficTotals = [:]
            omittedDestinations = destinations
        }
    }

    /// The series with one row per service or per destination, as Prometheus text (appended to
    /// the registry's output at scrape time): each service's target and effective canary share,
    /// and each destination's connections and bytes.
    public func renderScrapeTimeSeries(shares: [ShareRow]) -> String {
        var text = ""
        text.reserveCapacity(128 + shares.count * 160)
        // The stable/canary series, for two-group services (rows without groups are such).
        let twoGroup = shares.filter { $0.groups.isEmpty || $0.groups.count == 2 }
        text += "# HELP canary_agent_canary_share_target The canary share asked for, per service (0 to 1).\n"
        text += "# TYPE canary_agent_canary_share_target gauge\n"
        for row in twoGroup {
            text += "canary_agent_canary_share_target{service=\"\(Self.escape(row.service))\"} \(row.target)\n"
        }
        text += "# HELP canary_agent_canary_share_effective The canary share the kernel's weights give, per service.\n"
        text += "# TYPE canary_agent_canary_share_effective gauge\n"
        for row in twoGroup {
            text += "canary_agent_canary_share_effective{service=\"\(Self.escape(row.service))\"} \(row.effective)\n"
        }
        text += renderGroupSeries(shares)
        let (totals, omitted) = lock.withLock { (trafficTotals, omittedDestinations) }
        if let omitted {
            text += "# canary_agent_destination_*: not exported: \(omitted) destinations, more than --destination-metrics-limit \(destinationSeriesLimit)\n"
        }
        let traffic = totals.sorted { ($0.key.service, $0.key.destination) < ($1.key.service, $1.key.destination) }
        text += "# HELP canary_agent_destination_connections_total Connections the kernel gave each destination.\n"
        text += "# TYPE canary_agent_destination_connections_total counter\n"
        for (label, totals) in traffic {
            text += "canary_agent_destination_connections_total{\(label.rendered)} \(totals.connections)\n"
        }
        text += "# HELP canary_agent_destination_bytes_total Bytes through each destination, by direction.\n"
        text += "# TYPE canary_agent_destination_bytes_total counter\n"
        for (label, totals) in traffic {
            text += "canary_agent_destination_bytes_total{\(label.rendered),direction=\"in\"} \(totals.inBytes)\n"
            text += "canary_agent_destination_bytes_total{\(label.rendered),direction=\"out\"} \(totals.outBytes)\n"
        }
        return text
    }

    /// A label value with backslash, double quote and line feed escaped, as the text format wants;
    /// any other control character (a carriage return above all) becomes U+FFFD, so that no value
    /// can end a line of the exposition. Read by Unicode scalar: "\r\n" is one Swift `Character`.
    static func escape(_ value: String) -> String {
        guard value.unicodeScalars.contains(where: { $0 == "\\" || $0 == "\"" || $0.value < 0x20 || $0.value == 0x7F })
        else { return value }
        var escaped = String.UnicodeScalarView()
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": escaped.append(contentsOf: "\\\\".unicodeScalars)
            case "\"": escaped.append(contentsOf: "\\\"".unicodeScalars)
            case "\n": escaped.append(contentsOf: "\\n".unicodeScalars)
            case _ where scalar.value < 0x20 || scalar.value == 0x7F: escaped.append("\u{FFFD}")
            default: escaped.append(scalar)
            }
        }
        return String(escaped)
    }

    /// Per service and backend group: weight, target, effective and observed share, live
    /// endpoints, connections; and per service whether it refuses new connections.
    private func renderGroupSeries(_ shares: [ShareRow]) -> String {
        let (connections, observed) = lock.withLock { (groupConnections, observedShares) }
        var text = ""
        func series(_ name: String, _ type: String, _ help: String, _ value: (ShareRow, WeightAssignment.GroupShare) -> String?) {
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for row in shares {
                for group in row.groups {
                    guard let value = value(row, group) else { continue }
                    text += "\(name){\(GroupLabel(service: row.service, backend: group.name).rendered)} \(value)\n"
                }
            }
        }
        series("canary_agent_backend_weight", "gauge", "The weight of each backend group (0 to 1000000).") { "\($1.weight)" }
        series("canary_agent_backend_share_target", "gauge", "Each group's weight over the sum of its service's weights.") {
            "\($1.target)"
        }
        series("canary_agent_backend_share_effective", "gauge", "The share the kernel's weights give each group.") {
            "\($1.effective)"
        }
        series(
            "canary_agent_backend_share_observed", "gauge",
            "Each group's part of its service's new connections the kernel counted between the last two samples."
        ) { row, group in observed[GroupLabel(service: row.service, backend: group.name)].map { "\($0)" } }
        series("canary_agent_backend_live_endpoints", "gauge", "Live endpoints per group (0 with weight: it cannot take its share).") {
            "\($1.liveEndpoints)"
        }
        series("canary_agent_backend_connections_total", "counter", "Connections the kernel gave each group's endpoints.") {
            row, group in "\(Int((connections[GroupLabel(service: row.service, backend: group.name)] ?? 0).rounded()))"
        }
        text += "# HELP canary_agent_service_refusing_new_connections 1 while no backend group can take new connections.\n"
        text += "# TYPE canary_agent_service_refusing_new_connections gauge\n"
        for row in shares where !row.groups.isEmpty {
            text += "canary_agent_service_refusing_new_connections{service=\"\(Self.escape(row.service))\"} \(row.refuses ? 1 : 0)\n"
        }
        return text
    }

    /// One service's shares, for `renderScrapeTimeSeries`.
    public struct ShareRow: Sendable, Equatable {
        public var service: String
        /// The share of every group but the first (the canary's).
        public var target: Double
        public var effective: Double
        /// Per backend group (empty: a stable/canary row described by `target` and `effective`).
        public var groups: [WeightAssignment.GroupShare]
        public var refuses: Bool
        public init(
            service: String, target: Double, effective: Double, groups: [WeightAssignment.GroupShare] = [],
            refuses: Bool = false
        ) {
            self.service = service
            self.target = target
            self.effective = effective
            self.groups = groups
            self.refuses = refuses
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

        var rendered: String {
            "service=\"\(AgentMetrics.escape(service))\",destination=\"\(AgentMetrics.escape(destination))\",role=\"\(role)\""
        }
    }

    /// A destination's counters as the agent reports them.
    struct TrafficTotals {
        var connections: UInt64 = 0
        var inBytes: UInt64 = 0
        var outBytes: UInt64 = 0
        var last = TrafficStats()

        mutating func advance(to stats: TrafficStats) {
            connections &+= Self.delta(stats.connections, last.connections)
            inBytes &+= Self.delta(stats.inBytes, last.inBytes)
            outBytes &+= Self.delta(stats.outBytes, last.outBytes)
            last = stats
        }

        static func delta(_ now: UInt64, _ before: UInt64) -> UInt64 { now >= before ? now - before : now }
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
