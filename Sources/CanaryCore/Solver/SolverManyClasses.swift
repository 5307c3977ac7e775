import IPVS
import Synchronization

/// Weights for services whose new connections go to any number of destination classes (three
/// groups and more, shared endpoints, targets that are not whole basis points), following the
/// same kernel rules as the two-class solvers beside this file:
///
/// - wrr: the shortest cycle `T` with integer class totals `c_i ≥ n_i` (every live endpoint at
///   least weight 1) such that every class's `c_i / T` is within 0.01 percentage point of its
///   target; equal weights within each class when such a cycle is at most `max(1024, 2T)`.
/// - sh: 256 buckets, `b_i ≥ n_i` per class, `Σ b_i` = the buckets left by weight-0 endpoints;
///   the counts minimising the largest class error (exactly, by a minimax apportionment; with
///   weight-0 endpoints, whose buckets move by sh-fallback, then improved by single moves
///   against the kernel model).
/// - mh: turns `n_i ≤ c_i ≤ 63 n_i`, their sum at most 4093; the totals whose worst case over
///   every list order (the last, partial round) is smallest; equal turns within each class
///   unless unequal ones are better by more than one table entry.
/// - rr, lc: weights ignored but 0: shares are live-endpoint ratios.
enum ManyClassSolver {
    static let tolerance = 1e-4
    private static let epsilon = 1e-9

    /// Class totals for `targets` (each > 0, summing to 1) over `counts` live endpoints (each ≥ 1).
    struct Totals: Hashable {
        var totals: [Int]
        /// wrr: connections per cycle; mh: turns per round; sh: buckets held by live endpoints.
        var sum: Int
        var isEqualWithinClasses: Bool
    }

    struct ShapeKey: Hashable {
        var scheduler: Scheduler
        var counts: [Int]
        var targets: [Double]
    }

    private static let cache = Mutex<[ShapeKey: Totals]>([:])

    private static func cached(_ key: ShapeKey, _ compute: () -> Totals) -> Totals {
        if let known = cache.withLock({ $0[key] }) { return known }
        let value = compute()
        cache.withLock { cache in
            if cache.count >= 4096 { cache.removeAll(keepingCapacity: true) }
            cache[key] = value
        }
        return value
    }

    // MARK: - Apportionment

    /// Integers `b_i` in `lower_i ... upper_i` summing to `total` that minimise the largest
    /// `|b_i − ideal_i|`: start from the nearest integers, then take one from the class furthest
    /// above its ideal (or give one to the furthest below) until the sum is right. nil when the
    /// bounds cannot sum to `total`.
    static func apportion(total: Int, ideals: [Double], lower: [Int], upper: [Int]) -> [Int]? {
        guard lower.reduce(0, +) <= total, upper.reduce(0, +) >= total else { return nil }
        var parts = ideals.indices.map { min(max(Int(ideals[$0].rounded()), lower[$0]), upper[$0]) }
        var sum = parts.reduce(0, +)
        while sum > total {
            var pick = -1
            for i in parts.indices where parts[i] > lower[i] {
                if pick < 0 || Double(parts[i]) - ideals[i] > Double(parts[pick]) - ideals[pick] { pick = i }
            }
            parts[pick] -= 1
            sum -= 1
        }
        while sum < total {
            var pick = -1
            for i in parts.indices where parts[i] < upper[i] {
                if pick < 0 || Double(parts[i]) - ideals[i] < Double(parts[pick]) - ideals[pick] { pick = i }
            }
            parts[pick] += 1
            sum += 1
        }
        return parts
    }

    // MARK: - wrr

    /// The shortest wrr cycle within tolerance of every target (see the type's comment).
    static func weightedRoundRobin(counts: [Int], targets: [Double]) -> Totals {
        cached(ShapeKey(scheduler: .weightedRoundRobin, counts: counts, targets: targets)) {
            computeWeightedRoundRobin(counts: counts, targets: targets)
        }
    }

    /// Each class's window of totals for a cycle of `total`: within tolerance and at least its count.
    private static func windows(total: Int, counts: [Int], targets: [Double]) -> (lower: [Int], upper: [Int])? {
        var lower: [Int] = [], upper: [Int] = []
        lower.reserveCapacity(counts.count)
        upper.reserveCapacity(counts.count)
        let t = Double(total)
        for i in counts.indices {
            let low = max(counts[i], Int(((targets[i] - tolerance) * t - epsilon).rounded(.up)))
            let high = Int(((targets[i] + tolerance) * t + epsilon).rounded(.down))
            if low > high { return nil }
            lower.append(low)
            upper.append(high)
        }
        return (lower, upper)
    }

    static func computeWeightedRoundRobin(counts: [Int], targets: [Double]) -> Totals {
        var start = counts.reduce(0, +)
        for i in counts.indices {
            start = max(start, Int((Double(counts[i]) / (targets[i] + tolerance) - epsilon).rounded(.up)))
        }
        var cycle = start
        var unequal: [Int]
        while true {
            if let (lower, upper) = windows(total: cycle, counts: counts, targets: targets),
                let parts = apportion(
                    total: cycle, ideals: targets.map { $0 * Double(cycle) }, lower: lower, upper: upper)
            {
                unequal = parts
                break
            }
            cycle += 1
        }
        if zip(unequal, counts).allSatisfy({ $0 % $1 == 0 }) {
            return Totals(totals: unequal, sum: cycle, isEqualWithinClasses: true)
        }
        // Equal weights within classes: the first cycle up to the limit whose windows each hold a
        // multiple of the class's count, the multiples summing to the cycle (a cycle with common
        // divisor g is found reduced first, so the first found is the shortest).
        let limit = max(WeightedRoundRobinSolver.longCycle, 2 * cycle)
        var candidate = start
        while candidate <= limit {
            defer { candidate += 1 }
            guard let (lower, upper) = windows(total: candidate, counts: counts, targets: targets),
                let parts = multiplesSumming(to: candidate, counts: counts, lower: lower, upper: upper)
            else { continue }
            return Totals(totals: parts, sum: candidate, isEqualWithinClasses: true)
        }
        return Totals(totals: unequal, sum: cycle, isEqualWithinClasses: false)
    }

    /// A multiple of each class's count inside its window, the multiples summing to `total`
    /// (a depth-first walk: windows hold one or two multiples at the cycles searched); nil when none.
    static func multiplesSumming(to total: Int, counts: [Int], lower: [Int], upper: [Int]) -> [Int]? {
        var choices: [[Int]] = []
        choices.reserveCapacity(counts.count)
        for i in counts.indices {
            let first = max(1, (lower[i] + counts[i] - 1) / counts[i]), last = upper[i] / counts[i]
            guard first <= last else { return nil }
            choices.append((first...last).map { $0 * counts[i] })
        }
        // The least and most the classes after i can still add.
        var least = [Int](repeating: 0, count: counts.count + 1), most = least
        for i in counts.indices.reversed() {
            least[i] = least[i + 1] + (choices[i].first ?? 0)
            most[i] = most[i + 1] + (choices[i].last ?? 0)
        }
        var parts: [Int] = []
        func walk(_ i: Int, _ left: Int) -> Bool {
            if i == counts.count { return left == 0 }
            guard least[i] <= left, left <= most[i] else { return false }
            for choice in choices[i] {
                parts.append(choice)
                if walk(i + 1, left - choice) { return true }
                parts.removeLast()
            }
            return false
        }
        return walk(0, total) ? parts : nil
    }

    // MARK: - sh

    /// Bucket totals for sh when every destination has a bucket (`Σ counts + weight-0 ≤ 256`):
    /// the exact minimax apportionment of the live buckets.
    static func sourceHashingBuckets(counts: [Int], targets: [Double], liveBuckets: Int) -> [Int]? {
        apportion(
            total: liveBuckets, ideals: targets.map { $0 * Double(liveBuckets) }, lower: counts,
            upper: counts.map { _ in liveBuckets })
    }

    // MARK: - mh

    /// The largest distance, in table entries over every list order, of any class from its target
    /// with these turn totals (see `MaglevHashingSolver`).
    static func maglevWorstError(_ totals: [Int], targets: [Double]) -> Double {
        let table = MaglevHashingModel.tableSize
        let sum = totals.reduce(0, +)
        let rounds = table / sum, remainder = table % sum
        var worst = 0.0
        for i in totals.indices {
            let wanted = targets[i] * Double(table)
            let fewest = Double(rounds * totals[i] + max(0, remainder - (sum - totals[i])))
            let most = Double(rounds * totals[i] + min(totals[i], remainder))
            worst = max(worst, abs(fewest - wanted), abs(most - wanted))
        }
        return worst
    }

    static func maglevTurns(counts: [Int], targets: [Double]) -> Totals {
        cached(ShapeKey(scheduler: .maglevHashing, counts: counts, targets: targets)) {
            computeMaglevTurns(counts: counts, targets: targets)
        }
    }

    static func computeMaglevTurns(counts: [Int], targets: [Double]) -> Totals {
        let maximum = MaglevHashingModel.maximumTurns
        let smallest = counts.reduce(0, +)
        let largest = min(MaglevHashingModel.tableSize, maximum * smallest)
        var bestEqual: (totals: [Int], error: Double)? = nil
        var bestUnequal: (totals: [Int], error: Double)? = nil
        func better(_ error: Double, _ totals: [Int], than best: (totals: [Int], error: Double)?) -> Bool {
            guard let best else { return true }
            if error < best.error - epsilon { return true }
            return abs(error - best.error) <= epsilon && totals.reduce(0, +) < best.totals.reduce(0, +)
        }
        for sum in smallest...max(smallest, largest) {
            // Equal turns within classes, scaled to about this many per round.
            let equal = counts.indices.map { i in
                min(max(Int((targets[i] * Double(sum) / Double(counts[i])).rounded()), 1), maximum) * counts[i]
            }
            if equal.reduce(0, +) <= MaglevHashingModel.tableSize {
                let error = maglevWorstError(equal, targets: targets)
                if better(error, equal, than: bestEqual) { bestEqual = (equal, error) }
            }
            // Turns differing by 1 within a class: the minimax apportionment of this sum.
            if let parts = apportion(
                total: sum, ideals: targets.map { $0 * Double(sum) }, lower: counts, upper: counts.map { $0 * maximum })
            {
                let error = maglevWorstError(parts, targets: targets)
                if better(error, parts, than: bestUnequal) { bestUnequal = (parts, error) }
            }
        }
        guard let equal = bestEqual else {
            preconditionFailure("one turn each always fits the table")
        }
        if let unequal = bestUnequal, unequal.error < equal.error - 1 {
            let isEqual = zip(unequal.totals, counts).allSatisfy { $0 % $1 == 0 }
            return Totals(totals: unequal.totals, sum: unequal.totals.reduce(0, +), isEqualWithinClasses: isEqual)
        }
        return Totals(totals: equal.totals, sum: equal.totals.reduce(0, +), isEqualWithinClasses: true)
    }
}
