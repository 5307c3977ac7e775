import IPVS
import PropertyBased
import Testing

@testable import CanaryCore

/// Services of any number of groups: group g's endpoints on 10.(10 + g).0.0/16.
enum GroupFixture {
    struct Group {
        var weight: Int
        var live: Int
        var draining: Int = 0
    }

    static func address(group: Int, index: Int) -> SocketAddress {
        let bytes: [UInt8] = [10, UInt8(10 + group), UInt8(index / 256), UInt8(index % 256)]
        guard let address = IPAddress(bytes: bytes) else { preconditionFailure("four bytes make an IPv4 address") }
        return SocketAddress(address: address, port: 8080)
    }

    static func service(
        _ scheduler: Scheduler, _ groups: [Group], fallback: UnweightedFallback = .refuseNewConnections
    ) -> DesiredService {
        guard let virtualAddress = SocketAddress("10.96.0.20:80") else { preconditionFailure("a valid address") }
        let backends = groups.enumerated().map { g, group in
            BackendGroup(
                name: "g\(g)", weight: group.weight,
                endpoints: (0..<group.live).map { Endpoint(address(group: g, index: $0)) }
                    + (0..<group.draining).map { Endpoint(address(group: g, index: group.live + $0), state: .draining) })
        }
        return DesiredService(
            origin: .staticService("groups"), key: .inet(.tcp, virtualAddress), scheduler: scheduler, backends: backends,
            unweightedFallback: fallback)
    }

    /// What each group should get before any scheduler's rounding, written out independently of
    /// the solver: weight over the weights of groups with a live endpoint; nil when refused.
    static func expectedTargets(_ groups: [Group]) -> [Double]? {
        let usable = groups.filter { $0.weight > 0 && $0.live > 0 }.reduce(0) { $0 + $1.weight }
        guard usable > 0 else { return nil }
        return groups.map { $0.weight > 0 && $0.live > 0 ? Double($0.weight) / Double(usable) : 0 }
    }

    /// The weights of each group's endpoints, in the group's order (live, then draining).
    static func weights(_ assignment: WeightAssignment, _ service: DesiredService) -> [[Int]] {
        service.backends.map { group in group.endpoints.map { Int(assignment.weights[$0.address] ?? -1) } }
    }

    /// Each group's share by replaying the kernel's scheduler model over the weights in the
    /// kernel's list order (most recently added first: the reverse of the service's order).
    static func modelShares(_ assignment: WeightAssignment, _ service: DesiredService) -> [Double] {
        let order = Array(assignment.destinationOrder.reversed())
        let groupOf = Dictionary(
            service.backends.enumerated().flatMap { g, group in group.endpoints.map { ($0.address, g) } },
            uniquingKeysWith: { first, _ in first })
        let weights = order.map { Int(assignment.weights[$0] ?? 0) }
        let counts: [Int]
        switch service.scheduler {
        case .sourceHashing: counts = SourceHashingModel(weights: weights).servedBuckets(fallback: true)
        case .maglevHashing:
            counts = MaglevHashingModel.entryCounts(turns: MaglevHashingModel.turns(lastWeights: weights))
        case .roundRobin: counts = weights.map { $0 > 0 ? 1 : 0 }
        default:
            // One whole cycle of the kernel's wrr, destination by destination.
            var model = WeightedRoundRobinModel(weights: weights)
            counts = model.schedule(WeightedRoundRobinModel.cycleLength(weights)).reduce(into: weights.map { _ in 0 }) {
                $0[$1] += 1
            }
        }
        var perGroup = service.backends.map { _ in 0 }
        for (address, count) in zip(order, counts) { perGroup[groupOf[address] ?? 0] += count }
        let total = perGroup.reduce(0, +)
        return perGroup.map { total == 0 ? 0 : Double($0) / Double(total) }
    }
}

@Suite("Weight solver: any number of groups")
struct WeightSolverGroupsTests {
    typealias G = GroupFixture.Group

    @Test("70/20/10, one endpoint each: hand-solved weights")
    func threeGroups() {
        let groups = [G(weight: 70, live: 1), G(weight: 20, live: 1), G(weight: 10, live: 1)]
        let wrr = WeightSolver.solve(GroupFixture.service(.weightedRoundRobin, groups))
        #expect(GroupFixture.weights(wrr, GroupFixture.service(.weightedRoundRobin, groups)) == [[7], [2], [1]])
        #expect(wrr.cycleLength == 10)
        #expect(wrr.groups.map(\.effective) == [0.7, 0.2, 0.1])
        #expect(wrr.explanation == nil && wrr.groups.allSatisfy { $0.reason == nil })

        // sh: 256 × (0.7, 0.2, 0.1) = 179.2, 51.2, 25.6 buckets: 179, 51, 26.
        let sh = WeightSolver.solve(GroupFixture.service(.sourceHashing, groups))
        #expect(GroupFixture.weights(sh, GroupFixture.service(.sourceHashing, groups)) == [[179], [51], [26]])
        let expectedShares: [Double] = [179, 51, 26].map { $0 / 256 }
        #expect(sh.groups.map(\.effective) == expectedShares)
        #expect(sh.groups[2].reason == "sh gives it 26 of 256 buckets")
    }

    @Test("Four groups: one of weight 0, one without endpoints: the others take its share by weight")
    func weightZeroAndEmptyGroups() {
        let groups = [G(weight: 50, live: 2), G(weight: 30, live: 1), G(weight: 0, live: 1), G(weight: 20, live: 0)]
        let service = GroupFixture.service(.weightedRoundRobin, groups)
        let assignment = WeightSolver.solve(service)
        // 50 : 30 over the usable 80: 62.5 % and 37.5 %; 5 : 3 would split the first group's 5 as
        // 3 + 2, so equal weights within groups (cycle 16, under the 1024 limit) are preferred.
        #expect(GroupFixture.weights(assignment, service) == [[5, 5], [6], [0], []])
        #expect(assignment.cycleLength == 16)
        #expect(assignment.groups.map(\.effective) == [0.625, 0.375, 0, 0])
        #expect(assignment.groups.map(\.target) == [0.5, 0.3, 0, 0.2])
        #expect(assignment.groups[3].reason == "no live endpoint: its share goes to the other groups")
        #expect(assignment.groups[0].reason?.contains("takes part of the share of groups without live endpoints") == true)
        #expect(assignment.explanation?.contains("no live g3 endpoint: its share goes to g0 and g1") == true)
        #expect(!assignment.refusesNewConnections)
    }

    @Test("Gateway API's rule: every weight 0, or no weighted group with a live endpoint: new connections refused")
    func refusals() {
        for groups in [[G(weight: 0, live: 2), G(weight: 0, live: 1)], [G(weight: 0, live: 2), G(weight: 5, live: 0, draining: 1)]] {
            let service = GroupFixture.service(.weightedRoundRobin, groups)
            let assignment = WeightSolver.solve(service)
            #expect(assignment.refusesNewConnections)
            #expect(assignment.weights.values.allSatisfy { $0 == 0 })
            #expect(assignment.weights.count == groups.reduce(0) { $0 + $1.live + $1.draining })
            #expect(assignment.warnings.contains { $0.contains("new connections are refused") })
        }
        // The stable/canary split's rule instead: the group of weight 0 takes the connections.
        let service = GroupFixture.service(
            .weightedRoundRobin, [G(weight: 0, live: 2), G(weight: 5, live: 0)], fallback: .useGroupsOfWeightZero)
        let assignment = WeightSolver.solve(service)
        #expect(!assignment.refusesNewConnections)
        #expect(GroupFixture.weights(assignment, service) == [[1, 1], []])
    }

    @Test("Stable and canary Services selecting the same pods (Argo Rollouts at rest): one destination each")
    func sharedEndpoints() {
        let pods = (0..<3).map { Endpoint(GroupFixture.address(group: 0, index: $0)) }
        guard let virtualAddress = SocketAddress("10.96.0.21:80") else { return }
        for (stableWeight, canaryWeight) in [(100, 0), (90, 10), (1, 1)] {
            let service = DesiredService(
                origin: .staticService("argo"), key: .inet(.tcp, virtualAddress), scheduler: .weightedRoundRobin,
                backends: [
                    BackendGroup(name: "payments-stable", weight: stableWeight, endpoints: pods),
                    BackendGroup(name: "payments-canary", weight: canaryWeight, endpoints: pods),
                ])
            let assignment = WeightSolver.solve(service)
            #expect(assignment.destinationOrder == pods.map(\.address))
            #expect(Set(assignment.weights.values) == [1], "every pod carries the same sum of both shares")
            let total = Double(stableWeight + canaryWeight)
            #expect(abs(assignment.groups[0].effective - Double(stableWeight) / total) < 1e-9)
            #expect(abs(assignment.groups[1].effective - Double(canaryWeight) / total) < 1e-9)
            #expect(assignment.explanation?.contains("in more than one group") == true)
        }
    }

    static let schedulers: [Scheduler] = [.weightedRoundRobin, .sourceHashing, .maglevHashing, .roundRobin]

    /// 1 to 16 groups, up to 250 endpoints in all: no scheduler limit broken, no live endpoint of
    /// a group with traffic starved, the shares the kernel model gives are the ones reported, and
    /// wrr within 0.01 pp of every target.
    @Test func anyGroupsKeepEveryRule() async {
        await propertyCheck(
            count: 300, input: Gen.int(in: 0..<4), Gen.int(in: 1...16), Gen.int(in: 0...Int(UInt32.max))
        ) { schedulerIndex, groupCount, seed in
            var random = SplitMix(seed: UInt64(seed))
            let budget = Int(random.next() % 250) + 1
            let groups = (0..<groupCount).map { _ in
                let weight = [0, 1, 7, 100, 1_000_000, Int(random.next() % 1_000_001)][Int(random.next() % 6)]
                return G(
                    weight: weight, live: Int(random.next() % UInt64(max(1, budget / groupCount) + 1)),
                    draining: random.next() % 5 == 0 ? 1 : 0)
            }
            let scheduler = Self.schedulers[schedulerIndex]
            let service = GroupFixture.service(scheduler, groups)
            let assignment = WeightSolver.solve(service)
            let weights = GroupFixture.weights(assignment, service)
            let all = weights.flatMap { $0 }
            #expect(all.allSatisfy { $0 >= 0 })
            #expect(assignment.weights.count == groups.reduce(0) { $0 + $1.live + $1.draining })
            guard let targets = GroupFixture.expectedTargets(groups) else {
                #expect(assignment.refusesNewConnections && all.allSatisfy { $0 == 0 })
                return
            }
            for (g, group) in groups.enumerated() {
                let live = weights[g].prefix(group.live), draining = weights[g].dropFirst(group.live)
                #expect(draining.allSatisfy { $0 == 0 })
                #expect(live.allSatisfy { targets[g] > 0 ? $0 >= 1 : $0 == 0 }, "group \(g) \(group) \(weights[g])")
            }
            let total = all.count
            switch scheduler {
            case .sourceHashing where total <= 256:
                #expect(all.map { max($0, 1) }.reduce(0, +) <= 256)
            case .sourceHashing:
                #expect(all.allSatisfy { $0 <= 1 })
            case .maglevHashing:
                #expect(all.allSatisfy { $0 <= 63 })
                #expect(all.reduce(0, +) <= 4093)
            case .weightedRoundRobin:
                for g in groups.indices {
                    #expect(abs(assignment.groups[g].effective - targets[g]) <= 0.0001 + 1e-9, "group \(g): \(groups)")
                }
                #expect(assignment.cycleLength == WeightedRoundRobinModel.cycleLength(all.filter { $0 > 0 }))
            default:
                break
            }
            // The kernel model's replay is the oracle for what each group really gets.
            let replayed = GroupFixture.modelShares(assignment, service)
            for g in groups.indices {
                #expect(abs(assignment.groups[g].effective - replayed[g]) < 1e-9, "group \(g): \(groups)")
            }
            #expect(abs(assignment.groups.reduce(0) { $0 + $1.effective } - 1) < 1e-9)
        }
    }

    /// wrr's cycle is the shortest (no shorter cycle has integer totals, each at least the group's
    /// endpoint count, within 0.01 pp of every target), or, when equal weights within each group
    /// need a longer one, the shortest such cycle up to max(1024, twice the shortest): searched
    /// exhaustively.
    @Test(arguments: [[3, 2, 1], [5, 3, 2], [1, 1, 1], [333, 333, 334], [1, 2, 3, 4], [9_000, 999, 1]])
    func weightedRoundRobinCycleIsShortest(weights: [Int]) {
        let groups = weights.enumerated().map { G(weight: $1, live: 1 + $0 % 2) }
        let service = GroupFixture.service(.weightedRoundRobin, groups)
        let assignment = WeightSolver.solve(service)
        let cycle = assignment.cycleLength ?? 0
        let targets = weights.map { Double($0) / Double(weights.reduce(0, +)) }
        func feasible(_ total: Int, equal: Bool) -> Bool {
            // Any totals within tolerance summing to `total`, by walking every group's window.
            func walk(_ g: Int, _ left: Int) -> Bool {
                if g == groups.count { return left == 0 }
                for c in groups[g].live...max(groups[g].live, left) where !equal || c % groups[g].live == 0 {
                    if abs(Double(c) / Double(total) - targets[g]) <= 0.0001 + 1e-12 && walk(g + 1, left - c) { return true }
                }
                return false
            }
            return walk(0, total)
        }
        guard let shortest = (1...20_000).first(where: { feasible($0, equal: false) }) else {
            Issue.record("no cycle up to 20,000")
            return
        }
        let shortestEqual = (1...max(1024, 2 * shortest)).first { feasible($0, equal: true) }
        #expect(cycle == (shortestEqual ?? shortest), "shortest \(shortest), shortest with equal weights \(String(describing: shortestEqual))")
    }

    /// sh: the bucket counts minimise the largest group error (no draining endpoints: a group's
    /// share is its buckets over 256), checked against every split of the 256 buckets.
    @Test(arguments: [[70, 20, 10], [1, 1, 1], [5, 90, 5], [1, 1_000_000, 3], [33, 33, 34]], [[1, 1, 1], [3, 40, 2], [100, 1, 50]])
    func sourceHashingIsBestForThreeGroups(weights: [Int], counts: [Int]) {
        let groups = zip(weights, counts).map { G(weight: $0, live: $1) }
        let service = GroupFixture.service(.sourceHashing, groups)
        let assignment = WeightSolver.solve(service)
        let targets = weights.map { Double($0) / Double(weights.reduce(0, +)) }
        let solverError = zip(assignment.groups, targets).map { abs($0.effective - $1) }.max() ?? 1
        var best = Double.infinity
        for b0 in counts[0]...256 {
            for b1 in counts[1]...256 where 256 - b0 - b1 >= counts[2] {
                let b = [b0, b1, 256 - b0 - b1]
                best = min(best, zip(b, targets).map { abs(Double($0) / 256 - $1) }.max() ?? 1)
            }
        }
        #expect(abs(solverError - best) < 1e-12, "solver \(solverError), best \(best)")
    }

    /// mh: the turns' worst case over every list order is within one table entry of the best of
    /// every possible turns (exhaustive for three groups of one or two endpoints).
    @Test(arguments: [[70, 20, 10], [1, 1, 1], [5, 90, 5], [1, 1_000, 3], [50, 49, 1]])
    func maglevIsWithinAnEntryOfTheBest(weights: [Int]) {
        let counts = [1, 2, 1]
        let groups = zip(weights, counts).map { G(weight: $0, live: $1) }
        let service = GroupFixture.service(.maglevHashing, groups)
        let assignment = WeightSolver.solve(service)
        let targets = weights.map { Double($0) / Double(weights.reduce(0, +)) }
        // The worst case by the populate loop's arithmetic: q rounds of turns, then the remainder
        // r to whichever destinations come first.
        func worst(_ turns: [Int]) -> Double {
            let total = turns.reduce(0, +), rounds = 4093 / total, remainder = 4093 % total
            return turns.indices.map { g in
                let low = rounds * turns[g] + max(0, remainder - (total - turns[g]))
                let high = rounds * turns[g] + min(turns[g], remainder)
                return max(abs(Double(low) - targets[g] * 4093), abs(Double(high) - targets[g] * 4093))
            }.max() ?? 0
        }
        let weights = GroupFixture.weights(assignment, service)
        let chosen = weights.map { $0.reduce(0, +) }
        var best = Double.infinity
        for c0 in counts[0]...(63 * counts[0]) {
            for c1 in counts[1]...(63 * counts[1]) {
                for c2 in counts[2]...(63 * counts[2]) { best = min(best, worst([c0, c1, c2])) }
            }
        }
        #expect(worst(chosen) <= best + 1 + 1e-9, "chosen \(chosen): \(worst(chosen)), best \(best)")
    }

    /// Two groups whose target is whole basis points take the two-class solver; the general one
    /// must find the same shortest wrr cycle for them (both search for the minimum).
    @Test func generalSolverAgreesWithTheTwoClassOne() async {
        await propertyCheck(count: 200, input: Gen.int(in: 1...60), Gen.int(in: 1...60), Gen.int(in: 1...9_999)) {
            stable, canary, basisPoints in
            let target = Double(basisPoints) / 10_000
            let general = ManyClassSolver.computeWeightedRoundRobin(counts: [stable, canary], targets: [1 - target, target])
            let shortest = WeightedRoundRobinSolver.shortestSplit(
                stableCount: stable, canaryCount: canary, basisPoints: basisPoints)
            #expect(general.sum == shortest.cycle || general.isEqualWithinClasses)
            #expect(general.sum <= max(WeightedRoundRobinSolver.longCycle, 2 * shortest.cycle))
            #expect(abs(Double(general.totals[1]) / Double(general.sum) - target) <= 0.0001 + 1e-12)
        }
    }
}

/// A small seeded generator, so that a failing case replays.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
