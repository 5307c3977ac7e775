import CHeapTrim
import CanaryCore
import Foundation
import IPVS
import Logging
import NIOCore
import NIOPosix
import NodeNetwork
import Synchronization

/// Keeps the kernel's IPVS table, and the node's addresses and rules, equal to the desired state.
///
/// It holds the one desired state: sources send changes (`submit`), and the loop (`run`) syncs.
/// A change rings the doorbell; the loop waits a short window (`Settings.syncWindow`) so that a
/// burst becomes one plan, then plans and applies only the services that changed, against its model
/// of the table as last applied (no dump per change). A full sync (dump, plan everything, repair)
/// runs first, to adopt whatever the kernel holds, and then every `driftCheckInterval`. Draining
/// services are read back every `drainPollInterval` until their connections are gone.
///
/// The bookkeeping lives in value types, each with one job: `AddressBook` (which addresses are the
/// agent's), `MasqueradeBook` (the hairpin set and rules), `RetryBook` (backoff), `DrainTracker`.
/// The reconciler never flushes: it touches only the services on its own addresses.
///
/// It runs on a thread of its own (`executorLoop`), not on Swift's cooperative pool: a dump of a
/// large table, a netlink timeout or `iptables-restore` blocks that thread only.
public actor Reconciler {
    let kernel: any IPVSKernel
    let node: any NodePlumbing
    let settings: Settings
    let metrics: AgentMetrics
    let logger: Logger
    let sourceSummary: String
    let doorbell = Doorbell()
    let startedAt = Date()

    /// The thread the actor runs on, its own: blocking kernel and process work stays off the
    /// cooperative pool, and a kernel call that hangs holds up this reconciler only.
    private nonisolated let thread: MultiThreadedEventLoopGroup
    nonisolated let executorLoop: any EventLoop
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executorLoop.executor.asUnownedSerialExecutor() }

    // What is asked for.
    /// The one desired state; nil before the source's first.
    var desiredState: DesiredState?
    var sourceProblems: [InputProblem] = []
    var sourceRejection: InputProblem?
    var sourceRejectedSince: Date?
    /// While the source cannot read its input (the API server out of reach): its error and since when.
    var sourceUnavailable: AgentStatus.OngoingError?
    private var pendingKeys: Set<ServiceKey> = []
    private var pendingSince: ContinuousClock.Instant?

    // What the kernel and the node hold, as far as the agent knows.
    var desiredTable = DesiredTable()
    var applied: IPVSTableIndex = [:]
    var drains = DrainTracker()
    var addresses = AddressBook()
    var masquerade = MasqueradeBook()
    var retries: RetryBook
    private var lastFullSync: ContinuousClock.Instant?
    private var ipv6Prepared = false
    private var reportedNodeChanges: Set<String> = []

    // What `status` and the probes report.
    var ready = false {
        didSet { readyFlag.store(ready, ordering: .releasing) }
    }
    /// `ready` for `isReady`, readable while the actor is busy (a full sync of 10,000 services takes
    /// seconds; a readiness probe must not wait for it).
    nonisolated let readyFlag = Atomic<Bool>(false)
    /// Nanoseconds after `clockOrigin` by which the loop must have turned again (Int64.max while it
    /// waits for its first desired state): read by `/healthz` without waiting for the actor.
    nonisolated let turnDeadline = Atomic<Int64>(Int64.max)
    nonisolated let clockOrigin = ContinuousClock.now
    /// Nanoseconds after `clockOrigin` since which the masquerade rules keep failing; Int64.max: they work.
    nonisolated let masqueradeFailingSince = Atomic<Int64>(Int64.max)
    /// Nanoseconds after `clockOrigin` since which the source cannot read its input; Int64.max: it can.
    nonisolated let sourceFailingSince = Atomic<Int64>(Int64.max)
    /// Since when the kernel's table cannot be read (with `lastKernelError`).
    var kernelErrorSince: Date?
    var lastKernelError: String?
    var lastSync: SyncReport?
    var lastFullSyncReport: SyncReport?

    public init(
        kernel: any IPVSKernel, node: any NodePlumbing, settings: Settings = Settings(), metrics: AgentMetrics,
        sourceSummary: String, logger: Logger
    ) {
        self.kernel = kernel
        self.node = node
        self.settings = settings
        self.metrics = metrics
        self.sourceSummary = sourceSummary
        self.logger = logger
        retries = RetryBook(backoff: settings.retryBackoff)
        thread = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        executorLoop = thread.next()
    }

    deinit {
        thread.shutdownGracefully { _ in }
    }

    // MARK: - Input

    /// Takes a source's event; the sync happens in `run()`.
    public func submit(_ event: SourceEvent) {
        switch event {
        case .rejected(let problem):
            sourceRejection = problem
            sourceRejectedSince = sourceRejectedSince ?? Date()
            metrics.error(reason: "source_rejected")
            logger.error("\(problem) (rejected whole: the running table is kept)")
        case .unavailable(let error):
            if let error {
                if sourceUnavailable == nil {
                    sourceFailingSince.store(Self.nanoseconds(ContinuousClock.now - clockOrigin), ordering: .releasing)
                    metrics.error(reason: "source_unavailable")
                    logger.error("the source cannot read its input: \(error) (the running table is kept)")
                }
                sourceUnavailable = AgentStatus.OngoingError(message: error, since: sourceUnavailable?.since ?? Date())
            } else if let unavailable = sourceUnavailable {
                logger.notice("the source reads its input again (unavailable since \(unavailable.since))")
                sourceUnavailable = nil
                sourceFailingSince.store(Int64.max, ordering: .releasing)
            }
            return
        case .changed(let changes, let problems, let receivedAt):
            sourceRejection = nil
            sourceRejectedSince = nil
            sourceProblems = problems
            // In place: the state gives up its reference first, so that one change of 10,000
            // services copies none of the other 9,999.
            var state = desiredState ?? DesiredState()
            desiredState = nil
            let changed = state.apply(changes)
            desiredState = state
            if !changed.isEmpty {
                pendingKeys.formUnion(changed)
                pendingSince = min(pendingSince ?? receivedAt, receivedAt)
            }
        }
        doorbell.ring()
    }

    /// Asks for a full sync now (dump, plan, repair), as the drift check does.
    public func requestFullSync() {
        lastFullSync = nil
        doorbell.ring()
    }

    // MARK: - The loop

    /// Syncs until the task is cancelled. Nothing is touched before the first desired state.
    public func run() async {
        logger.info("reconciler started", metadata: ["source": "\(sourceSummary)"])
        while !Task.isCancelled {
            let wakeUp = nextWakeUp()
            expectTurn(by: wakeUp.map { max($0, .now) + settings.stallTimeout })
            await doorbell.wait(until: wakeUp)
            if Task.isCancelled { break }
            guard desiredState != nil else { continue }
            let now = ContinuousClock.now
            expectTurn(by: now + settings.stallTimeout)
            if now >= nextFullSync(now) {
                fullSync()
            } else if !pendingKeys.isEmpty || isIncrementalWorkDue(now) {
                if !pendingKeys.isEmpty {
                    // Fold a burst: changes that arrive within the window join this sync.
                    try? await Task.sleep(for: settings.syncWindow)
                    if Task.isCancelled { break }
                }
                incrementalSync()
            }
        }
        logger.info("reconciler stopped: the kernel's table, the addresses and the rules stay as they are")
    }

    /// When the next full sync is due: after a failed one, its retry time (backoff), whatever else.
    private func nextFullSync(_ now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        if let retryAt = retries.fullSyncRetryAt { return retryAt }
        guard let lastFullSync else { return now }
        return lastFullSync + settings.driftCheckInterval
    }

    private func isIncrementalWorkDue(_ now: ContinuousClock.Instant) -> Bool {
        !drains.isEmpty || !retries.due(now).isEmpty
    }

    private func nextWakeUp() -> ContinuousClock.Instant? {
        guard desiredState != nil else { return nil }
        let now = ContinuousClock.now
        var deadlines = [nextFullSync(now)]
        if !drains.isEmpty {
            deadlines.append(now + settings.drainPollInterval)
            if let deadline = drains.nextDeadline(timeout: settings.drainTimeout) { deadlines.append(deadline) }
        }
        if let retry = retries.nextRetry { deadlines.append(retry) }
        return deadlines.min()
    }

    // MARK: - Syncs

    /// Dump, plan everything, apply: adopts what is there at start and repairs drift later.
    func fullSync() {
        guard let desiredState else { return }
        let started = ContinuousClock.now
        prepareNode(for: desiredState)
        let dump: [ServiceEntry]
        do {
            dump = try kernel.dumpTable()
            addresses.adopt(bound: try node.boundAddresses())
        } catch {
            let delay = retries.fullSyncFailed(now: .now)
            lastKernelError = "\(error)"
            kernelErrorSince = kernelErrorSince ?? Date()
            metrics.error(reason: "full_sync_read")
            logger.error(
                "full sync: cannot read the table: \(error) (retrying)",
                metadata: ["attempt": "\(retries.fullSyncFailures)", "retry_in": "\(delay)"])
            return
        }
        applied = Planner.index(dump)
        let dumpedDestinations = dump.reduce(0) { $0 + $1.destinations.count }
        if dumpedDestinations > metrics.destinationSeriesLimit {
            metrics.omitTraffic(destinations: dumpedDestinations)
        } else {
            let (rows, groupParts) = trafficLabeling().rows(of: dump)
            metrics.traffic(rows, groupParts: groupParts)
        }
        desiredTable = DesiredTable(desiredState, current: applied)
        bindAddresses(for: desiredState.services.keys)
        let planner = Planner(ownership: addresses.ownership, drainTimeout: settings.drainTimeout)
        let plan = planner.plan(desired: desiredTable, current: applied, drains: &drains, now: .now)
        let (operations, failed) = apply(plan, planned: Set(desiredTable.entries.keys).union(applied.keys))
        finishSync(changed: nil)
        // The model keeps what planning needs, not the dump's counters (draining services are read
        // back one by one with theirs): 100,000 destinations' statistics are ~10 MB.
        applied = applied.mapValues(\.withoutStatistics)
        let pending = pendingSince
        pendingKeys = []
        pendingSince = nil
        lastFullSync = .now
        retries.fullSyncSucceeded()
        // The table was read and programmed: an earlier read failure is history, not the state now.
        lastKernelError = nil
        kernelErrorSince = nil
        let report = SyncReport(
            kind: .full, at: Date(), duration: ContinuousClock.now - started, operations: operations, failed: failed)
        record(report, pendingSince: pending)
        lastFullSyncReport = report
        // The dump, the plan and (the first time) the parsed input were large and are gone: give
        // their memory back rather than keep it resident until the next full sync reuses it.
        _ = canary_heap_trim()
        if !ready {
            ready = true
            metrics.ready(true)
            logger.info(
                "first full sync done: ready",
                metadata: [
                    "services": "\(applied.keys.filter(addresses.ownership.owns).count)", "operations": "\(operations)",
                    "adopted": "\(dump.count)",
                ])
        }
    }

    /// Plans and applies the changed services, those draining and those due for a retry, against
    /// the table as last applied.
    func incrementalSync() {
        guard let desiredState else { return }
        let started = ContinuousClock.now
        var keys = pendingKeys
        let pending = pendingSince
        pendingKeys = []
        pendingSince = nil
        let due = retries.due(started)
        keys.formUnion(due)
        keys.formUnion(drains.serviceKeys)
        if !ipv6Prepared, keys.contains(where: { $0.family == .inet6 && desiredState.services[$0] != nil }) {
            prepareNode(for: desiredState)
        }

        for key in keys {
            if let service = desiredState.services[key] {
                desiredTable.update(service, kernelOrder: applied[key]?.destinations.map(\.address))
            } else {
                desiredTable.remove(key)
            }
        }
        // Draining and failed services: read them back, for their connection counts and for what
        // the kernel really holds after a refusal.
        for key in Set(drains.serviceKeys).union(due) {
            readBack(key)
        }
        bindAddresses(for: keys.filter { desiredState.services[$0] != nil })
        let planner = Planner(ownership: addresses.ownership, drainTimeout: settings.drainTimeout)
        let plan = planner.plan(changed: keys, desired: desiredTable, current: applied, drains: &drains, now: .now)
        let (operations, failed) = apply(plan, planned: keys)
        finishSync(changed: keys)
        if operations > 0 || pending != nil {
            record(
                SyncReport(kind: .incremental, at: Date(), duration: ContinuousClock.now - started, operations: operations, failed: failed),
                pendingSince: pending)
        }
    }

    private func record(_ report: SyncReport, pendingSince: ContinuousClock.Instant?) {
        lastSync = report
        metrics.syncDuration(report.duration, kind: report.kind)
        if let pendingSince { metrics.eventToKernel(ContinuousClock.now - pendingSince) }
        if report.operations > 0 {
            logger.info(
                "\(report.kind.rawValue) sync: \(report.operations) operations, \(report.failed) failed",
                metadata: ["duration": "\(report.duration)"])
        }
    }

    /// Applies a plan: records what the kernel took in the model, counts the operations, and
    /// schedules a retry for each service with a refused operation. A planned service with no
    /// failure needs no retry, whether it had operations or not.
    private func apply(_ plan: Plan, planned keys: some Sequence<ServiceKey>) -> (operations: Int, failed: Int) {
        for key in plan.unownedDesiredServices where addresses.blockingAddress(of: key) == nil {
            logger.debug("service \(key) is on an address the agent does not hold: left alone")
        }
        var failedKeys: [ServiceKey: IPVSError] = [:]
        var failed = 0
        if !plan.operations.isEmpty {
            let results: [Result<Void, IPVSError>]
            do {
                results = try kernel.apply(plan.operations)
            } catch {
                results = Array(repeating: .failure(error), count: plan.operations.count)
            }
            Planner.record(plan.operations, results: results, into: &applied)
            var outcomes: [AgentMetrics.NetlinkOutcome: Int] = [:]
            for (operation, result) in zip(plan.operations, results) {
                guard case .failure(let error) = result else {
                    outcomes[AgentMetrics.NetlinkOutcome(operation: operation.kind, result: "ok"), default: 0] += 1
                    continue
                }
                failed += 1
                outcomes[AgentMetrics.NetlinkOutcome(operation: operation.kind, result: error.reason), default: 0] += 1
                metrics.error(reason: "kernel_\(error.reason)")
                failedKeys[operation.serviceKey] = failedKeys[operation.serviceKey] ?? error
                logger.warning(
                    "\(operation): \(error)",
                    metadata: ["service": "\(desiredState?.services[operation.serviceKey]?.name ?? "\(operation.serviceKey)")"])
            }
            metrics.netlinkOperations(outcomes)
        }
        let now = ContinuousClock.now
        for key in keys where failedKeys[key] == nil { retries.succeeded(key) }
        for (key, error) in failedKeys {
            retries.failed(key, error: "\(error)", now: now)
            // The model may be wrong about this service now: read what the kernel holds.
            readBack(key)
        }
        return (plan.operations.count, failed)
    }

    /// Reads one service back from the kernel into the model.
    private func readBack(_ key: ServiceKey) {
        do {
            applied[key] = try kernel.service(key)
        } catch {
            metrics.error(reason: "kernel_read")
            logger.warning("cannot read service \(key) back: \(error)")
        }
    }

    // MARK: - Node

    private func prepareNode(for state: DesiredState) {
        let ipv6 = state.services.keys.contains { $0.family == .inet6 }
        do {
            for change in try node.prepare(ipv6: ipv6) where !reportedNodeChanges.contains(change) {
                // A change is logged once; one that keeps coming back (a sysctl reset by someone, a
                // read-only /proc/sys) is not repeated at every drift check.
                reportedNodeChanges.insert(change)
                logger.notice("node: \(change)")
            }
            ipv6Prepared = ipv6Prepared || ipv6
        } catch {
            metrics.error(reason: "node_prepare")
            logger.error("node: \(error)")
        }
    }

    /// Binds the addresses the given desired services need (see `AddressBook`), and reports the
    /// addresses found to carry someone else's services.
    private func bindAddresses(for keys: some Sequence<ServiceKey>) {
        let binding = addresses.bind(for: keys, table: applied, node: node)
        for (address, others) in binding.newlyBlocked {
            metrics.error(reason: "address_in_use")
            logger.error(
                "address \(address) carries services canary-agent did not make (\(others.map(\.description).joined(separator: ", "))): its services are left alone")
        }
        for error in binding.errors {
            metrics.error(reason: "address_bind")
            logger.error("\(error)")
        }
    }

    /// After a sync of the changed services (nil: everything, at a full sync): releases the
    /// addresses no service uses, forgets the retries of services that are gone, and brings the
    /// masquerade rules up to date, in proportion to the change, not to the table.
    private func finishSync(changed keys: Set<ServiceKey>?) {
        guard let desiredState else { return }
        let release = addresses.release(changed: keys, desired: desiredState, table: applied, node: node)
        for error in release.errors {
            metrics.error(reason: "address_unbind")
            logger.error("\(error)")
        }
        if keys == nil {
            retries.forget { desiredState.services[$0] == nil && applied[$0] == nil }
        } else {
            for key in release.unused { retries.succeeded(key) }
        }

        let failure =
            if let keys {
                masquerade.update(keys, table: applied, ownership: addresses.ownership, node: node)
            } else {
                masquerade.syncAll(applied, ownership: addresses.ownership, node: node)
            }
        if let failure {
            metrics.error(reason: "masquerade_rules")
            logger.error("\(failure)\(keys == nil ? "" : " (rewritten at the next full sync)")")
        }
        masqueradeFailingSince.store(
            masquerade.failingSince.map { Self.nanoseconds($0 - clockOrigin) } ?? Int64.max, ordering: .releasing)
        metrics.programmed(services: masquerade.census.services, destinations: masquerade.census.destinations)
    }

    // MARK: - Health

    func expectTurn(by deadline: ContinuousClock.Instant?) {
        turnDeadline.store(deadline.map { Self.nanoseconds($0 - clockOrigin) } ?? Int64.max, ordering: .releasing)
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

extension ServiceEntry {
    /// The entry without the kernel's counters.
    var withoutStatistics: ServiceEntry {
        var entry = self
        entry.service.stats = nil
        for index in entry.destinations.indices { entry.destinations[index].stats = nil }
        return entry
    }
}
