import IPVS
import IPVSTestSupport
import PropertyBased
import Testing

@testable import CanaryCore

/// A random current table, desired state and drain state over a small universe of keys and
/// addresses, so that services and destinations collide often.
///
/// Decoded from three words per key, so that PropertyBased can generate and shrink it (a word
/// shrinks toward 0: the key absent, no destinations):
/// - current: bit 0 present, 1-2 scheduler, 3 persistent, 4-11 destinations, 12-27 their weights
///   (2 bits each), 28-35 whether each holds connections, 36-37 forwarding;
/// - desired: bit 0 present, 1-2 scheduler, 3 persistent, 4-11 stable endpoints, 12-19 canary
///   endpoints, 20-27 draining endpoints, 28-29 forwarding, 30-36 canary share in percent,
///   40 persistence timeout variant;
/// - drains: bits 0-7 which current destinations were already draining, 8-11 since when
///   (in tens of seconds before `now`).
struct PlannerScenario: CustomStringConvertible {
    typealias F = PlannerFixture

    /// Owned: 0-4 (bound addresses and firewall mark 1); foreign: 5-7.
    static let keys: [ServiceKey] = [
        F.key(.tcp, host: 1, port: 80), F.key(.udp, host: 1, port: 53), F.key(.sctp, host: 2, port: 80),
        F.key(.tcp, host: 3, port: 443), .firewallMark(1, .inet),
        F.foreignKey(.tcp, host: 1, port: 80), .firewallMark(2, .inet), F.foreignKey(.udp, host: 2, port: 53),
    ]
    static let schedulers: [Scheduler] = [.roundRobin, .weightedRoundRobin, .sourceHashing, .maglevHashing]
    static let forwardings: [ForwardingMethod] = [.masquerade, .directRoute, .tunnel, .masquerade]
    static let now = F.t0 + .seconds(1000)

    var current: [ServiceEntry] = []
    var desired: DesiredTable
    var drains = DrainTracker()

    init(current currentWords: [UInt64], desired desiredWords: [UInt64], drains drainWords: [UInt64]) {
        var desiredServices: [DesiredService] = []
        for (index, key) in Self.keys.enumerated() {
            let word = index < currentWords.count ? currentWords[index] : 0
            if word & 1 == 1 {
                let flagsBit = word >> 3 & 1 == 1
                let scheduler = Self.schedulers[Int(word >> 1 & 3)]
                var service = VirtualService(
                    key: key, scheduler: scheduler, flags: flagsBit ? .persistent : [], timeout: flagsBit ? 300 : 0)
                if scheduler == .sourceHashing { service.flags.insert(.shFallback) }
                var destinations: [Destination] = []
                for slot in 0..<8 where word >> (4 + slot) & 1 == 1 {
                    var destination = F.destination(
                        UInt8(slot + 1), weight: Int32(word >> (12 + 2 * slot) & 3),
                        forwarding: Self.forwardings[Int(word >> 36 & 3)])
                    var stats = DestinationStats()
                    stats.activeConnections = UInt32(word >> (28 + slot) & 1)
                    destination.stats = stats
                    destinations.append(destination)
                }
                current.append(ServiceEntry(service: service, destinations: destinations))

                let drainWord = index < drainWords.count ? drainWords[index] : 0
                let started = Self.now - .seconds(Int64(drainWord >> 8 & 15) * 10)
                for slot in 0..<8 where word >> (4 + slot) & 1 == 1 && drainWord >> slot & 1 == 1 {
                    drains.start(F.backend(UInt8(slot + 1)), in: key, at: started)
                }
            }

            let wish = index < desiredWords.count ? desiredWords[index] : 0
            if wish & 1 == 1 {
                func endpoints(_ offset: UInt64) -> [Endpoint] {
                    (0..<8).filter { wish >> (offset + UInt64($0)) & 1 == 1 }.map { slot in
                        Endpoint(F.backend(UInt8(slot + 1)), state: wish >> (20 + UInt64(slot)) & 1 == 1 ? .draining : .live)
                    }
                }
                desiredServices.append(
                    DesiredService(
                        name: "service \(index)", key: key, scheduler: Self.schedulers[Int(wish >> 1 & 3)],
                        persistence: wish >> 3 & 1 == 1 ? Persistence(timeout: wish >> 40 & 1 == 1 ? 300 : 600) : nil,
                        forwarding: Self.forwardings[Int(wish >> 28 & 3)], stable: endpoints(4), canary: endpoints(12),
                        canaryShare: CanaryShare(basisPoints: min(100, Int(wish >> 30 & 127)) * 100) ?? .zero))
            }
        }
        desired = DesiredTable(DesiredState(services: desiredServices))
    }

    static let generator = zip(
        Gen.uint64(in: 0 ... .max).array(of: keys.count), Gen.uint64(in: 0 ... .max).array(of: keys.count),
        Gen.uint64(in: 0 ... .max).array(of: keys.count)
    ).map { PlannerScenario(current: $0, desired: $1, drains: $2) }

    var currentIndex: IPVSTableIndex { Planner.index(current) }

    /// An in-memory kernel holding the current table, and the plan made against its dump with
    /// the scenario's drains (the kernel is returned before the plan is applied).
    func planAgainstKernel() throws -> (kernel: InMemoryIPVS, plan: Plan, drains: DrainTracker) {
        let kernel = InMemoryIPVS(current)
        var drains = self.drains
        let plan = F.planner.plan(
            desired: desired, current: Planner.index(try kernel.dumpTable()), drains: &drains, now: Self.now)
        return (kernel, plan, drains)
    }

    var description: String {
        "current: \(current.map { "\($0.service.key) \($0.service.scheduler) \($0.destinations.map { "\($0.address)w\($0.weight)" })" }); "
            + "desired: \(desired.entries.values.map { "\($0.service.key) \($0.service.scheduler) \($0.destinations.map { "\($0.address)w\($0.weight)" })" })"
    }
}

@Suite("Planner properties")
struct PlannerPropertyTests {
    typealias F = PlannerFixture
    typealias S = PlannerScenario

    static func succeeded(_ results: [Result<Void, IPVSError>]) -> Bool {
        results.allSatisfy { if case .success = $0 { true } else { false } }
    }

    @Test("Applying a plan gives the desired table, draining destinations aside; foreign services stay as they were")
    func applyingGivesDesired() async throws {
        await propertyCheck(count: 300, input: S.generator) { scenario in
            let (kernel, plan, drains) = try scenario.planAgainstKernel()
            let before = Planner.index(try kernel.dumpTable())
            let results = try kernel.apply(plan.operations)
            #expect(Self.succeeded(results), "\(zip(plan.operations, results).filter { (try? $0.1.get()) == nil })")
            let after = Planner.index(try kernel.dumpTable())

            for key in S.keys {
                let desired = scenario.desired[key]
                guard F.ownership.owns(key) else {
                    #expect(after[key] == before[key], "foreign \(key) changed")
                    #expect(plan.unownedDesiredServices.contains(key) == (desired != nil))
                    continue
                }
                let result = F.configuration(after[key])
                for (address, _) in drains.draining(in: key) {
                    #expect(result[address]?.weight == 0, "\(key) \(address) tracked as draining but not at weight 0")
                }
                if let desired {
                    let entry = try #require(after[key], "\(key) desired but missing")
                    #expect(entry.service.hasSameConfiguration(as: desired.service))
                    let wanted = F.configuration(desired)
                    for (address, destination) in result {
                        if let wantedDestination = wanted[address] {
                            #expect(destination == wantedDestination)
                        } else {
                            #expect(destination.weight == 0, "\(key) \(address) left but is live")
                            #expect(drains.drainStart(of: address, in: key) != nil, "\(key) \(address) left untracked")
                        }
                    }
                    #expect(Set(wanted.keys).isSubset(of: result.keys))
                } else if let entry = after[key] {
                    #expect(!entry.destinations.isEmpty, "\(key) left empty but not deleted")
                    #expect(entry.destinations.allSatisfy { $0.weight == 0 && drains.drainStart(of: $0.address, in: key) != nil })
                }
            }
        }
    }

    @Test("Once every drain finishes, a second plan reaches exactly the desired table and a third has nothing to do")
    func convergesOnceDrained() async throws {
        await propertyCheck(count: 200, input: S.generator) { scenario in
            let (kernel, first, drainsAfterFirst) = try scenario.planAgainstKernel()
            var drains = drainsAfterFirst
            _ = try kernel.apply(first.operations)
            for entry in try kernel.dumpTable() where F.ownership.owns(entry.service.key) {
                for destination in entry.destinations {
                    kernel.setConnections(active: 0, inactive: 0, of: destination.address, in: entry.service.key)
                }
            }
            let second = F.planner.plan(
                desired: scenario.desired, current: Planner.index(try kernel.dumpTable()), drains: &drains,
                now: S.now + .seconds(1))
            #expect(second.operations.allSatisfy { $0.kind == "delete-destination" || $0.kind == "delete-service" })
            #expect(Self.succeeded(try kernel.apply(second.operations)))
            #expect(drains.isEmpty)

            let after = Planner.index(try kernel.dumpTable())
            for key in S.keys where F.ownership.owns(key) {
                #expect(F.configuration(after[key]) == F.configuration(scenario.desired[key]), "\(key)")
                #expect((after[key] == nil) == (scenario.desired[key] == nil), "\(key)")
            }
            let third = F.planner.plan(desired: scenario.desired, current: after, drains: &drains, now: S.now + .seconds(2))
            #expect(third.isEmpty)
        }
    }

    @Test("Planning the desired table against itself gives nothing, whatever foreign services are beside it")
    func desiredAgainstItself() async throws {
        await propertyCheck(count: 200, input: S.generator) { scenario in
            let owned = scenario.desired.entries.values.filter { F.ownership.owns($0.service.key) }
            let foreign = scenario.current.filter { !F.ownership.owns($0.service.key) }
            let kernel = InMemoryIPVS(owned + foreign)
            var drains = DrainTracker()
            let plan = F.planner.plan(
                desired: scenario.desired, current: Planner.index(try kernel.dumpTable()), drains: &drains, now: S.now)
            #expect(plan.isEmpty)
            #expect(drains.isEmpty)
        }
    }

    @Test("No operation is ever about a service the agent does not own")
    func foreignKeysNeverInOperations() async {
        await propertyCheck(count: 300, input: S.generator) { scenario in
            var drains = scenario.drains
            let plan = F.planner.plan(
                desired: scenario.desired, current: scenario.currentIndex, drains: &drains, now: S.now)
            for operation in plan.operations {
                #expect(F.ownership.owns(operation.serviceKey), "\(operation)")
            }
        }
    }

    @Test("After every single operation, a desired service that had a live destination still has one")
    func alwaysALiveDestination() async throws {
        await propertyCheck(count: 300, input: S.generator) { scenario in
            let (kernel, plan, _) = try scenario.planAgainstKernel()
            func liveServices() throws -> Set<ServiceKey> {
                Set(try kernel.dumpTable().filter { $0.destinations.contains { $0.weight > 0 } }.map(\.service.key))
            }
            let wantsLive = Set(
                scenario.desired.entries.values.filter { $0.destinations.contains { $0.weight > 0 } }.map(\.service.key))
            var live = try liveServices()
            for operation in plan.operations {
                _ = try kernel.apply([operation])
                let next = try liveServices()
                let lost = live.subtracting(next).intersection(wantsLive)
                #expect(lost.isEmpty, "\(lost) lost every live destination at \(operation)")
                live = next
            }
        }
    }

    @Test("Planning a subset of services gives exactly the full plan's operations for those services")
    func incrementalMatchesFull() async {
        await propertyCheck(count: 300, input: S.generator, Gen.uint8(in: 0 ... .max)) { scenario, subsetMask in
            let changed = S.keys.enumerated().filter { subsetMask >> $0.offset & 1 == 1 }.map(\.element)
            var fullDrains = scenario.drains
            let full = F.planner.plan(
                desired: scenario.desired, current: scenario.currentIndex, drains: &fullDrains, now: S.now)
            var partialDrains = scenario.drains
            let partial = F.planner.plan(
                changed: changed, desired: scenario.desired, current: scenario.currentIndex, drains: &partialDrains,
                now: S.now)
            #expect(partial.operations == full.operations.filter { changed.contains($0.serviceKey) })
            #expect(partial.unownedDesiredServices == full.unownedDesiredServices.filter { changed.contains($0) })
            for key in S.keys {
                let expected = changed.contains(key) ? fullDrains.draining(in: key) : scenario.drains.draining(in: key)
                #expect(partialDrains.draining(in: key) == expected, "\(key)")
            }

            var everyDrains = scenario.drains
            let every = F.planner.plan(
                changed: S.keys, desired: scenario.desired, current: scenario.currentIndex, drains: &everyDrains,
                now: S.now)
            #expect(every == full)
            #expect(everyDrains == fullDrains)
        }
    }
}
