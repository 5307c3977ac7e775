import CanaryCore
import Foundation
import IPVS

/// What the reconciler shows: `status`, the scrape's rows, the probes, and the CLI's preview.
extension Reconciler {
    // MARK: - Metrics

    /// What labels the kernel's per-destination counters: which services are the agent's and
    /// what each destination is to them. The HTTP endpoint reads the counters outside the
    /// reconciler (a dump of a large table takes seconds) and labels them with this.
    public func trafficLabeling() -> TrafficLabeling {
        TrafficLabeling(
            ready: ready, ownership: addresses.ownership, desired: desiredState ?? DesiredState(),
            destinations: masquerade.census.destinations)
    }

    /// The target and effective shares of each desired service and its groups, for the scrape.
    public func shareRows() -> [AgentMetrics.ShareRow] {
        guard let desiredState else { return [] }
        return desiredState.services.compactMap { key, service in
            guard let assignment = desiredTable.assignments[key] else { return nil }
            return AgentMetrics.ShareRow(
                service: service.name, target: service.canaryShare.fraction, effective: assignment.effectiveCanaryShare,
                groups: assignment.groups, refuses: assignment.refusesNewConnections)
        }.sorted { $0.service < $1.service }
    }

    // MARK: - Status

    /// What `canary-agent status` shows. A service's problems are those of the object it comes
    /// from, found by its origin.
    public func status() -> AgentStatus {
        let state = desiredState ?? DesiredState()
        let problemsByObject = Dictionary(grouping: sourceProblems, by: \.object)
        let ownership = addresses.ownership
        let services = state.services.values.sorted { $0.key < $1.key }.map { service in
            var error = retries.failures[service.key]?.error
            if let address = addresses.blockingAddress(of: service.key) {
                error = "address \(address) carries services canary-agent did not make: left alone"
            }
            return AgentStatus.Service(
                name: service.name, origin: service.origin, service: "\(service.key)", scheduler: service.scheduler.rawValue,
                targetCanaryShare: service.canaryShare.fraction,
                effectiveCanaryShare: desiredTable.assignments[service.key]?.effectiveCanaryShare,
                stable: service.stable.map(\.description), canary: service.canary.map(\.description),
                groups: desiredTable.assignments[service.key]?.groups,
                refusesNewConnections: desiredTable.assignments[service.key]?.refusesNewConnections,
                programmed: applied[service.key] != nil && ownership.owns(service.key), error: error,
                problems: (problemsByObject[service.origin.object] ?? []) + (service.origin.route.flatMap { problemsByObject[$0] } ?? []))
        }
        return AgentStatus(
            source: sourceSummary, ready: ready, startedAt: startedAt, lastSync: lastSync, lastFullSync: lastFullSyncReport,
            services: services, problems: sourceProblems, sourceError: sourceRejection, sourceErrorSince: sourceRejectedSince,
            sourceUnavailable: sourceUnavailable,
            kernelError: lastKernelError, kernelErrorSince: kernelErrorSince, masqueradeError: masquerade.error,
            addresses: addresses.bound.sorted().map(\.description), drainingDestinations: drains.count)
    }

    /// The desired state as the agent holds it now (for `canary-agent plan` and `explain`).
    public func currentDesiredState() -> DesiredState? { desiredState }

    /// What a full sync would do now, without doing it (`canary-agent plan`).
    public static func previewPlan(
        desired: DesiredState, dump: [ServiceEntry], bound: Set<IPAddress>, drainTimeout: Duration = .seconds(300)
    ) -> Plan {
        let current = Planner.index(dump)
        let claims = AddressBook.claims(for: desired.services.keys, bound: bound, table: current)
        let planner = Planner(ownership: Ownership(boundAddresses: bound.union(claims.claimable)), drainTimeout: drainTimeout)
        var drains = DrainTracker()
        return planner.plan(desired: DesiredTable(desired, current: current), current: current, drains: &drains, now: .now)
    }

    // MARK: - Probes (read without waiting for the actor)

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

    /// How long the source has been unable to read its input (the API server out of reach), when that
    /// is longer than `Settings.degradedAfter`: the node is then not ready (its table may be stale).
    public nonisolated var sourceUnavailableFor: Duration? {
        let since = sourceFailingSince.load(ordering: .acquiring)
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
