import CHeapTrim
import CanaryCore
import Foundation
import IPVS
import KubernetesClient
import Logging
import NodeNetwork
import Synchronization

/// Keeps the kernel's IPVS table, and the node's addresses and rules, equal to the desired state.
///
/// Event driven: a source's change rings the doorbell; the reconciler waits a short window
/// (`Settings.syncWindow`) so that a burst of changes becomes one plan, then plans and applies
/// only the services that changed, against its model of the table as last applied (no dump per
/// change). A full sync (dump, plan everything, repair) runs first, to adopt whatever the kernel
/// holds, and then every `driftCheckInterval`, so that a service deleted behind the agent's back
/// is back within that period. Services with draining destinations are read back from the kernel
/// every `drainPollInterval` until their connections are gone. A service whose operations the
/// kernel refuses is retried with exponential backoff; the other services go on.
///
/// The reconciler never flushes: it touches only the services it owns, those on the addresses of
/// its interface (see `Ownership`). It binds an address before programming the first service on
/// it, and only when the kernel has no service on that address already (someone else's); it
/// releases the address once no service of its own is left on it.
public actor Reconciler {
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

    /// A service the kernel refused, and when to try again.
    struct Failure: Sendable {
        var attempts: Int
        var error: String
        var retryAt: ContinuousClock.Instant
    }

    let kernel: any IPVSKernel
    let node: any NodePlumbing
    let settings: Settings
    let metrics: AgentMetrics
    let logger: Logger
    let sourceSummary: String
    private let doorbell = Doorbell()
    private let startedAt = Date()

    // What is asked for.
    private var desiredState: DesiredState?
    private var sourceProblems: [AgentProblem] = []
    private var sourceRejection: AgentProblem?
    private var sourceRejectedSince: Date?
    private var pendingKeys: Set<ServiceKey> = []
    private var pendingSince: ContinuousClock.Instant?

    // What the kernel and the node hold, as far as the agent knows.
    private var desiredTable = DesiredTable()
    private var applied: IPVSTableIndex = [:]
    private var drains = DrainTracker()
    private var bound: Set<IPAddress> = []
    private var blockedAddresses: [IPAddress: [ServiceKey]] = [:]
    private var failures: [ServiceKey: Failure] = [:]
    private var census = TableCensus()
    private var addressUse = AddressUse()
    /// Set when a hairpin update failed: the next full sync rewrites the set instead of trusting its size.
    private var masqueradeNeedsRewrite = true
    private var masqueradeCoversIPv6 = false
    private var lastFullSync: ContinuousClock.Instant?
    /// Set while full syncs fail: none is tried before this, however overdue the drift check is.
    private var fullSyncRetryAt: ContinuousClock.Instant?
    private var fullSyncFailures = 0
    private var ipv6Prepared = false
    private var reportedNodeChanges: Set<String> = []

    // What `status` reports.
    private var ready = false {
        didSet { readyFlag.store(ready, ordering: .releasing) }
    }
    /// `ready` for `isReady`, readable while the actor is busy (a full sync of 10,000 services takes
    /// seconds; a readiness probe must not wait for it).
    private nonisolated let readyFlag = Atomic<Bool>(false)
    /// Nanoseconds after `clockOrigin` by which the loop must have turned again (Int64.max while it
    /// waits for its first desired state): read by `/healthz` without waiting for the actor.
    private nonisolated let turnDeadline = Atomic<Int64>(Int64.max)
    private nonisolated let clockOrigin = ContinuousClock.now
    /// Nanoseconds after `clockOrigin` since which the masquerade rules keep failing; Int64.max: they work.
    private nonisolated let masqueradeFailingSince = Atomic<Int64>(Int64.max)
    /// The masquerade rules' or hairpin set's error while they keep failing, and since when.
    private var masqueradeError: AgentStatus.OngoingError?
    /// Since when the kernel's table cannot be read (with `lastKernelError`).
    private var kernelErrorSince: Date?
    private var lastSync: SyncReport?
    private var lastFullSyncReport: SyncReport?
    private var lastKernelError: String?

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
        case .desired(let state, let problems, let receivedAt, let hint):
            sourceRejection = nil
            sourceRejectedSince = nil
            sourceProblems = problems
            var changed = Set<ServiceKey>()
            if let hint, var current = desiredState {
                // The source says which services may differ: compare and take those only, into the
                // reconciler's own copy, in place (one change of 10,000 services costs one
                // comparison and no copy of the other 9,999).
                desiredState = nil
                changed = hint.filter { current.services[$0] != state.services[$0] }
                for key in changed { current.services[key] = state.services[key] }
                desiredState = current
            } else {
                let previous = desiredState ?? DesiredState()
                for (key, service) in state.services where previous.services[key] != service { changed.insert(key) }
                for key in previous.services.keys where state.services[key] == nil { changed.insert(key) }
                desiredState = state
            }
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
            if isFullSyncDue(now) {
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

    private func isFullSyncDue(_ now: ContinuousClock.Instant) -> Bool {
        now >= nextFullSync(now)
    }

    /// When the next full sync is due: after a failed one, its retry time (backoff), whatever else.
    private func nextFullSync(_ now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        if let fullSyncRetryAt { return fullSyncRetryAt }
        guard let lastFullSync else { return now }
        return lastFullSync + settings.driftCheckInterval
    }

    private func isIncrementalWorkDue(_ now: ContinuousClock.Instant) -> Bool {
        if !drains.isEmpty { return true }
        return failures.values.contains { $0.retryAt <= now }
    }

    private func nextWakeUp() -> ContinuousClock.Instant? {
        guard desiredState != nil else { return nil }
        let now = ContinuousClock.now
        var deadlines = [nextFullSync(now)]
        if !drains.isEmpty {
            deadlines.append(now + settings.drainPollInterval)
            if let deadline = drains.nextDeadline(timeout: settings.drainTimeout) { deadlines.append(deadline) }
        }
        if let retry = failures.values.map(\.retryAt).min() { deadlines.append(retry) }
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
            bound = try node.boundAddresses()
        } catch {
            let delay = settings.retryBackoff.delay(attempt: fullSyncFailures)
            fullSyncFailures += 1
            fullSyncRetryAt = .now + delay
            lastKernelError = "\(error)"
            kernelErrorSince = kernelErrorSince ?? Date()
            metrics.error(reason: "full_sync_read")
            logger.error(
                "full sync: cannot read the table: \(error) (retrying)",
                metadata: ["attempt": "\(fullSyncFailures)", "retry_in": "\(delay)"])
            return
        }
        applied = Planner.index(dump)
        let dumpedDestinations = dump.reduce(0) { $0 + $1.destinations.count }
        if dumpedDestinations > metrics.destinationSeriesLimit {
            metrics.omitTraffic(destinations: dumpedDestinations)
        } else {
            metrics.traffic(trafficLabeling().rows(of: dump))
        }
        desiredTable = DesiredTable(desiredState, current: applied)
        let keys = Set(desiredState.services.keys)
        bindAddresses(for: keys)
        let planner = Planner(ownership: ownership, drainTimeout: settings.drainTimeout)
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
        fullSyncRetryAt = nil
        fullSyncFailures = 0
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
                    "services": "\(applied.keys.filter(ownership.owns).count)", "operations": "\(operations)",
                    "adopted": "\(dump.count)",
                ])
        }
    }

    /// Plans and applies the changed services, those draining and those due for a retry, against
    /// the table as last applied.
    func incrementalSync() {
        guard let desiredState else { return }
        let started = ContinuousClock.now
        let now = ContinuousClock.now
        var keys = pendingKeys
        let pending = pendingSince
        pendingKeys = []
        pendingSince = nil
        let retries = failures.filter { $0.value.retryAt <= now }.map(\.key)
        keys.formUnion(retries)
        keys.formUnion(drains.serviceKeys)
        if desiredState.services.keys.contains(where: { $0.family == .inet6 }) { prepareNodeForIPv6() }

        for key in keys {
            if let service = desiredState.services[key] {
                desiredTable.update(service, kernelOrder: applied[key]?.destinations.map(\.address))
            } else {
                desiredTable.remove(key)
            }
        }
        // Draining and failed services: read them back, for their connection counts and for what
        // the kernel really holds after a refusal.
        for key in Set(drains.serviceKeys).union(retries) {
            do {
                applied[key] = try kernel.service(key)
            } catch {
                metrics.error(reason: "kernel_read")
                logger.warning("cannot read service \(key) back: \(error)")
            }
        }
        bindAddresses(for: keys.filter { desiredState.services[$0] != nil })
        let planner = Planner(ownership: ownership, drainTimeout: settings.drainTimeout)
        let plan = planner.plan(changed: keys, desired: desiredTable, current: applied, drains: &drains, now: .now)
        let (operations, failed) = apply(plan, planned: keys)
        finishSync(changed: keys)
        if operations > 0 || pending != nil {
            record(
                SyncReport(kind: .incremental, at: Date(), duration: ContinuousClock.now - started, operations: operations, failed: failed),
                pendingSince: pending)
        }
    }

    private var ownership: Ownership { Ownership(boundAddresses: bound) }

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

    /// Applies a plan, records what succeeded in the model, and tracks the failures per service.
    private func apply(_ plan: Plan, planned keys: some Sequence<ServiceKey>) -> (operations: Int, failed: Int) {
        let outcome = apply(plan)
        // A planned service with no failure now needs no retry, whether it had operations or not.
        for key in keys where !outcome.failedKeys.contains(key) { failures[key] = nil }
        return (outcome.operations, outcome.failed)
    }

    private func apply(_ plan: Plan) -> (operations: Int, failed: Int, failedKeys: Set<ServiceKey>) {
        for key in plan.unownedDesiredServices where blockedAddresses.values.allSatisfy({ !$0.contains(key) }) {
            logger.debug("service \(key) is on an address the agent does not hold: left alone")
        }
        guard !plan.operations.isEmpty else { return (0, 0, []) }
        let results: [Result<Void, IPVSError>]
        do {
            results = try kernel.apply(plan.operations)
        } catch {
            results = Array(repeating: .failure(error), count: plan.operations.count)
        }
        Planner.record(plan.operations, results: results, into: &applied)
        let now = ContinuousClock.now
        var failedKeys: [ServiceKey: IPVSError] = [:]
        var succeededKeys = Set<ServiceKey>()
        var outcomes: [AgentMetrics.NetlinkOutcome: Int] = [:]
        defer { metrics.netlinkOperations(outcomes) }
        for (operation, result) in zip(plan.operations, results) {
            switch result {
            case .success:
                outcomes[AgentMetrics.NetlinkOutcome(operation: operation.kind, result: "ok"), default: 0] += 1
                succeededKeys.insert(operation.serviceKey)
            case .failure(let error):
                outcomes[AgentMetrics.NetlinkOutcome(operation: operation.kind, result: error.reason), default: 0] += 1
                metrics.error(reason: "kernel_\(error.reason)")
                failedKeys[operation.serviceKey] = failedKeys[operation.serviceKey] ?? error
                logger.warning(
                    "\(operation): \(error)",
                    metadata: ["service": "\(desiredState?.services[operation.serviceKey]?.name ?? "\(operation.serviceKey)")"])
            }
        }
        for key in succeededKeys where failedKeys[key] == nil { failures[key] = nil }
        for (key, error) in failedKeys {
            let attempts = (failures[key]?.attempts ?? 0) + 1
            let backoff = settings.retryBackoff.delay(attempt: attempts - 1)
            failures[key] = Failure(attempts: attempts, error: "\(error)", retryAt: now + backoff)
            // The model may be wrong about this service now: read what the kernel holds.
            do {
                applied[key] = try kernel.service(key)
            } catch {
                logger.warning("cannot read service \(key) back: \(error)")
            }
        }
        let failed = results.count { if case .failure = $0 { true } else { false } }
        return (plan.operations.count, failed, Set(failedKeys.keys))
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

    private func prepareNodeForIPv6() {
        guard !ipv6Prepared, let desiredState else { return }
        prepareNode(for: desiredState)
    }

    /// Which addresses the given desired services need that are not bound yet: those the agent may
    /// claim, and those it may not because the table has services on them already (someone else's).
    public static func addressClaims(
        for keys: some Sequence<ServiceKey>, bound: Set<IPAddress>, table: IPVSTableIndex
    ) -> (claimable: Set<IPAddress>, blocked: [IPAddress: [ServiceKey]]) {
        var needed = Set<IPAddress>()
        for key in keys {
            guard case .inet(_, let socket) = key, !bound.contains(socket.address) else { continue }
            needed.insert(socket.address)
        }
        guard !needed.isEmpty else { return ([], [:]) }
        var blocked: [IPAddress: [ServiceKey]] = [:]
        for key in table.keys {
            guard case .inet(_, let socket) = key, needed.contains(socket.address) else { continue }
            blocked[socket.address, default: []].append(key)
        }
        return (needed.subtracting(blocked.keys), blocked.mapValues { $0.sorted() })
    }

    /// What a full sync would do now, without doing it (`canary-agent plan`).
    public static func previewPlan(
        desired: DesiredState, dump: [ServiceEntry], bound: Set<IPAddress>, drainTimeout: Duration = .seconds(300)
    ) -> Plan {
        let current = Planner.index(dump)
        let claims = addressClaims(for: desired.services.keys, bound: bound, table: current)
        let planner = Planner(ownership: Ownership(boundAddresses: bound.union(claims.claimable)), drainTimeout: drainTimeout)
        var drains = DrainTracker()
        return planner.plan(desired: DesiredTable(desired, current: current), current: current, drains: &drains, now: .now)
    }

    /// Binds the addresses the given desired services need, unless someone else's services are on
    /// an address already (then those desired services are left unprogrammed and reported).
    private func bindAddresses(for keys: some Sequence<ServiceKey>) {
        let claims = Self.addressClaims(for: keys, bound: bound, table: applied)
        for (address, others) in claims.blocked {
            if blockedAddresses[address] == nil {
                metrics.error(reason: "address_in_use")
                logger.error(
                    "address \(address) carries services canary-agent did not make (\(others.map(\.description).joined(separator: ", "))): its services are left alone")
            }
            blockedAddresses[address] = others
        }
        let addresses = claims.claimable.sorted()
        guard !addresses.isEmpty else { return }
        let results: [Result<Void, NodeNetworkError>]
        do {
            results = try node.bind(addresses)
        } catch {
            results = Array(repeating: .failure(error), count: addresses.count)
        }
        for (address, result) in zip(addresses, results) {
            switch result {
            case .success:
                bound.insert(address)
                blockedAddresses[address] = nil
            case .failure(let error):
                metrics.error(reason: "address_bind")
                logger.error("\(error)")
            }
        }
    }

    /// Releases addresses no desired or remaining service uses, and brings the census and the
    /// masquerade rules up to date: for the changed services only (nil: everything, at a full sync),
    /// so that one change costs work in proportion to it, not to the table.
    private func finishSync(changed keys: Set<ServiceKey>?) {
        guard let desiredState else { return }
        var released: [IPAddress]
        if let keys {
            var candidates = Set<IPAddress>()
            for key in keys {
                let inUse = desiredState.services[key] != nil || applied[key] != nil
                addressUse.update(key, inUse: inUse)
                if !inUse, case .inet(_, let socket) = key { candidates.insert(socket.address) }
                if !inUse { failures[key] = nil }
            }
            released = candidates.filter { bound.contains($0) && !addressUse.isUsed($0) }.sorted()
        } else {
            addressUse = AddressUse(Set(desiredState.services.keys).union(applied.keys))
            released = bound.filter { !addressUse.isUsed($0) }.sorted()
            failures = failures.filter { desiredState.services[$0.key] != nil || applied[$0.key] != nil }
        }
        for address in released {
            do {
                try node.unbind(address)
                bound.remove(address)
            } catch {
                metrics.error(reason: "address_unbind")
                logger.error("\(error)")
            }
        }
        if !blockedAddresses.isEmpty {
            let desiredAddresses = Set(desiredState.services.keys.compactMap { key -> IPAddress? in
                if case .inet(_, let socket) = key { socket.address } else { nil }
            })
            blockedAddresses = blockedAddresses.filter { desiredAddresses.contains($0.key) }
        }

        let ownership = ownership
        if let keys {
            var touched = Set<IPAddress>()
            for key in keys {
                let change = census.update(key, ownership.owns(key) ? applied[key] : nil)
                touched.formUnion(change.added)
                touched.formUnion(change.removed)
            }
            let adding = touched.filter(census.isMasqueraded)
            if !masqueradeCoversIPv6, adding.contains(where: { $0.family == .inet6 }) {
                syncMasquerade()  // the first IPv6 endpoint: the IPv6 set and rules come first
            } else if !touched.isEmpty {
                do {
                    try node.updateMasquerade(adding: adding, removing: touched.subtracting(adding))
                } catch {
                    masqueradeNeedsRewrite = true
                    masqueradeFailed(error)
                    logger.error("\(error) (rewritten at the next full sync)")
                }
            }
        } else {
            census = TableCensus(applied, owns: ownership.owns)
            syncMasquerade()
        }
        metrics.programmed(services: census.services, destinations: census.destinations)
    }

    private func syncMasquerade() {
        let endpoints = census.masqueradedEndpoints
        do {
            try node.syncMasquerade(endpoints: endpoints, rewrite: masqueradeNeedsRewrite)
            masqueradeNeedsRewrite = false
            masqueradeCoversIPv6 = endpoints.contains { $0.family == .inet6 }
            // The rules and the set were written whole: an earlier failure is repaired.
            masqueradeError = nil
            masqueradeFailingSince.store(Int64.max, ordering: .releasing)
        } catch {
            masqueradeNeedsRewrite = true
            masqueradeFailed(error)
            logger.error("\(error)")
        }
    }

    private func masqueradeFailed(_ error: any Error) {
        metrics.error(reason: "masquerade_rules")
        if masqueradeError == nil {
            masqueradeFailingSince.store(Self.nanoseconds(ContinuousClock.now - clockOrigin), ordering: .releasing)
        }
        masqueradeError = AgentStatus.OngoingError(message: "\(error)", since: masqueradeError?.since ?? Date())
    }

    // MARK: - Metrics

    /// What labels the kernel's per-destination counters: which services are the agent's and
    /// what each destination is to them. The HTTP endpoint reads the counters outside the
    /// reconciler (a dump of a large table takes seconds) and labels them with this.
    public func trafficLabeling() -> TrafficLabeling {
        TrafficLabeling(
            ready: ready, ownership: ownership, desired: desiredState ?? DesiredState(), destinations: census.destinations)
    }

    /// The target and effective canary share of each desired service, for the scrape.
    public func shareRows() -> [AgentMetrics.ShareRow] {
        guard let desiredState else { return [] }
        return desiredState.services.compactMap { key, service in
            guard let assignment = desiredTable.assignments[key] else { return nil }
            return AgentMetrics.ShareRow(
                service: service.name, target: service.canaryShare.fraction, effective: assignment.effectiveCanaryShare)
        }.sorted { $0.service < $1.service }
    }

    // MARK: - Status

    /// What `canary-agent status` shows.
    public func status() -> AgentStatus {
        let state = desiredState ?? DesiredState()
        let blocked = Dictionary(
            blockedAddresses.flatMap { address, _ in
                state.services.keys.filter { if case .inet(_, let s) = $0 { s.address == address } else { false } }
                    .map { ($0, address) }
            }, uniquingKeysWith: { first, _ in first })
        let services = state.services.values.sorted { $0.key < $1.key }.map { service in
            let assignment = desiredTable.assignments[service.key]
            var error = failures[service.key]?.error
            if let address = blocked[service.key] {
                error = "address \(address) carries services canary-agent did not make: left alone"
            }
            let problems = sourceProblems.filter { problem in
                let object = problem.object.split(separator: " ", maxSplits: 1).last.map(String.init) ?? problem.object
                return service.name == object || service.name.hasPrefix(object + ":")
            }
            return AgentStatus.Service(
                name: service.name, service: "\(service.key)", scheduler: service.scheduler.rawValue,
                targetCanaryShare: service.canaryShare.fraction, effectiveCanaryShare: assignment?.effectiveCanaryShare,
                stable: service.stable.map(\.description), canary: service.canary.map(\.description),
                programmed: applied[service.key] != nil && ownership.owns(service.key), error: error,
                problems: problems)
        }
        return AgentStatus(
            source: sourceSummary, ready: ready, startedAt: startedAt, lastSync: lastSync, lastFullSync: lastFullSyncReport,
            services: services, problems: sourceProblems, sourceError: sourceRejection, sourceErrorSince: sourceRejectedSince,
            kernelError: lastKernelError,
            kernelErrorSince: kernelErrorSince, masqueradeError: masqueradeError,
            addresses: bound.sorted().map(\.description),
            drainingDestinations: drains.count)
    }

    /// True once the first full sync is done.
    public nonisolated var isReady: Bool { readyFlag.load(ordering: .acquiring) }

    /// How long the masquerade rules have kept failing, when that is longer than
    /// `Settings.degradedAfter`: the node is then not ready.
    public nonisolated var masqueradeDegradedFor: Duration? {
        let since = masqueradeFailingSince.load(ordering: .acquiring)
        guard since != Int64.max else { return nil }
        let failing = Duration.nanoseconds(Self.nanoseconds(ContinuousClock.now - clockOrigin) - since)
        return failing > settings.degradedAfter ? failing : nil
    }

    /// False when the loop is stuck: a sync (a kernel call, a command) or a wait has run past its
    /// deadline by more than `Settings.stallTimeout`. True while it waits for its first desired state.
    public nonisolated var isLive: Bool { stalledFor == nil }

    /// How long past its deadline the loop is, when it is.
    public nonisolated var stalledFor: Duration? {
        let deadline = turnDeadline.load(ordering: .acquiring)
        guard deadline != Int64.max else { return nil }
        let now = Self.nanoseconds(ContinuousClock.now - clockOrigin)
        return now > deadline ? .nanoseconds(now - deadline) + settings.stallTimeout : nil
    }

    private func expectTurn(by deadline: ContinuousClock.Instant?) {
        turnDeadline.store(deadline.map { Self.nanoseconds($0 - clockOrigin) } ?? Int64.max, ordering: .releasing)
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    /// The desired state as the agent holds it now (for `canary-agent plan` and `explain`).
    public func currentDesiredState() -> DesiredState? { desiredState }
}

extension IPVSError {
    /// A short, stable reason for metrics labels.
    public var reason: String {
        switch self {
        case .notAvailable: "not_available"
        case .serviceExists: "service_exists"
        case .serviceNotFound: "service_not_found"
        case .destinationExists: "destination_exists"
        case .destinationNotFound: "destination_not_found"
        case .unknownScheduler: "unknown_scheduler"
        case .invalidArgument: "invalid_argument"
        case .kernel: "kernel_error"
        case .socket: "socket_error"
        case .netlinkLibrary: "netlink_library"
        case .malformedMessage: "malformed_message"
        case .permissionDenied: "permission_denied"
        }
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
