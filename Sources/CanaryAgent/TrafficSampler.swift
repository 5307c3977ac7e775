import CanaryCore
import Foundation
import IPVS
import NIOPosix

/// What labels the kernel's per-destination counters: which services are the agent's, and for
/// each destination its service's name and its role (its backend group's name — stable, canary,
/// a route's backend —, names joined by `+` when in several, or leaving: no longer desired, draining).
public struct TrafficLabeling: Sendable {
    public var ready: Bool
    public var ownership: Ownership
    public var desired: DesiredState
    /// The destinations the agent owns in the kernel (the per-destination series have a limit).
    public var destinations: Int

    /// The labelled counters of the agent's destinations in a dump, and per destination the
    /// backend groups it serves with the part of its connections that is each one's.
    public func rows(of dump: [ServiceEntry]) -> (
        rows: [(label: AgentMetrics.DestinationLabel, stats: TrafficStats)],
        groupParts: [AgentMetrics.DestinationLabel: [AgentMetrics.GroupPart]]
    ) {
        var rows: [(label: AgentMetrics.DestinationLabel, stats: TrafficStats)] = []
        var parts: [AgentMetrics.DestinationLabel: [AgentMetrics.GroupPart]] = [:]
        for entry in dump where ownership.owns(entry.service.key) {
            let service = desired.services[entry.service.key]
            let groups = service?.groupsByAddress ?? [:]
            let name = service?.name ?? "\(entry.service.key)"
            // What each group asks of each of its live endpoints: a shared destination's
            // connections are split in that proportion.
            let asks = service.map { service in
                service.backends.map { group -> Double in
                    let live = group.liveCount, total = service.totalWeight
                    return live == 0 || total == 0 ? 0 : Double(group.weight) / Double(total) / Double(live)
                }
            } ?? []
            for destination in entry.destinations {
                let role = service?.role(of: destination.address, groups: groups) ?? "leaving"
                let label = AgentMetrics.DestinationLabel(service: name, destination: "\(destination.address)", role: role)
                rows.append((label, destination.stats?.traffic ?? TrafficStats()))
                guard let service, let members = groups[destination.address] else { continue }
                let asked = members.reduce(0.0) { $0 + asks[$1] }
                parts[label] = members.map { member in
                    AgentMetrics.GroupPart(
                        backend: service.backends[member].name,
                        fraction: asked > 0 ? asks[member] / asked : 1 / Double(members.count))
                }
            }
        }
        return (rows, parts)
    }
}

/// Reads the kernel's per-destination counters for `/metrics`, on a netlink socket of its own and
/// a thread of NIO's pool, so that neither the reconciler nor the event loops wait for a dump
/// (seconds at 100,000 destinations). Scrapes close together share one dump: a dump is reused
/// for `max(minimumInterval, 10 × its own duration)`, so that scraping never keeps the node busy
/// dumping. Scrapes that arrive during a dump wait for it.
public actor TrafficSampler {
    let kernel: any IPVSKernel
    let reconciler: Reconciler
    let metrics: AgentMetrics
    let minimumInterval: Duration
    private var validUntil: ContinuousClock.Instant?
    private var inFlight: Task<Void, Never>?

    /// `kernel` should be a connection of its own (not the reconciler's), so that a dump never
    /// holds up a sync.
    public init(kernel: any IPVSKernel, reconciler: Reconciler, metrics: AgentMetrics, minimumInterval: Duration = .seconds(1)) {
        self.kernel = kernel
        self.reconciler = reconciler
        self.metrics = metrics
        self.minimumInterval = minimumInterval
    }

    /// Brings the traffic counters up to date, unless the last dump is recent enough.
    public func refresh() async {
        if let inFlight { return await inFlight.value }
        if let validUntil, ContinuousClock.now < validUntil { return }
        let task = Task { await sample() }
        inFlight = task
        await task.value
        inFlight = nil
    }

    private func sample() async {
        let labeling = await reconciler.trafficLabeling()
        guard labeling.ready else { return }
        guard labeling.destinations <= metrics.destinationSeriesLimit else {
            return metrics.omitTraffic(destinations: labeling.destinations)
        }
        let started = ContinuousClock.now
        let kernel = kernel
        guard let dump = try? await NIOThreadPool.singleton.runIfActive({ try kernel.dumpTable() }) else { return }
        let took = ContinuousClock.now - started
        let (rows, groupParts) = labeling.rows(of: dump)
        metrics.traffic(rows, groupParts: groupParts)
        validUntil = .now + max(minimumInterval, took * 10)
    }
}
