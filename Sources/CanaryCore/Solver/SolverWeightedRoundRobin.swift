import IPVS
import Synchronization

/// Weights for wrr, and for the schedulers that weigh destinations proportionally.
///
/// Over one cycle of `sum(weights) / gcd` connections wrr gives each destination exactly its part
/// of the total weight (see `WeightedRoundRobinModel`), so the canary's share is
/// `canaryTotal / total`. But within a cycle the kernel serves the largest weights first: a long
/// cycle delays the share. So the solver takes the smallest weights, not the largest,
/// that put the share within 0.01 percentage point of the target.
enum WeightedRoundRobinSolver {
    /// The precision asked for: 0.01 percentage point, one basis point.
    static let toleranceBasisPoints = 1
    /// A cycle longer than this many connections is mentioned in the explanation, and equal
    /// weights within a group are kept only up to this cycle (or twice the unequal one's).
    static let longCycle = 1024

    /// Group totals of weight, and the per-endpoint weights they spread to.
    struct Split: Hashable {
        var stableTotal: Int
        var canaryTotal: Int
        /// Every stable endpoint has the same weight, and every canary endpoint too.
        var isEqualWithinGroups: Bool
        /// Connections in one wrr cycle.
        var cycle: Int
        var total: Int { stableTotal + canaryTotal }
    }

    /// Whether `canary / total` is within one basis point of `basisPoints / 10_000`.
    static func isWithinTolerance(canary: Int, total: Int, basisPoints: Int) -> Bool {
        abs(10_000 * canary - basisPoints * total) <= toleranceBasisPoints * total
    }

    /// The split for `stableCount` and `canaryCount` live endpoints (both at least 1) and a target
    /// strictly between 0 and 100 %: equal weights within each group when their cycle is at most
    /// `max(longCycle, 2 × the shortest unequal cycle)`, otherwise the shortest cycle with weights
    /// that differ by at most 1 within a group.
    static func split(stableCount: Int, canaryCount: Int, basisPoints: Int) -> Split {
        precondition(stableCount > 0 && canaryCount > 0 && (1...9_999).contains(basisPoints))
        // A pure function of three small numbers, and a cluster has few distinct shapes: remember them.
        let key = SplitKey(stableCount: stableCount, canaryCount: canaryCount, basisPoints: basisPoints)
        if let known = splitCache.withLock({ $0[key] }) { return known }
        let split = computeSplit(stableCount: stableCount, canaryCount: canaryCount, basisPoints: basisPoints)
        splitCache.withLock { cache in
            if cache.count >= 4096 { cache.removeAll(keepingCapacity: true) }
            cache[key] = split
        }
        return split
    }

    struct SplitKey: Hashable {
        var stableCount: Int
        var canaryCount: Int
        var basisPoints: Int
    }

    private static let splitCache = Mutex<[SplitKey: Split]>([:])

    private static func computeSplit(stableCount: Int, canaryCount: Int, basisPoints: Int) -> Split {
        let unequal = shortestSplit(stableCount: stableCount, canaryCount: canaryCount, basisPoints: basisPoints)
        let limit = max(longCycle, 2 * unequal.cycle)
        return shortestEqualSplit(
            stableCount: stableCount, canaryCount: canaryCount, basisPoints: basisPoints, cycleLimit: limit)
            ?? unequal
    }

    /// The split with the smallest total weight (hence the shortest cycle: its weights have gcd
    /// 1, or dividing them would give a smaller one) whose share is within tolerance, weights
    /// spread evenly within each group.
    static func shortestSplit(stableCount: Int, canaryCount: Int, basisPoints: Int) -> Split {
        let scale = 10_000
        var total = max(
            stableCount + canaryCount,
            ceilingDivision(scale * canaryCount, basisPoints + toleranceBasisPoints),
            ceilingDivision(scale * stableCount, scale + toleranceBasisPoints - basisPoints))
        while true {
            let lowest = max(canaryCount, ceilingDivision((basisPoints - toleranceBasisPoints) * total, scale))
            let highest = min(total - stableCount, (basisPoints + toleranceBasisPoints) * total / scale)
            if lowest <= highest {
                let nearest = (2 * basisPoints * total + scale) / (2 * scale)
                let canary = min(max(nearest, lowest), highest)
                let stable = total - canary
                return Split(
                    stableTotal: stable, canaryTotal: canary,
                    isEqualWithinGroups: stable % stableCount == 0 && canary % canaryCount == 0, cycle: total)
            }
            total += 1
        }
    }

    /// The equal-within-groups weights (`stable` each, `canary` each) with the shortest cycle not
    /// above `cycleLimit` whose share is within tolerance; nil when none is that short.
    static func shortestEqualSplit(
        stableCount: Int, canaryCount: Int, basisPoints: Int, cycleLimit: Int
    ) -> Split? {
        var best: (stable: Int, canary: Int, cycle: Int)? = nil
        func consider(stable: Int, canary: Int) {
            guard stable >= 1, canary >= 1 else { return }
            let canaryTotal = canaryCount * canary, total = stableCount * stable + canaryTotal
            guard isWithinTolerance(canary: canaryTotal, total: total, basisPoints: basisPoints) else { return }
            let divisor = greatestCommonDivisor(stable, canary)
            let cycle = total / divisor
            guard cycle <= cycleLimit, cycle < (best?.cycle ?? Int.max) else { return }
            best = (stable / divisor, canary / divisor, cycle)
        }
        // Walk one weight k = 1, 2, ... (the canary's, then the stable one's) and take the smallest
        // other weight inside the tolerance window, until no cycle can beat the best. For a canary
        // total C and a stable total X the window is
        //   C (9999 - bp) / (bp + 1) <= X <= C (10001 - bp) / (bp - 1).
        // A pair with gcd g is found reduced at k / g, so the smallest weight of each window suffices.
        let bp = basisPoints, tolerance = toleranceBasisPoints, scale = 10_000
        var k = 1
        while true {
            let bound = min(cycleLimit, best?.cycle ?? cycleLimit)
            let canaryFirstLowest = canaryCount * k + stableCount
            let stableFirstLowest = stableCount * k + canaryCount
            if canaryFirstLowest > bound && stableFirstLowest > bound { break }
            if canaryFirstLowest <= bound {
                let canaryTotal = canaryCount * k
                let lowestStable = ceilingDivision(canaryTotal * (scale - tolerance - bp), (bp + tolerance) * stableCount)
                consider(stable: max(1, lowestStable), canary: k)
            }
            if stableFirstLowest <= bound {
                let stableTotal = stableCount * k
                let lowestCanary = ceilingDivision(stableTotal * (bp - tolerance), (scale + tolerance - bp) * canaryCount)
                consider(stable: k, canary: max(1, lowestCanary))
            }
            k += 1
        }
        guard let best else { return nil }
        return Split(
            stableTotal: stableCount * best.stable, canaryTotal: canaryCount * best.canary,
            isEqualWithinGroups: true, cycle: best.cycle)
    }

    static func ceilingDivision(_ numerator: Int, _ denominator: Int) -> Int {
        precondition(denominator > 0)
        return numerator <= 0 ? numerator / denominator : (numerator + denominator - 1) / denominator
    }

    /// Solves a wrr service whose stable and canary groups both have live endpoints.
    static func solve(_ endpoints: TwoClassView, target: CanaryShare) -> WeightAssignment {
        let split = split(
            stableCount: endpoints.liveStableCount, canaryCount: endpoints.liveCanaryCount, basisPoints: target.basisPoints)
        let weights = endpoints.weightMap(stableTotal: split.stableTotal, canaryTotal: split.canaryTotal)
        let share = Double(split.canaryTotal) / Double(split.total)
        var notes: [String] = []
        if !SolverSupport.matches(share, target) {
            notes.append(
                "wrr weights give the canary \(split.canaryTotal) of every \(split.total) connections "
                    + "(\(SolverSupport.percent(share)), target \(target)), the smallest weights within 0.01 pp")
        }
        if !split.isEqualWithinGroups {
            notes.append(
                "endpoints of a group differ by 1 in weight: equal weights would need a cycle over "
                    + "\(max(longCycle, 2 * split.cycle)) connections")
        }
        if split.cycle > longCycle {
            notes.append(
                "one wrr cycle is \(split.cycle) connections: the share holds over each whole cycle, "
                    + "the largest weights are served first within it")
        }
        return WeightAssignment(
            weights: weights, effectiveCanaryShare: share,
            explanation: notes.isEmpty ? nil : notes.joined(separator: "; "), cycleLength: split.cycle)
    }

    /// Solves a service whose scheduler weighs destinations but balances by connections in
    /// progress or at random (wlc, sed, nq, lblc, lblcr, twos, …): the same weights as wrr; the
    /// reported share is the weight share, which such a scheduler only approaches.
    static func solveProportional(
        _ endpoints: TwoClassView, target: CanaryShare, scheduler: Scheduler
    ) -> WeightAssignment {
        var assignment = solve(endpoints, target: target)
        assignment.cycleLength = nil
        assignment.explanation =
            "\(scheduler) balances by connections in progress, not in turn: the canary's weight share "
            + "is \(SolverSupport.percent(assignment.effectiveCanaryShare)) (target \(target)), the real split is approximate"
        return assignment
    }
}
