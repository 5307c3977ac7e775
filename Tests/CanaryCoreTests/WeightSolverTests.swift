import IPVS
import Testing

@testable import CanaryCore

/// Services for the solver tests: stable endpoints on 10.1.0.0/16, canary ones on 10.2.0.0/16.
enum SolverFixture {
    static func address(_ index: Int, canary: Bool) -> SocketAddress {
        let bytes: [UInt8] = [10, canary ? 2 : 1, UInt8(index / 256), UInt8(index % 256)]
        guard let address = IPAddress(bytes: bytes) else { preconditionFailure("four bytes make an IPv4 address") }
        return SocketAddress(address: address, port: 8080)
    }

    static func service(
        _ scheduler: Scheduler, stable: Int, canary: Int, basisPoints: Int,
        drainingStable: Int = 0, drainingCanary: Int = 0
    ) -> DesiredService {
        guard let share = CanaryShare(basisPoints: basisPoints),
            let virtualAddress = SocketAddress("10.96.0.10:80")
        else { preconditionFailure("fixture values are valid") }
        let stableEndpoints =
            (0..<stable).map { Endpoint(address($0, canary: false)) }
            + (0..<drainingStable).map { Endpoint(address(stable + $0, canary: false), state: .draining) }
        let canaryEndpoints =
            (0..<canary).map { Endpoint(address($0, canary: true)) }
            + (0..<drainingCanary).map { Endpoint(address(canary + $0, canary: true), state: .draining) }
        return DesiredService(
            name: "test/\(scheduler)", key: .inet(.tcp, virtualAddress), scheduler: scheduler,
            stable: stableEndpoints, canary: canaryEndpoints, canaryShare: share)
    }

    /// The weights of live stable, live canary and draining endpoints.
    static func groups(_ assignment: WeightAssignment, _ service: DesiredService)
        -> (stable: [Int], canary: [Int], draining: [Int])
    {
        func weight(_ endpoint: Endpoint) -> Int { Int(assignment.weights[endpoint.address] ?? -1) }
        return (
            service.stable.filter { $0.state == .live }.map(weight),
            service.canary.filter { $0.state == .live }.map(weight),
            (service.stable + service.canary).filter { $0.state == .draining }.map(weight)
        )
    }

    /// The weights in the order the solver assumes the kernel lists them: the endpoints added in
    /// service order (stable, then canary), most recent first.
    static func listOrder(_ service: DesiredService) -> [Endpoint] { (service.stable + service.canary).reversed() }
}

@Suite("Weight solver: wrr")
struct WeightSolverWeightedRoundRobinTests {
    /// The smallest equal weights whose share is within 0.01 pp (4:4:4:3, not 2667:…:2000).
    @Test(arguments: [
        (3, 1, 2000, 4, 3, 15), (1, 1, 1000, 9, 1, 10), (9, 1, 1000, 1, 1, 10), (1, 1, 5000, 1, 1, 2),
        (1, 1, 2500, 3, 1, 4), (24, 1, 1000, 3, 8, 80), (4, 1, 2000, 1, 1, 5), (1, 1, 3333, 2, 1, 3),
        (2, 2, 5000, 1, 1, 4), (1, 3, 7500, 1, 1, 4), (1, 1, 1, 4999, 1, 5000),
    ])
    func smallestEqualWeights(stable: Int, canary: Int, basisPoints: Int, stableWeight: Int, canaryWeight: Int, cycle: Int) {
        let service = SolverFixture.service(.weightedRoundRobin, stable: stable, canary: canary, basisPoints: basisPoints)
        let assignment = WeightSolver.solve(service)
        let groups = SolverFixture.groups(assignment, service)
        #expect(groups.stable == Array(repeating: stableWeight, count: stable))
        #expect(groups.canary == Array(repeating: canaryWeight, count: canary))
        #expect(assignment.cycleLength == cycle)
        let share = Double(canary * canaryWeight) / Double(stable * stableWeight + canary * canaryWeight)
        #expect(assignment.effectiveCanaryShare == share)
        #expect(abs(share - Double(basisPoints) / 10_000) <= 0.0001 + 1e-12)
        #expect((assignment.explanation == nil) == (share == Double(basisPoints) / 10_000 && cycle <= 1024))
    }

    /// A replay: over the first cycle of the kernel's wrr order (fresh service, and
    /// programmed one destination at a time), the canary's count is within one connection of
    /// its share of that many connections.
    @Test(arguments: [
        (3, 1, 2000), (1, 1, 1000), (9, 1, 1000), (24, 1, 1000), (2, 3, 3333), (5, 2, 1234), (1, 1, 1), (7, 3, 9999),
        (40, 2, 250),
    ])
    func replayedCycleGivesTheShare(stable: Int, canary: Int, basisPoints: Int) throws {
        let service = SolverFixture.service(.weightedRoundRobin, stable: stable, canary: canary, basisPoints: basisPoints)
        let assignment = WeightSolver.solve(service)
        let order = SolverFixture.listOrder(service)
        let weights = order.map { Int(assignment.weights[$0.address] ?? 0) }
        let isCanary = order.map { endpoint in service.canary.contains(endpoint) }
        let cycle = try #require(assignment.cycleLength)
        let target = Double(basisPoints) / 10_000

        let fresh = WeightedRoundRobinModel(weights: weights)
        let programmed = WeightedRoundRobinModel.programmed(addOrder: weights.reversed())
        #expect(programmed.weights == weights)
        #expect(fresh.cycleLength == cycle)
        for var model in [fresh, programmed] {
            let chosen = model.schedule(cycle)
            #expect(chosen.count == cycle)
            let canaryCount = Double(chosen.filter { isCanary[$0] }.count)
            // Within one connection of the share the solver reports, and of the target as far as
            // 0.01 pp over this many connections allows.
            #expect(abs(canaryCount - Double(cycle) * assignment.effectiveCanaryShare) < 1e-6)
            #expect(abs(canaryCount - Double(cycle) * target) <= max(1, Double(cycle) * 0.0001), "\(canaryCount) of \(cycle)")
        }
    }

    /// 100 stable endpoints and 1 canary at 10 %: equal weights 9 and 100 (cycle 1,000) are kept
    /// although weights differing by 1 would cycle in 120; when equal weights need a cycle past
    /// 1,024 and twice the unequal one, the groups get weights differing by 1, and it is explained.
    @Test func unequalWeightsOnlyWhenEqualOnesNeedALongCycle() {
        let equal = WeightSolver.solve(SolverFixture.service(.weightedRoundRobin, stable: 100, canary: 1, basisPoints: 1000))
        #expect(Set(equal.weights.values).count == 2)
        #expect(equal.cycleLength == 1000)

        // 150 + 150 endpoints at 50.02 %: equal weights need s + c >= 1,667, a cycle of 250,000.
        let service = SolverFixture.service(.weightedRoundRobin, stable: 150, canary: 150, basisPoints: 5002)
        let unequal = WeightSolver.solve(service)
        let groups = SolverFixture.groups(unequal, service)
        #expect(Set(groups.stable).count == 2 && Set(groups.canary).count == 2)
        #expect((groups.stable.max() ?? 0) - (groups.stable.min() ?? 0) == 1)
        #expect(abs(unequal.effectiveCanaryShare - 0.5002) <= 0.0001)
        #expect(unequal.explanation?.contains("differ by 1") == true)
        #expect(unequal.explanation?.contains("cycle") == true)
        let cycle = unequal.cycleLength ?? 0
        #expect(cycle == groups.stable.reduce(0, +) + groups.canary.reduce(0, +))
        #expect(cycle > 1024 && unequal.explanation?.contains("\(cycle) connections") == true)
    }

    /// Weights stay in the kernel's range: int, at least 0 (`ip_vs_add_dest` refuses < 0 with
    /// ERANGE; a netlink u32 above INT_MAX reads as negative).
    @Test(arguments: [1, 9999, 5001, 4999, 1234])
    func weightsStayInRange(basisPoints: Int) {
        let assignment = WeightSolver.solve(
            SolverFixture.service(.weightedRoundRobin, stable: 299, canary: 1, basisPoints: basisPoints))
        #expect(assignment.weights.values.allSatisfy { $0 >= 0 && $0 <= Int32.max })
        #expect(abs(assignment.effectiveCanaryShare - Double(basisPoints) / 10_000) <= 0.0001 + 1e-12)
    }
}

@Suite("Weight solver: rr and other schedulers")
struct WeightSolverCountBasedTests {
    @Test(arguments: [
        (9, 1, 1000, 0.1, false, false), (3, 1, 1000, 0.25, true, true), (19, 1, 550, 0.05, true, false),
        (1, 1, 5000, 0.5, false, false),
    ])
    func roundRobinShareIsTheEndpointRatio(
        stable: Int, canary: Int, basisPoints: Int, share: Double, explained: Bool, warned: Bool
    ) {
        let service = SolverFixture.service(.roundRobin, stable: stable, canary: canary, basisPoints: basisPoints)
        let assignment = WeightSolver.solve(service)
        #expect(assignment.effectiveCanaryShare == share)
        #expect(assignment.weights.values.allSatisfy { $0 == 1 })
        #expect((assignment.explanation != nil) == explained)
        #expect(!assignment.warnings.isEmpty == warned)
        #expect(assignment.cycleLength == nil)
    }

    @Test func leastConnectionIsCountBasedAndApproximate() {
        let assignment = WeightSolver.solve(SolverFixture.service(.leastConnection, stable: 4, canary: 1, basisPoints: 2000))
        #expect(assignment.effectiveCanaryShare == 0.2)
        #expect(assignment.explanation?.contains("about") == true)
    }

    @Test(arguments: ["wlc", "sed", "nq", "lblc"])
    func weightedConnectionSchedulersGetProportionalWeights(name: String) {
        let scheduler = Scheduler(rawValue: name)
        let service = SolverFixture.service(scheduler, stable: 3, canary: 1, basisPoints: 2000)
        let assignment = WeightSolver.solve(service)
        let groups = SolverFixture.groups(assignment, service)
        #expect(groups.stable == [4, 4, 4] && groups.canary == [3])
        #expect(assignment.effectiveCanaryShare == 0.2)
        #expect(assignment.explanation?.contains("approximate") == true)
        #expect(assignment.cycleLength == nil)
    }

    @Test(arguments: ["fo", "ovf", "dh"])
    func schedulersThatCannotSplitWarn(name: String) {
        let assignment = WeightSolver.solve(SolverFixture.service(Scheduler(rawValue: name), stable: 3, canary: 1, basisPoints: 2000))
        #expect(assignment.warnings.contains { $0.contains("cannot split") })
    }
}

@Suite("Weight solver: sh")
struct WeightSolverSourceHashingTests {
    /// Weights sum to 256 (or a divisor of it after dividing by their gcd), every live endpoint
    /// holds a bucket, and the canary's bucket count is the closest to the target.
    @Test(arguments: [
        (9, 1, 1000, 26), (3, 1, 2500, 64), (1, 1, 5000, 128), (255, 1, 5000, 1), (1, 255, 100, 255),
        (1, 1, 1, 1), (1, 1, 9999, 255), (50, 50, 1000, 50), (7, 2, 3333, 85),
    ])
    func canaryGetsTheClosestBucketCount(stable: Int, canary: Int, basisPoints: Int, canaryBuckets: Int) {
        let service = SolverFixture.service(.sourceHashing, stable: stable, canary: canary, basisPoints: basisPoints)
        let assignment = WeightSolver.solve(service)
        let groups = SolverFixture.groups(assignment, service)
        let weights = SolverFixture.listOrder(service).map { Int(assignment.weights[$0.address] ?? 0) }
        let sum = weights.reduce(0, +)
        #expect(256 % sum == 0 && weights.allSatisfy { $0 >= 1 })
        let scale = 256 / sum
        #expect(groups.canary.reduce(0, +) * scale == canaryBuckets)
        #expect(assignment.effectiveCanaryShare == Double(canaryBuckets) / 256)
        let model = SourceHashingModel(weights: weights)
        #expect(model.heldBuckets.map { $0 / scale } == weights)
        #expect((assignment.explanation == nil) == (canaryBuckets * 10_000 == basisPoints * 256))
    }

    @Test func smallestWeightsWhenTheyDivide256() {
        let service = SolverFixture.service(.sourceHashing, stable: 3, canary: 1, basisPoints: 2500)
        #expect(WeightSolver.solve(service).weights.values.allSatisfy { $0 == 1 })
    }

    /// Weights 90 × 9 and 10 starved six stable endpoints; the solver's weights never sum
    /// past 256.
    @Test func nineStableOneCanaryAtTenPercent() {
        let service = SolverFixture.service(.sourceHashing, stable: 9, canary: 1, basisPoints: 1000)
        let assignment = WeightSolver.solve(service)
        let groups = SolverFixture.groups(assignment, service)
        #expect(groups.canary == [26])
        #expect(groups.stable.reduce(0, +) == 230 && groups.stable.allSatisfy { $0 == 25 || $0 == 26 })
        #expect(assignment.explanation?.contains("26") == true)
    }

    /// Draining endpoints keep weight 0 but take a bucket each; their clients move by sh-fallback
    /// and the share counts where they land.
    @Test(arguments: [(9, 1, 1000, 1, 0), (4, 1, 2000, 3, 1), (2, 2, 5000, 0, 2)])
    func drainingEndpointsTakeABucketEach(stable: Int, canary: Int, basisPoints: Int, drainingStable: Int, drainingCanary: Int) {
        let service = SolverFixture.service(
            .sourceHashing, stable: stable, canary: canary, basisPoints: basisPoints,
            drainingStable: drainingStable, drainingCanary: drainingCanary)
        let assignment = WeightSolver.solve(service)
        let groups = SolverFixture.groups(assignment, service)
        #expect(groups.draining.allSatisfy { $0 == 0 })
        let order = SolverFixture.listOrder(service)
        let weights = order.map { Int(assignment.weights[$0.address] ?? 0) }
        #expect(weights.map { max($0, 1) }.reduce(0, +) == 256)
        let served = SourceHashingModel(weights: weights).servedBuckets(fallback: true)
        let canaryServed = zip(order, served).filter { service.canary.contains($0.0) }.map(\.1).reduce(0, +)
        #expect(assignment.effectiveCanaryShare == Double(canaryServed) / 256)
        #expect(abs(assignment.effectiveCanaryShare - Double(basisPoints) / 10_000) <= Double(drainingStable + drainingCanary + 1) / 256)
        #expect(assignment.explanation?.contains("sh-fallback") == true)
    }

    /// More than 256 endpoints: every one at weight 1, a warning naming the live ones without a
    /// bucket (the earliest added, last in the kernel's list).
    @Test func moreThan256EndpointsWarnAndDegrade() throws {
        let service = SolverFixture.service(.sourceHashing, stable: 290, canary: 10, basisPoints: 1000)
        let assignment = WeightSolver.solve(service)
        #expect(assignment.weights.values.allSatisfy { $0 == 1 })
        #expect(assignment.warnings.contains { $0.contains("256 buckets") && $0.contains("44 get no bucket") })
        let named = try #require(assignment.warnings.first { $0.contains("no new connections") })
        // The solver assumes the kernel lists the endpoints in reverse service order: the canary,
        // then stable 289 … 0; the 256 buckets end at stable 44, so stable 43 is the first without.
        #expect(named.contains(SolverFixture.address(43, canary: false).description))
        #expect(!named.contains(SolverFixture.address(44, canary: false).description))
        #expect(assignment.effectiveCanaryShare == 10.0 / 256)
    }
}

@Suite("Weight solver: mh")
struct WeightSolverMaglevTests {
    /// The canary's fewest and most table entries over list orders: canary endpoints last, or first.
    static func canaryEntryRange(_ weights: [Int], isCanary: [Bool]) -> ClosedRange<Int> {
        func canaryEntries(canaryFirst: Bool) -> Int {
            let order = weights.indices.sorted { isCanary[$0] == canaryFirst && isCanary[$1] != canaryFirst }
            let entries = MaglevHashingModel.entryCounts(turns: MaglevHashingModel.turns(lastWeights: order.map { weights[$0] }))
            return zip(order, entries).filter { isCanary[$0.0] }.map(\.1).reduce(0, +)
        }
        return canaryEntries(canaryFirst: false)...canaryEntries(canaryFirst: true)
    }

    static func worstError(_ range: ClosedRange<Int>, basisPoints: Int) -> Double {
        let target = Double(basisPoints) / 10_000 * 4093
        return max(abs(Double(range.lowerBound) - target), abs(Double(range.upperBound) - target))
    }

    /// The naive 99:1 becomes 49:1 turns (about 2 %) and 90:10 becomes 9:1. The solver's
    /// turns come through the quantisation unchanged, the reported share is the populate loop's
    /// for the assumed order, and over every list order they are at least as close as the naive
    /// weights (the target's basis points split evenly).
    @Test(arguments: [
        (1, 1, 100), (1, 1, 1000), (9, 1, 1000), (3, 2, 2500), (20, 1, 50), (1, 1, 9900), (24, 1, 1000), (300, 1, 1000),
        (200, 100, 2500),
    ])
    func weightsSurviveTheQuantisation(stable: Int, canary: Int, basisPoints: Int) {
        let service = SolverFixture.service(.maglevHashing, stable: stable, canary: canary, basisPoints: basisPoints)
        let assignment = WeightSolver.solve(service)
        let order = SolverFixture.listOrder(service)
        let isCanary = order.map { service.canary.contains($0) }
        let weights = order.map { Int(assignment.weights[$0.address] ?? 0) }
        #expect(weights.allSatisfy { (1...63).contains($0) })
        let turns = MaglevHashingModel.turns(lastWeights: weights)
        let divisor = weights.reduce(0) { greatestCommonDivisor($0, $1) }
        #expect(turns == weights.map { $0 / divisor })
        let entries = MaglevHashingModel.entryCounts(turns: turns)
        let canaryEntries = zip(isCanary, entries).filter(\.0).map(\.1).reduce(0, +)
        #expect(assignment.effectiveCanaryShare == Double(canaryEntries) / 4093)

        let naive = isCanary.map { $0 ? basisPoints / canary : (10_000 - basisPoints) / stable }
        let solverWorst = Self.worstError(Self.canaryEntryRange(weights, isCanary: isCanary), basisPoints: basisPoints)
        let naiveWorst = Self.worstError(Self.canaryEntryRange(naive, isCanary: isCanary), basisPoints: basisPoints)
        #expect(solverWorst <= naiveWorst, "solver \(weights) against naive \(naive)")
    }

    @Test func ninetyNineToOneIsCloserThanTheKernelsFortyNineToOne() {
        let service = SolverFixture.service(.maglevHashing, stable: 1, canary: 1, basisPoints: 100)
        let assignment = WeightSolver.solve(service)
        let groups = SolverFixture.groups(assignment, service)
        #expect(groups.stable == [63] && groups.canary == [1])
        #expect(assignment.effectiveCanaryShare < 0.016)
        #expect(assignment.explanation?.contains("63 turns") == true)
    }

    /// 24 stable and 1 canary at 10 %: equal turns 3 and 8 make exactly 10 % of each round, but
    /// 4093 = 51 × 80 + 13 lets the list order move the canary by 8 entries. Stable turns of 12
    /// and 13 with a canary of 34 (4093 = 12 × 341 + 1) leave the order one entry: the solver takes
    /// them, explains the uneven turns and the range.
    @Test func turnsAreChosenForEveryListOrder() {
        let service = SolverFixture.service(.maglevHashing, stable: 24, canary: 1, basisPoints: 1000)
        let assignment = WeightSolver.solve(service)
        let groups = SolverFixture.groups(assignment, service)
        let order = SolverFixture.listOrder(service)
        let isCanary = order.map { service.canary.contains($0) }
        let range = Self.canaryEntryRange(order.map { Int(assignment.weights[$0.address] ?? 0) }, isCanary: isCanary)
        let equal = Self.canaryEntryRange(order.map { service.canary.contains($0) ? 8 : 3 }, isCanary: isCanary)
        #expect(equal.upperBound - equal.lowerBound == 8)
        #expect(Self.worstError(range, basisPoints: 1000) < Self.worstError(equal, basisPoints: 1000) - 1)
        #expect((groups.stable.max() ?? 0) - (groups.stable.min() ?? 0) == 1)
        #expect(assignment.explanation?.contains("differ by 1") == true)
        #expect(assignment.explanation?.contains("by the kernel's list order") == true)
    }
}

@Suite("Weight solver: common rules")
struct WeightSolverCommonRuleTests {
    static let schedulers: [Scheduler] = [.weightedRoundRobin, .roundRobin, .sourceHashing, .maglevHashing, "wlc"]

    @Test(arguments: schedulers)
    func zeroTargetDrainsTheCanary(scheduler: Scheduler) {
        let service = SolverFixture.service(scheduler, stable: 3, canary: 2, basisPoints: 0)
        let assignment = WeightSolver.solve(service)
        let groups = SolverFixture.groups(assignment, service)
        #expect(groups.canary == [0, 0])
        #expect(groups.stable.allSatisfy { $0 >= 1 })
        #expect(assignment.effectiveCanaryShare == 0)
        #expect(assignment.explanation == nil)
    }

    @Test(arguments: schedulers)
    func fullTargetDrainsStable(scheduler: Scheduler) {
        let service = SolverFixture.service(scheduler, stable: 3, canary: 2, basisPoints: 10_000)
        let assignment = WeightSolver.solve(service)
        let groups = SolverFixture.groups(assignment, service)
        #expect(groups.stable == [0, 0, 0])
        #expect(groups.canary.allSatisfy { $0 >= 1 })
        #expect(assignment.effectiveCanaryShare == 1)
    }

    @Test(arguments: schedulers)
    func drainingEndpointsGetWeightZero(scheduler: Scheduler) {
        let service = SolverFixture.service(
            scheduler, stable: 3, canary: 1, basisPoints: 2000, drainingStable: 2, drainingCanary: 1)
        let assignment = WeightSolver.solve(service)
        let groups = SolverFixture.groups(assignment, service)
        #expect(groups.draining == [0, 0, 0])
        #expect(assignment.weights.count == 7)
        #expect(groups.stable.allSatisfy { $0 >= 1 } && groups.canary.allSatisfy { $0 >= 1 })
    }

    @Test(arguments: schedulers)
    func noCanaryEndpointSendsEverythingToStable(scheduler: Scheduler) {
        let service = SolverFixture.service(scheduler, stable: 3, canary: 0, basisPoints: 3000, drainingCanary: 1)
        let assignment = WeightSolver.solve(service)
        #expect(assignment.effectiveCanaryShare == 0)
        #expect(SolverFixture.groups(assignment, service).stable.allSatisfy { $0 >= 1 })
        #expect(assignment.explanation?.contains("no live canary endpoint") == true)
    }

    @Test(arguments: schedulers)
    func noStableEndpointSendsEverythingToTheCanary(scheduler: Scheduler) {
        let service = SolverFixture.service(scheduler, stable: 0, canary: 2, basisPoints: 3000, drainingStable: 2)
        let assignment = WeightSolver.solve(service)
        #expect(assignment.effectiveCanaryShare == 1)
        #expect(SolverFixture.groups(assignment, service).canary.allSatisfy { $0 >= 1 })
        #expect(assignment.explanation?.contains("no live stable endpoint") == true)
    }

    @Test func noCanaryAtZeroTargetNeedsNoExplanation() {
        let assignment = WeightSolver.solve(SolverFixture.service(.weightedRoundRobin, stable: 3, canary: 0, basisPoints: 0))
        #expect(assignment.explanation == nil)
        #expect(assignment.cycleLength == 3)
    }

    @Test(arguments: schedulers)
    func noLiveEndpointWarns(scheduler: Scheduler) {
        let service = SolverFixture.service(scheduler, stable: 0, canary: 0, basisPoints: 1000, drainingStable: 2)
        let assignment = WeightSolver.solve(service)
        #expect(assignment.weights.values.allSatisfy { $0 == 0 })
        #expect(!assignment.warnings.isEmpty)
        #expect(assignment.explanation?.contains("no live endpoint") == true)
    }

    /// An address in both groups is one destination carrying both groups' shares for it: stable
    /// asks 25 % of each of its two, canary 25 % of each of its two, so the shared one gets 50 %.
    @Test func anAddressInBothGroupsCarriesBothShares() {
        var service = SolverFixture.service(.weightedRoundRobin, stable: 2, canary: 1, basisPoints: 5000)
        let shared = SolverFixture.address(0, canary: false)
        service.canary.append(Endpoint(shared))
        let assignment = WeightSolver.solve(service)
        // Hand-solved: the shortest wrr cycle with shares 50 / 25 / 25 %.
        #expect(assignment.weights == [shared: 2, SolverFixture.address(1, canary: false): 1, SolverFixture.address(0, canary: true): 1])
        #expect(assignment.explanation?.contains("in more than one group (stable, canary)") == true)
        #expect(assignment.groups.map(\.effective) == [0.5, 0.5])
        #expect(assignment.effectiveCanaryShare == 0.5)
        #expect(assignment.cycleLength == 4)
    }

    @Test func anAddressListedTwiceInOneGroupIsKeptOnce() {
        var service = SolverFixture.service(.weightedRoundRobin, stable: 2, canary: 1, basisPoints: 5000)
        service.stable.append(service.stable[0])
        let assignment = WeightSolver.solve(service)
        #expect(assignment.weights.count == 3)
        #expect(assignment.warnings.contains { $0.contains("listed twice") })
        #expect(assignment.effectiveCanaryShare == 0.5)
    }

    /// The kernel's order from a dump decides which endpoints starve when sh has too many:
    /// the last listed.
    @Test func kernelOrderDecidesWhoStarves() throws {
        let service = SolverFixture.service(.sourceHashing, stable: 257, canary: 0, basisPoints: 0)
        let order = service.stable.map(\.address)  // stable 0 listed first, so stable 256 is last
        let assignment = WeightSolver.solve(service, kernelOrder: order)
        let warning = try #require(assignment.warnings.first { $0.contains("no new connections") })
        #expect(warning.contains(SolverFixture.address(256, canary: false).description))
        #expect(!warning.contains(SolverFixture.address(0, canary: false).description))
    }
}
