import IPVS
import IPVSTestSupport
import Testing

@testable import CanaryCore

/// Addresses, keys and tables the planner tests share.
enum PlannerFixture {
    static let t0 = ContinuousClock.now
    static let timeout = Duration.seconds(60)

    /// 10.96.0.`host`: addresses the agent binds.
    static func virtualAddress(_ host: UInt8) -> IPAddress { ipv4(10, 96, 0, host) }
    /// 10.0.0.`host`: an address the agent did not bind (kube-proxy's, say).
    static func foreignAddress(_ host: UInt8) -> IPAddress { ipv4(10, 0, 0, host) }

    static func ipv4(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> IPAddress {
        guard let address = IPAddress(bytes: [a, b, c, d]) else { preconditionFailure("four bytes make an IPv4 address") }
        return address
    }

    /// Endpoint 10.1.0.`host`:8080.
    static func backend(_ host: UInt8) -> SocketAddress { SocketAddress(address: ipv4(10, 1, 0, host), port: 8080) }

    static func key(_ proto: IPProtocol = .tcp, host: UInt8 = 1, port: UInt16 = 80) -> ServiceKey {
        .inet(proto, SocketAddress(address: virtualAddress(host), port: port))
    }

    static func foreignKey(_ proto: IPProtocol = .tcp, host: UInt8 = 1, port: UInt16 = 80) -> ServiceKey {
        .inet(proto, SocketAddress(address: foreignAddress(host), port: port))
    }

    /// The agent owns 10.96.0.1 ... 10.96.0.9, and firewall mark 1.
    static let ownership = Ownership(
        boundAddresses: Set((1...9).map { virtualAddress($0) }), services: [.firewallMark(1, .inet)])

    static let planner = Planner(ownership: ownership, drainTimeout: timeout)

    static func destination(_ host: UInt8, weight: Int32 = 1, forwarding: ForwardingMethod = .masquerade)
        -> Destination
    {
        Destination(address: backend(host), forwarding: forwarding, weight: weight)
    }

    static func entry(
        _ key: ServiceKey, scheduler: Scheduler = .weightedRoundRobin, flags: ServiceFlags = [],
        _ destinations: [Destination]
    ) -> ServiceEntry {
        ServiceEntry(service: VirtualService(key: key, scheduler: scheduler, flags: flags), destinations: destinations)
    }

    static func table(_ entries: ServiceEntry...) -> IPVSTableIndex { Planner.index(entries) }

    /// Connection counters as a dump shows them.
    static func stats(active: UInt32, inactive: UInt32) -> DestinationStats {
        var stats = DestinationStats()
        stats.activeConnections = active
        stats.inactiveConnections = inactive
        return stats
    }

    /// Plans with a fresh drain tracker at `t0`.
    static func plan(
        desired: IPVSTableIndex, current: IPVSTableIndex, planner: Planner = planner
    ) -> (plan: Plan, drains: DrainTracker) {
        var drains = DrainTracker()
        let plan = planner.plan(desired: desired, current: current, drains: &drains, now: t0)
        return (plan, drains)
    }

    /// A service's destinations as address → destination, stats and order aside.
    static func configuration(_ entry: ServiceEntry?) -> [SocketAddress: Destination] {
        var result: [SocketAddress: Destination] = [:]
        for var destination in entry?.destinations ?? [] {
            destination.stats = nil
            result[destination.address] = destination
        }
        return result
    }
}

@Suite("Planner rules")
struct PlannerTests {
    typealias F = PlannerFixture

    // MARK: Adding

    @Test("A new service is added, then its destinations in order; the kernel lists them in reverse")
    func newService() throws {
        let key = F.key()
        let desired = F.entry(key, [F.destination(1), F.destination(2, weight: 3), F.destination(3)])
        let (plan, _) = F.plan(desired: F.table(desired), current: [:])
        #expect(
            plan.operations == [
                .addService(desired.service),
                .addDestination(key, F.destination(1)),
                .addDestination(key, F.destination(2, weight: 3)),
                .addDestination(key, F.destination(3)),
            ])

        let kernel = InMemoryIPVS()
        let results = try kernel.apply(plan.operations)
        #expect(results.allSatisfy { if case .success = $0 { true } else { false } })
        let dumped = try kernel.dumpTable()
        #expect(dumped.first?.destinations.map(\.address) == [F.backend(3), F.backend(2), F.backend(1)])
    }

    @Test("The desired table planned against itself, as dumped, gives nothing")
    func nothingToDo() throws {
        let desired = F.table(
            F.entry(F.key(host: 1), scheduler: .sourceHashing, flags: .shFallback, [F.destination(1), F.destination(2)]),
            F.entry(F.key(.udp, host: 2), [F.destination(3, weight: 7)]))
        let kernel = InMemoryIPVS(Array(desired.values))
        kernel.setConnections(active: 4, inactive: 2, of: F.backend(1), in: F.key(host: 1))
        let (plan, drains) = F.plan(desired: desired, current: Planner.index(try kernel.dumpTable()))
        #expect(plan.isEmpty)
        #expect(drains.isEmpty)
    }

    // MARK: Editing

    static let serviceChanges: [(String, VirtualService, VirtualService)] = {
        let key = PlannerFixture.key()
        let base = VirtualService(key: key, scheduler: .weightedRoundRobin)
        var scheduler = base
        scheduler.scheduler = .sourceHashing
        scheduler.flags = .shFallback
        var flag = base
        flag.flags = .shPort
        var persistent = base
        persistent.flags = .persistent
        persistent.timeout = 300
        var timeout = persistent
        timeout.timeout = 600
        var netmask = persistent
        netmask.netmask = 0xFFFF_FF00
        return [
            ("scheduler", base, scheduler), ("flag", base, flag), ("persistence on", base, persistent),
            ("persistence off", persistent, base), ("persistence timeout", persistent, timeout),
            ("persistence netmask", persistent, netmask),
        ]
    }()

    @Test("A scheduler, flag or persistence change is one editService, never delete + add", arguments: serviceChanges)
    func serviceChange(_ change: (name: String, from: VirtualService, to: VirtualService)) {
        let destinations = [F.destination(1), F.destination(2)]
        let current = F.table(ServiceEntry(service: change.from, destinations: destinations))
        let desired = F.table(ServiceEntry(service: change.to, destinations: destinations))
        let (plan, _) = F.plan(desired: desired, current: current)
        #expect(plan.operations == [.editService(change.to)], "\(change.name)")
    }

    @Test("A timeout or netmask that differs on a service that is not persistent is no change")
    func persistenceFieldsIgnoredWithoutPersistence() {
        let key = F.key()
        var current = VirtualService(key: key, scheduler: .roundRobin)
        current.timeout = 300
        current.netmask = 0xFFFF_0000
        let desired = VirtualService(key: key, scheduler: .roundRobin)
        let (plan, _) = F.plan(
            desired: F.table(ServiceEntry(service: desired, destinations: [F.destination(1)])),
            current: F.table(ServiceEntry(service: current, destinations: [F.destination(1)])))
        #expect(plan.isEmpty)
    }

    static let destinationChanges: [(String, Destination, Destination)] = [
        ("weight", PlannerFixture.destination(1, weight: 1), PlannerFixture.destination(1, weight: 9)),
        (
            "forwarding", PlannerFixture.destination(1, forwarding: .masquerade),
            PlannerFixture.destination(1, forwarding: .directRoute)
        ),
        (
            "threshold", Destination(address: PlannerFixture.backend(1), weight: 1, upperThreshold: 100),
            PlannerFixture.destination(1)
        ),
    ]

    @Test("A weight, forwarding or threshold change is one editDestination", arguments: destinationChanges)
    func destinationChange(_ change: (name: String, from: Destination, to: Destination)) {
        let key = F.key()
        let (plan, _) = F.plan(
            desired: F.table(F.entry(key, [change.to, F.destination(2)])),
            current: F.table(F.entry(key, [change.from, F.destination(2)])))
        #expect(plan.operations == [.editDestination(key, change.to)], "\(change.name)")
    }

    // MARK: Draining

    @Test("A leaving TCP destination goes to weight 0 first and its drain start is recorded")
    func leavingDestinationDrains() {
        let key = F.key()
        let (plan, drains) = F.plan(
            desired: F.table(F.entry(key, [F.destination(1)])),
            current: F.table(F.entry(key, [F.destination(1), F.destination(2, weight: 5)])))
        #expect(plan.operations == [.editDestination(key, F.destination(2, weight: 0))])
        #expect(drains.drainStart(of: F.backend(2), in: key) == F.t0)
        #expect(drains.count == 1)
    }

    /// (active, inactive, seconds since the drain started, stats known, deleted?)
    static let drainCases: [(UInt32, UInt32, Int64, Bool, Bool)] = [
        (0, 0, 1, true, true),  // drained: deleted
        (3, 0, 1, true, false),  // active connections: wait
        (0, 2, 1, true, false),  // inactive connections: wait
        (3, 2, 59, true, false),  // just before the timeout: wait
        (3, 2, 60, true, true),  // timeout passed: deleted anyway
        (0, 0, 1, false, false),  // no stats (table as last applied): only the timeout tells
        (0, 0, 61, false, true),
    ]

    @Test("A destination at weight 0 is deleted when drained or when the drain times out", arguments: drainCases)
    func drainCompletion(_ drainCase: (active: UInt32, inactive: UInt32, elapsed: Int64, hasStats: Bool, deleted: Bool)) {
        let key = F.key()
        var draining = F.destination(2, weight: 0)
        if drainCase.hasStats { draining.stats = F.stats(active: drainCase.active, inactive: drainCase.inactive) }
        var drains = DrainTracker()
        // The plan that started the drain.
        _ = F.planner.plan(
            desired: F.table(F.entry(key, [F.destination(1)])),
            current: F.table(F.entry(key, [F.destination(1), F.destination(2)])), drains: &drains, now: F.t0)
        let plan = F.planner.plan(
            desired: F.table(F.entry(key, [F.destination(1)])),
            current: F.table(F.entry(key, [F.destination(1), draining])), drains: &drains,
            now: F.t0 + .seconds(drainCase.elapsed))
        if drainCase.deleted {
            #expect(plan.operations == [.deleteDestination(key, F.backend(2))])
            #expect(drains.isEmpty)
        } else {
            #expect(plan.isEmpty)
            #expect(drains.drainStart(of: F.backend(2), in: key) == F.t0)
        }
    }

    @Test("A drain timeout of zero deletes a leaving destination at once")
    func zeroTimeout() {
        let key = F.key()
        let planner = Planner(ownership: F.ownership, drainTimeout: .zero)
        let (plan, drains) = F.plan(
            desired: F.table(F.entry(key, [F.destination(1)])),
            current: F.table(F.entry(key, [F.destination(1), F.destination(2)])), planner: planner)
        #expect(plan.operations == [.deleteDestination(key, F.backend(2))])
        #expect(drains.isEmpty)
    }

    @Test(
        "UDP destinations are deleted at once; TCP, SCTP and firewall-mark ones drain",
        arguments: [
            (PlannerFixture.key(.udp), true), (PlannerFixture.key(.tcp), false), (PlannerFixture.key(.sctp), false),
            (ServiceKey.firewallMark(1, .inet), false),
        ])
    func protocolDrain(key: ServiceKey, deletedAtOnce: Bool) {
        let (plan, drains) = F.plan(
            desired: F.table(F.entry(key, [F.destination(1)])),
            current: F.table(F.entry(key, [F.destination(1), F.destination(2)])))
        if deletedAtOnce {
            #expect(plan.operations == [.deleteDestination(key, F.backend(2))])
            #expect(drains.isEmpty)
        } else {
            #expect(plan.operations == [.editDestination(key, F.destination(2, weight: 0))])
            #expect(drains.count == 1)
        }
    }

    @Test("A destination that comes back while draining is restored by an edit, not added again")
    func comesBackWhileDraining() throws {
        let key = F.key()
        let kernel = InMemoryIPVS([F.entry(key, [F.destination(1), F.destination(2, weight: 4)])])
        var drains = DrainTracker()
        let leave = F.planner.plan(
            desired: F.table(F.entry(key, [F.destination(1)])), current: Planner.index(try kernel.dumpTable()),
            drains: &drains, now: F.t0)
        _ = try kernel.apply(leave.operations)
        kernel.setConnections(active: 5, inactive: 0, of: F.backend(2), in: key)

        let back = F.planner.plan(
            desired: F.table(F.entry(key, [F.destination(1), F.destination(2, weight: 4)])),
            current: Planner.index(try kernel.dumpTable()), drains: &drains, now: F.t0 + .seconds(5))
        #expect(back.operations == [.editDestination(key, F.destination(2, weight: 4))])
        #expect(drains.isEmpty)
        let results = try kernel.apply(back.operations)
        #expect(results.allSatisfy { if case .success = $0 { true } else { false } })
        // The restored destination kept its connections: it was never deleted.
        let restored = try kernel.dumpTable().first?.destinations.first { $0.address == F.backend(2) }
        #expect(restored?.stats?.activeConnections == 5)
        #expect(restored?.weight == 4)
    }

    @Test("A desired endpoint that is itself draining (weight 0) is set to 0 and kept, not deleted")
    func desiredDrainingEndpoint() {
        let key = F.key()
        let desired = F.table(F.entry(key, [F.destination(1), F.destination(2, weight: 0)]))
        let (plan, drains) = F.plan(
            desired: desired, current: F.table(F.entry(key, [F.destination(1), F.destination(2)])))
        #expect(plan.operations == [.editDestination(key, F.destination(2, weight: 0))])
        #expect(drains.isEmpty)
        var stillThere = F.destination(2, weight: 0)
        stillThere.stats = F.stats(active: 0, inactive: 0)
        var later = DrainTracker()
        let next = F.planner.plan(
            desired: desired, current: F.table(F.entry(key, [F.destination(1), stillThere])), drains: &later,
            now: F.t0 + .seconds(3600))
        #expect(next.isEmpty)
    }

    @Test("Drains of destinations that vanished from the kernel are forgotten")
    func vanishedDrainsForgotten() {
        let key = F.key()
        var drains = DrainTracker()
        _ = F.planner.plan(
            desired: F.table(F.entry(key, [F.destination(1)])),
            current: F.table(F.entry(key, [F.destination(1), F.destination(2)])), drains: &drains, now: F.t0)
        #expect(drains.count == 1)
        #expect(drains.nextDeadline(timeout: F.timeout) == F.t0 + F.timeout)
        // Someone deleted it meanwhile.
        let plan = F.planner.plan(
            desired: F.table(F.entry(key, [F.destination(1)])), current: F.table(F.entry(key, [F.destination(1)])),
            drains: &drains, now: F.t0 + .seconds(1))
        #expect(plan.isEmpty)
        #expect(drains.isEmpty)
        #expect(drains.nextDeadline(timeout: F.timeout) == nil)
    }

    // MARK: Services leaving

    @Test("A TCP service that leaves drains its destinations, then is deleted with one deleteService")
    func leavingServiceDrains() throws {
        let key = F.key()
        let kernel = InMemoryIPVS([F.entry(key, [F.destination(1), F.destination(2, weight: 3)])])
        var drains = DrainTracker()
        let first = F.planner.plan(
            desired: [:], current: Planner.index(try kernel.dumpTable()), drains: &drains, now: F.t0)
        #expect(
            Set(first.operations) == [
                .editDestination(key, F.destination(1, weight: 0)), .editDestination(key, F.destination(2, weight: 0)),
            ])
        #expect(first.operations.count == 2)
        _ = try kernel.apply(first.operations)

        // One destination drained, the other not yet: delete the drained one only.
        kernel.setConnections(active: 0, inactive: 0, of: F.backend(1), in: key)
        kernel.setConnections(active: 2, inactive: 1, of: F.backend(2), in: key)
        let second = F.planner.plan(
            desired: [:], current: Planner.index(try kernel.dumpTable()), drains: &drains, now: F.t0 + .seconds(10))
        #expect(second.operations == [.deleteDestination(key, F.backend(1))])
        _ = try kernel.apply(second.operations)

        kernel.setConnections(active: 0, inactive: 0, of: F.backend(2), in: key)
        let third = F.planner.plan(
            desired: [:], current: Planner.index(try kernel.dumpTable()), drains: &drains, now: F.t0 + .seconds(20))
        #expect(third.operations == [.deleteService(key)])
        #expect(drains.isEmpty)
    }

    @Test("A leaving service whose drain timed out is deleted with one deleteService")
    func leavingServiceTimesOut() {
        let key = F.key(.sctp)
        var drains = DrainTracker()
        _ = F.planner.plan(
            desired: [:], current: F.table(F.entry(key, [F.destination(1)])), drains: &drains, now: F.t0)
        var busy = F.destination(1, weight: 0)
        busy.stats = F.stats(active: 9, inactive: 9)
        let plan = F.planner.plan(
            desired: [:], current: F.table(F.entry(key, [busy])), drains: &drains, now: F.t0 + F.timeout)
        #expect(plan.operations == [.deleteService(key)])
        #expect(drains.isEmpty)
    }

    @Test(
        "A leaving UDP service, or one without destinations, is deleted at once",
        arguments: [
            PlannerFixture.entry(PlannerFixture.key(.udp), [PlannerFixture.destination(1)]),
            PlannerFixture.entry(PlannerFixture.key(.tcp), []),
        ])
    func leavingServiceAtOnce(entry: ServiceEntry) {
        let (plan, drains) = F.plan(desired: [:], current: F.table(entry))
        #expect(plan.operations == [.deleteService(entry.service.key)])
        #expect(drains.isEmpty)
    }

    // MARK: Ownership

    @Test("Services the agent does not own are never touched, even when a desired service has their key")
    func foreignServicesUntouched() {
        let foreign = F.foreignKey()
        let foreignMark = ServiceKey.firewallMark(2, .inet)
        let current = F.table(
            F.entry(foreign, scheduler: .roundRobin, [F.destination(1), F.destination(2)]),
            F.entry(foreignMark, [F.destination(3)]),
            F.entry(F.foreignKey(host: 2), [F.destination(4)]))
        let desired = F.table(
            F.entry(foreign, scheduler: .sourceHashing, [F.destination(1, weight: 9)]),
            F.entry(foreignMark, [F.destination(5)]))
        let (plan, _) = F.plan(desired: desired, current: current)
        #expect(plan.isEmpty)
        #expect(plan.unownedDesiredServices == [foreign, foreignMark].sorted())
    }

    @Test("Owned by a bound address or by the explicit set; firewall marks only by the set")
    func ownershipRule() {
        #expect(F.ownership.owns(F.key(.udp, host: 3, port: 53)))
        #expect(!F.ownership.owns(F.foreignKey()))
        #expect(F.ownership.owns(.firewallMark(1, .inet)))
        #expect(!F.ownership.owns(.firewallMark(1, .inet6)))
        let explicit = Ownership(services: [F.foreignKey(port: 443)])
        #expect(explicit.owns(F.foreignKey(port: 443)))
        #expect(!explicit.owns(F.foreignKey(port: 80)))
    }

    // MARK: Order

    @Test("Operations come in order: service changes, adds, edits, drains, deletions, service deletions")
    func order() {
        let edited = F.key(host: 1)
        let removed = F.key(.udp, host: 2)
        let added = F.key(host: 3)
        var drainedDone = F.destination(7, weight: 0)
        drainedDone.stats = F.stats(active: 0, inactive: 0)
        let current = F.table(
            F.entry(edited, [F.destination(1), F.destination(2, weight: 2), F.destination(3), drainedDone]),
            F.entry(removed, [F.destination(4)]))
        var drains = DrainTracker()
        _ = F.planner.plan(
            desired: F.table(F.entry(edited, [F.destination(1), F.destination(2, weight: 2), F.destination(3)])),
            current: current, drains: &drains, now: F.t0)
        let desired = F.table(
            F.entry(edited, scheduler: .roundRobin, [F.destination(1), F.destination(2, weight: 5), F.destination(6)]),
            F.entry(added, [F.destination(8)]))
        let plan = F.planner.plan(desired: desired, current: current, drains: &drains, now: F.t0 + .seconds(1))
        #expect(
            plan.operations == [
                .editService(VirtualService(key: edited, scheduler: .roundRobin)),
                .addService(VirtualService(key: added, scheduler: .weightedRoundRobin)),
                .addDestination(edited, F.destination(6)),
                .addDestination(added, F.destination(8)),
                .editDestination(edited, F.destination(2, weight: 5)),
                .editDestination(edited, F.destination(3, weight: 0)),
                .deleteDestination(edited, F.backend(7)),
                .deleteService(removed),
            ])
    }

    @Test("Replacing every endpoint keeps a live destination after every single operation")
    func replacementKeepsALiveDestination() throws {
        let key = F.key()
        let kernel = InMemoryIPVS([F.entry(key, [F.destination(1), F.destination(2)])])
        let (plan, _) = F.plan(
            desired: F.table(F.entry(key, [F.destination(3), F.destination(4)])),
            current: Planner.index(try kernel.dumpTable()))
        #expect(plan.operations.count == 4)
        for operation in plan.operations {
            _ = try kernel.apply([operation])
            let table = try kernel.dumpTable()
            let live = (table.first?.destinations ?? []).filter { $0.weight > 0 }
            #expect(!live.isEmpty, "no live destination after \(operation)")
        }
    }

    // MARK: Incremental

    @Test("One endpoint changed among many services: exactly that endpoint's operations, as the full plan finds")
    func incrementalOneEndpoint() throws {
        var state: [DesiredService] = []
        for host in UInt8(1)...9 {
            for port in UInt16(1)...50 {
                state.append(
                    DesiredService(
                        name: "s\(host)-\(port)", key: F.key(host: host, port: port), scheduler: .weightedRoundRobin,
                        stable: (1...4).map { Endpoint(SocketAddress(address: F.ipv4(10, 2, host, $0), port: port)) }))
            }
        }
        var desired = DesiredTable(DesiredState(services: state))
        let kernel = InMemoryIPVS()
        _ = try kernel.apply(F.plan(desired: desired.entries, current: [:]).plan.operations)
        var current = Planner.index(try kernel.dumpTable())
        #expect(current.count == 450)

        // Endpoint 10.2.5.4 of service 10.96.0.5:17 becomes 10.2.5.9.
        let key = F.key(host: 5, port: 17)
        var changed = try #require(state.first { $0.key == key })
        let old = SocketAddress(address: F.ipv4(10, 2, 5, 4), port: 17)
        let new = SocketAddress(address: F.ipv4(10, 2, 5, 9), port: 17)
        changed.stable = changed.stable.filter { $0.address != old } + [Endpoint(new)]
        desired.update(changed)

        var drains = DrainTracker()
        let incremental = F.planner.plan(
            changed: [key], desired: desired, current: current, drains: &drains, now: F.t0)
        let newWeight = try #require(desired[key]?.destinations.first { $0.address == new }?.weight)
        #expect(
            incremental.operations == [
                .addDestination(key, Destination(address: new, weight: newWeight)),
                .editDestination(key, Destination(address: old, weight: 0)),
            ])

        var fullDrains = DrainTracker()
        let full = F.planner.plan(desired: desired, current: current, drains: &fullDrains, now: F.t0)
        #expect(full == incremental)
        #expect(fullDrains == drains)

        // The table as last applied follows the kernel.
        let results = try kernel.apply(incremental.operations)
        Planner.record(incremental.operations, results: results, into: &current)
        #expect(F.configuration(current[key]) == F.configuration(Planner.index(try kernel.dumpTable())[key]))
    }

    @Test("record applies only the operations that succeeded, as the kernel does")
    func recordFollowsResults() {
        let key = F.key()
        var table = F.table(F.entry(key, [F.destination(1)]))
        let operations: [IPVSOperation] = [
            .addDestination(key, F.destination(2)), .addDestination(key, F.destination(3)),
            .editDestination(key, F.destination(1, weight: 7)), .deleteService(F.key(host: 2)),
        ]
        Planner.record(
            operations, results: [.success(()), .failure(.destinationExists(key, F.backend(3))), .success(())],
            into: &table)
        #expect(table[key]?.destinations == [F.destination(2), F.destination(1, weight: 7)])
    }
}
