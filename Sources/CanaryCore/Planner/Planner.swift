import IPVS

/// An IPVS table indexed by service key: a kernel dump (see `Planner.index(_:)`) or the table as
/// the agent last applied it (see `Planner.record(_:results:into:)`).
public typealias IPVSTableIndex = [ServiceKey: ServiceEntry]

/// The operations that take the kernel's table to the desired one, in the order to apply them.
public struct Plan: Hashable, Sendable {
    /// The operations, in order. Apply them in this order: see `Planner` for why.
    public var operations: [IPVSOperation]
    /// Desired services that were not programmed because the agent does not own their key
    /// (see `Ownership`), in key order.
    public var unownedDesiredServices: [ServiceKey]

    public init(operations: [IPVSOperation] = [], unownedDesiredServices: [ServiceKey] = []) {
        self.operations = operations
        self.unownedDesiredServices = unownedDesiredServices
    }

    /// True when there is nothing to do.
    public var isEmpty: Bool { operations.isEmpty }
}

/// Plans the fewest IPVS operations that take the current table to the desired one.
///
/// Pure: no kernel, no clock (the caller passes `now`), no cluster. The rules:
/// - **Ownership.** Only services the agent owns (`Ownership`) are touched. A service in the
///   kernel that is not owned is left exactly as it is, even when a desired service has its key;
///   such a desired service is reported in `Plan.unownedDesiredServices` and not programmed.
/// - **Edits, not replacements.** A scheduler, flag or persistence change is `editService`, never
///   delete + add (that would drop the service's established connections). A weight, forwarding
///   method or threshold change is `editDestination`.
/// - **Draining.** A destination that leaves the desired state is first edited to weight 0 (new
///   connections stop, established ones finish) and deleted in a later plan, once the current
///   table shows it at weight 0 with no active and no inactive connection, or once the drain
///   timeout has passed since it started draining (`DrainTracker`). A current table without
///   stats (the table as last applied) never shows a destination drained, so only the timeout
///   deletes it there. Destinations of UDP services are deleted at once: a UDP "connection" in
///   IPVS is only a timer that every datagram renews, so it would hold a weight-0 destination
///   until the timeout anyway (kube-proxy deletes UDP real servers at once for the same reason).
///   SCTP and TCP drain, as in kube-proxy; firewall-mark services, whose protocol is not known,
///   drain too. A draining destination that comes back is restored with `editDestination`, never
///   deleted and added again.
/// - **A service that leaves** drains the same way: its destinations go to weight 0 and are
///   deleted as they drain, and the service itself is deleted, with one `deleteService`, as soon
///   as every destination it still has may be deleted (at once for UDP and for a service with no
///   destination). Deleting it at once would cut its established connections: the kernel drops
///   the packets of a connection whose destination is gone.
/// - **Order.** Service adds and edits; destination adds; destination edits that keep or give
///   weight; drains (edits to weight 0); destination deletions; service deletions. New
///   destinations are thus live before old ones stop taking connections, and a service that has
///   a live destination keeps one after every single operation.
/// - **Incremental.** `plan(changed:...)` plans only the given services, by dictionary look-ups,
///   so one changed endpoint among 10,000 services costs O(that service), not O(table).
///
/// Destinations are added in the desired order (stable, then canary). The kernel puts each new
/// destination at the head of its list, so it lists them in reverse: the order `WeightSolver`
/// assumes when it is not told the kernel's order (it matters for sh's buckets and mh's last
/// round). Operations are grouped by the order above and, within a group, by service key order.
public struct Planner: Sendable {
    /// Which services the planner may touch.
    public var ownership: Ownership
    /// How long a leaving destination may hold connections before it is deleted anyway.
    public var drainTimeout: Duration

    public init(ownership: Ownership, drainTimeout: Duration) {
        self.ownership = ownership
        self.drainTimeout = drainTimeout
    }

    /// Plans every service: those desired, those owned in the current table, and those with a
    /// destination still draining.
    public func plan(
        desired: DesiredTable, current: IPVSTableIndex, drains: inout DrainTracker, now: ContinuousClock.Instant
    ) -> Plan {
        plan(desired: desired.entries, current: current, drains: &drains, now: now)
    }

    /// Plans every service: those desired, those owned in the current table, and those with a
    /// destination still draining. Each desired entry must hold a destination address once, as
    /// `DesiredTable` makes them.
    public func plan(
        desired: IPVSTableIndex, current: IPVSTableIndex, drains: inout DrainTracker, now: ContinuousClock.Instant
    ) -> Plan {
        var keys = Array(desired.keys)
        keys.reserveCapacity(desired.count + current.count)
        for key in current.keys where desired[key] == nil { keys.append(key) }
        for key in drains.serviceKeys where desired[key] == nil && current[key] == nil { keys.append(key) }
        keys.sort()
        var builder = PlanBuilder()
        // At least this many services and destinations are new: reserve for them at once rather
        // than grow (a full sync from an empty table is nearly all adds).
        builder.serviceChanges.reserveCapacity(max(0, desired.count - current.count))
        builder.destinationAdds.reserveCapacity(
            max(0, Self.destinationCount(desired) - Self.destinationCount(current))
                + max(0, desired.count - current.count))
        return plan(sortedUniqueKeys: keys, desired: desired, current: current, drains: &drains, now: now, into: builder)
    }

    private static func destinationCount(_ table: IPVSTableIndex) -> Int {
        table.values.reduce(0) { $0 + $1.destinations.count }
    }

    /// Plans only the given services, against indexed tables: the cost is that of the services
    /// named, whatever the size of the tables. Use it when a few services changed, and for the
    /// services with draining destinations (`DrainTracker.serviceKeys`).
    public func plan(
        changed keys: some Sequence<ServiceKey>, desired: DesiredTable, current: IPVSTableIndex,
        drains: inout DrainTracker, now: ContinuousClock.Instant
    ) -> Plan {
        plan(changed: keys, desired: desired.entries, current: current, drains: &drains, now: now)
    }

    /// Plans only the given services, against indexed tables: the cost is that of the services
    /// named, whatever the size of the tables.
    public func plan(
        changed keys: some Sequence<ServiceKey>, desired: IPVSTableIndex, current: IPVSTableIndex,
        drains: inout DrainTracker, now: ContinuousClock.Instant
    ) -> Plan {
        var unique = Array(Set(keys))
        unique.sort()
        return plan(
            sortedUniqueKeys: unique, desired: desired, current: current, drains: &drains, now: now,
            into: PlanBuilder())
    }

    private func plan(
        sortedUniqueKeys keys: [ServiceKey], desired: IPVSTableIndex, current: IPVSTableIndex,
        drains: inout DrainTracker, now: ContinuousClock.Instant, into builder: consuming PlanBuilder
    ) -> Plan {
        for key in keys {
            planService(key, desired: desired[key], current: current[key], drains: &drains, now: now, into: &builder)
        }
        return builder.finish()
    }

    // MARK: - One service

    private func planService(
        _ key: ServiceKey, desired: ServiceEntry?, current: ServiceEntry?, drains: inout DrainTracker,
        now: ContinuousClock.Instant, into builder: inout PlanBuilder
    ) {
        guard ownership.owns(key) else {
            if desired != nil { builder.unowned.append(key) }
            // No longer the agent's (its address was unbound): its drains are someone else's now.
            drains.stopAll(in: key)
            return
        }
        switch (desired, current) {
        case (nil, nil):
            drains.stopAll(in: key)
        case (let desired?, nil):
            builder.serviceChanges.append(.addService(desired.service))
            for destination in desired.destinations {
                builder.destinationAdds.append(.addDestination(key, destination))
            }
            drains.stopAll(in: key)
        case (let desired?, let current?):
            reconcile(key, desired: desired, current: current, drains: &drains, now: now, into: &builder)
        case (nil, let current?):
            remove(key, current: current, drains: &drains, now: now, into: &builder)
        }
    }

    /// A service both desired and in the kernel: edit what differs, add what is missing, drain
    /// what left.
    private func reconcile(
        _ key: ServiceKey, desired: ServiceEntry, current: ServiceEntry, drains: inout DrainTracker,
        now: ContinuousClock.Instant, into builder: inout PlanBuilder
    ) {
        if !current.service.hasSameConfiguration(as: desired.service) {
            builder.serviceChanges.append(.editService(desired.service))
        }
        let hasDrains = !drains.draining(in: key).isEmpty
        let currentIndex = DestinationIndex(current.destinations)
        var keptCount = 0
        for destination in desired.destinations {
            guard let existing = currentIndex.find(destination.address) else {
                builder.destinationAdds.append(.addDestination(key, destination))
                continue
            }
            keptCount += 1
            // Desired again: no longer leaving (restored just below if it was at weight 0).
            if hasDrains { drains.stop(destination.address, in: key) }
            if !existing.hasSameConfiguration(as: destination) {
                if destination.weight == 0 && existing.weight != 0 {
                    builder.destinationDrains.append(.editDestination(key, destination))
                } else {
                    builder.destinationEdits.append(.editDestination(key, destination))
                }
            }
        }
        // Every current destination is desired (addresses are unique): none is leaving.
        if keptCount < current.destinations.count {
            let desiredIndex = DestinationIndex(desired.destinations)
            for destination in current.destinations where desiredIndex.find(destination.address) == nil {
                switch departure(of: destination, in: key, drains: &drains, now: now) {
                case .delete:
                    builder.destinationDeletes.append(.deleteDestination(key, destination.address))
                    drains.stop(destination.address, in: key)
                case .drain:
                    builder.destinationDrains.append(.editDestination(key, Self.drained(destination)))
                case .wait:
                    break
                }
            }
        }
        if hasDrains { forgetVanished(in: key, current: currentIndex, drains: &drains) }
    }

    /// A service the agent owns that is no longer desired: drain it, then delete it.
    private func remove(
        _ key: ServiceKey, current: ServiceEntry, drains: inout DrainTracker, now: ContinuousClock.Instant,
        into builder: inout PlanBuilder
    ) {
        if current.destinations.isEmpty || Self.deletesAtOnce(key) {
            builder.serviceDeletes.append(.deleteService(key))
            drains.stopAll(in: key)
            return
        }
        var drainOperations: [IPVSOperation] = []
        var deletedAddresses: [SocketAddress] = []
        for destination in current.destinations {
            switch departure(of: destination, in: key, drains: &drains, now: now) {
            case .delete: deletedAddresses.append(destination.address)
            case .drain: drainOperations.append(.editDestination(key, Self.drained(destination)))
            case .wait: break
            }
        }
        if deletedAddresses.count == current.destinations.count {
            builder.serviceDeletes.append(.deleteService(key))
            drains.stopAll(in: key)
            return
        }
        builder.destinationDrains.append(contentsOf: drainOperations)
        for address in deletedAddresses {
            builder.destinationDeletes.append(.deleteDestination(key, address))
            drains.stop(address, in: key)
        }
        forgetVanished(in: key, current: DestinationIndex(current.destinations), drains: &drains)
    }

    // MARK: - Leaving destinations

    private enum Departure {
        /// Delete it now.
        case delete
        /// Set its weight to 0 and wait.
        case drain
        /// Already at weight 0, still holding connections: wait.
        case wait
    }

    /// What to do with a destination that is not desired, starting its drain if it had not.
    private func departure(
        of destination: Destination, in key: ServiceKey, drains: inout DrainTracker, now: ContinuousClock.Instant
    ) -> Departure {
        if Self.deletesAtOnce(key) { return .delete }
        let started = drains.start(destination.address, in: key, at: now)
        if started.duration(to: now) >= drainTimeout { return .delete }
        if destination.weight == 0 {
            return Self.hasNoConnections(destination) ? .delete : .wait
        }
        return .drain
    }

    /// Forgets drains of destinations that are no longer in the kernel's table.
    private func forgetVanished(in key: ServiceKey, current: DestinationIndex, drains: inout DrainTracker) {
        for address in drains.draining(in: key).keys where current.find(address) == nil {
            drains.stop(address, in: key)
        }
    }

    /// UDP destinations are deleted at once, without draining (see `Planner`).
    static func deletesAtOnce(_ key: ServiceKey) -> Bool {
        if case .inet(.udp, _) = key { return true }
        return false
    }

    /// True when the stats read from the kernel show no active and no inactive connection;
    /// false when there are no stats (the table as last applied): only the timeout tells then.
    static func hasNoConnections(_ destination: Destination) -> Bool {
        guard let stats = destination.stats else { return false }
        return stats.activeConnections == 0 && stats.inactiveConnections == 0
    }

    /// The destination at weight 0, to be sent as an edit.
    static func drained(_ destination: Destination) -> Destination {
        var drained = destination
        drained.weight = 0
        drained.stats = nil
        return drained
    }
}

// MARK: - Tables

extension Planner {
    /// Indexes a dump by service key (a key seen twice keeps its last entry).
    public static func index(_ dump: [ServiceEntry]) -> IPVSTableIndex {
        var table = IPVSTableIndex(minimumCapacity: dump.count)
        for entry in dump { table[entry.service.key] = entry }
        return table
    }

    /// Updates a table model with the operations that succeeded, as the kernel applies them:
    /// new destinations go to the head of their service's list. Use it to keep the table as the
    /// agent last applied it, for the next incremental plan; stats are not modelled.
    /// Operations without a result (fewer results than operations) are taken as not applied.
    public static func record(
        _ operations: [IPVSOperation], results: [Result<Void, IPVSError>], into table: inout IPVSTableIndex
    ) {
        for (operation, result) in zip(operations, results) {
            guard case .success = result else { continue }
            record(operation, into: &table)
        }
    }

    /// Updates a table model with one operation that the kernel accepted.
    public static func record(_ operation: IPVSOperation, into table: inout IPVSTableIndex) {
        switch operation {
        case .addService(let service):
            table[service.key] = ServiceEntry(service: service)
        case .editService(let service):
            table[service.key]?.service = service
        case .deleteService(let key):
            table[key] = nil
        case .addDestination(let key, let destination):
            table[key]?.destinations.insert(destination, at: 0)
        case .editDestination(let key, let destination):
            guard let position = table[key]?.destinations.firstIndex(where: { $0.address == destination.address })
            else { return }
            table[key]?.destinations[position] = destination
        case .deleteDestination(let key, let address):
            table[key]?.destinations.removeAll { $0.address == address }
        }
    }
}

// MARK: - Helpers

/// Operations collected by kind, concatenated in the planner's order at the end.
private struct PlanBuilder {
    var serviceChanges: [IPVSOperation] = []
    var destinationAdds: [IPVSOperation] = []
    var destinationEdits: [IPVSOperation] = []
    var destinationDrains: [IPVSOperation] = []
    var destinationDeletes: [IPVSOperation] = []
    var serviceDeletes: [IPVSOperation] = []
    var unowned: [ServiceKey] = []

    /// Concatenates the groups. The destination adds (nearly all of a full sync) become the
    /// result in place, with room reserved for the rest, so a large plan is held once, not twice.
    consuming func finish() -> Plan {
        var operations = destinationAdds
        destinationAdds = []
        operations.reserveCapacity(
            operations.count + serviceChanges.count + destinationEdits.count + destinationDrains.count
                + destinationDeletes.count + serviceDeletes.count)
        operations.insert(contentsOf: serviceChanges, at: 0)
        operations.append(contentsOf: destinationEdits)
        operations.append(contentsOf: destinationDrains)
        operations.append(contentsOf: destinationDeletes)
        operations.append(contentsOf: serviceDeletes)
        return Plan(operations: operations, unownedDesiredServices: unowned)
    }
}

/// Finds a service's destinations by address: by a linear scan in short lists, which is cheaper
/// than hashing, and through a dictionary in long ones.
private struct DestinationIndex {
    private static let linearLimit = 32
    let destinations: [Destination]
    let positions: [SocketAddress: Int]?

    init(_ destinations: [Destination]) {
        self.destinations = destinations
        if destinations.count > Self.linearLimit {
            var positions = [SocketAddress: Int](minimumCapacity: destinations.count)
            for (position, destination) in destinations.enumerated() where positions[destination.address] == nil {
                positions[destination.address] = position
            }
            self.positions = positions
        } else {
            positions = nil
        }
    }

    func find(_ address: SocketAddress) -> Destination? {
        if let positions {
            return positions[address].map { destinations[$0] }
        }
        return destinations.first { $0.address == address }
    }
}
