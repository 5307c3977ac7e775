import IPVS

/// Weights for mh: the kernel turns weights into at most 63 "turns" per destination (gcd, then a
/// shift to 6 bits) and fills its 4093-entry table in rounds of turns (see `MaglevHashingModel`).
/// Weights of 1 ... 63 pass through that quantisation unchanged in proportion (their largest over
/// their gcd has at most 6 bits, so no shift), and every reachable split of the table has such
/// weights; so the solver chooses turns directly, 1 ... 63 per live endpoint, their sum at most
/// 4093 (past that the first round does not finish and the endpoints late in the list get no
/// entry).
///
/// With turns summing to T, 4093 = q·T + r: each destination gets q rounds of its turns, and the
/// last r entries go to the destinations first in the list. The canary's entries are therefore
/// `q·C + x` with x between `max(0, r - S)` (canary last) and `min(C, r)` (canary first). The
/// list order is only assumed (it depends on the history of adds), so the solver picks the turns
/// whose worst case over every order is closest to the target, and reports the share for the
/// assumed order. Equal turns within each group are kept unless turns differing by 1 within a
/// group are closer by more than one table entry (1/4093, below the hash's sampling noise).
enum MaglevHashingSolver {
    static let tableSize = MaglevHashingModel.tableSize
    static let maximumTurns = MaglevHashingModel.maximumTurns

    struct Candidate {
        var stableTotal: Int
        var canaryTotal: Int
        /// The largest distance to the target over every list order, in entries.
        var worstError: Double
        var total: Int { stableTotal + canaryTotal }

        /// The canary's fewest and most entries over every list order, for `rounds = 4093 / total`
        /// and `remainder = 4093 % total`.
        static func canaryEntryRange(stableTotal: Int, canaryTotal: Int, rounds: Int, remainder: Int) -> ClosedRange<Int> {
            (rounds * canaryTotal + max(0, remainder - stableTotal))...(rounds * canaryTotal + min(canaryTotal, remainder))
        }

        static func canaryEntryRange(stableTotal: Int, canaryTotal: Int) -> ClosedRange<Int> {
            let total = stableTotal + canaryTotal
            return canaryEntryRange(
                stableTotal: stableTotal, canaryTotal: canaryTotal, rounds: tableSize / total, remainder: tableSize % total)
        }

        init(stableTotal: Int, canaryTotal: Int, rounds: Int, remainder: Int, targetEntries: Double) {
            self.stableTotal = stableTotal
            self.canaryTotal = canaryTotal
            let range = Self.canaryEntryRange(
                stableTotal: stableTotal, canaryTotal: canaryTotal, rounds: rounds, remainder: remainder)
            worstError = max(abs(Double(range.lowerBound) - targetEntries), abs(Double(range.upperBound) - targetEntries))
        }

        func isBetter(than other: Candidate?) -> Bool {
            guard let other else { return true }
            if worstError < other.worstError - 1e-9 { return true }
            return abs(worstError - other.worstError) <= 1e-9 && total < other.total
        }
    }

    static func solve(
        _ endpoints: TwoClassView, target: CanaryShare, stableGetsTraffic: Bool, canaryGetsTraffic: Bool
    ) -> WeightAssignment {
        let stableCount = stableGetsTraffic ? endpoints.liveStableCount : 0
        let canaryCount = canaryGetsTraffic ? endpoints.liveCanaryCount : 0
        var warnings: [String] = []
        if endpoints.listOrder.count > tableSize {
            warnings.append(
                "mh's table has \(tableSize) entries: the kernel refuses more than \(tableSize) destinations "
                    + "(this service has \(endpoints.listOrder.count))")
        }
        guard stableCount > 0 && canaryCount > 0 && stableCount + canaryCount <= tableSize else {
            // One group only (or more endpoints than entries): one turn each.
            let weights = endpoints.listWeights(stableTotal: stableCount, canaryTotal: canaryCount)
            return WeightAssignment(
                weights: endpoints.weightMap(weights), effectiveCanaryShare: evaluate(endpoints, weights), warnings: warnings)
        }
        let chosen = bestTurns(stableCount: stableCount, canaryCount: canaryCount, target: target)
        let isEqual = chosen.stableTotal % stableCount == 0 && chosen.canaryTotal % canaryCount == 0

        let weights = endpoints.listWeights(stableTotal: chosen.stableTotal, canaryTotal: chosen.canaryTotal)
        let share = evaluate(endpoints, weights)
        let range = Candidate.canaryEntryRange(stableTotal: chosen.stableTotal, canaryTotal: chosen.canaryTotal)
        var notes: [String] = []
        if !SolverSupport.matches(share, target) {
            var note =
                "mh keeps at most 63 turns per endpoint in a 4093-entry table: canary turns \(chosen.canaryTotal) "
                + "of \(chosen.total) per round give it \(SolverSupport.percent(share)) of the entries (target \(target))"
            if range.lowerBound != range.upperBound {
                note +=
                    ", \(SolverSupport.percent(Double(range.lowerBound) / Double(tableSize)))"
                    + " to \(SolverSupport.percent(Double(range.upperBound) / Double(tableSize))) by the kernel's list order"
            }
            notes.append(note)
        }
        if !isEqual { notes.append("endpoints of a group differ by 1 in weight, closer than equal weights by over one entry") }
        let zeroWeightCount = endpoints.listOrder.count - stableCount - canaryCount
        if zeroWeightCount > 0 {
            notes.append(
                "\(zeroWeightCount) weight-0 endpoints keep their entries from their last weight; their clients move "
                    + "to live ones by mh-fallback")
        }
        return WeightAssignment(
            weights: endpoints.weightMap(weights), effectiveCanaryShare: share,
            explanation: notes.isEmpty ? nil : notes.joined(separator: "; "), warnings: warnings)
    }

    /// The group totals of turns with the smallest worst case over list orders: equal turns
    /// within each group, unless turns differing by 1 are better by more than one entry.
    ///
    /// The canary's entries over every order form an interval around the ideal `4093·C/T`, so
    /// `4093·|C/T - p|` bounds a candidate's worst case from below: the equal search walks the
    /// stable turns outwards from the ideal for each canary turn and stops where that bound
    /// passes the best so far.
    static func bestTurns(stableCount: Int, canaryCount: Int, target: CanaryShare) -> Candidate {
        let share = target.fraction
        let targetEntries = share * Double(tableSize)
        func lowerBound(_ stableTotal: Int, _ canaryTotal: Int) -> Double {
            abs(Double(canaryTotal) / Double(stableTotal + canaryTotal) - share) * Double(tableSize)
        }
        func candidate(_ stableTotal: Int, _ canaryTotal: Int) -> Candidate {
            let total = stableTotal + canaryTotal
            return Candidate(
                stableTotal: stableTotal, canaryTotal: canaryTotal, rounds: tableSize / total,
                remainder: tableSize % total, targetEntries: targetEntries)
        }

        var bestEqual: Candidate? = nil
        for canary in 1...maximumTurns {
            let canaryTotal = canary * canaryCount
            guard canaryTotal + stableCount <= tableSize else { break }
            let ideal = Double(canaryTotal) * (1 - share) / (share * Double(stableCount))
            let below = min(maximumTurns, max(0, Int(ideal.rounded(.down))))
            // Downwards from the ideal the share only grows, upwards it only shrinks.
            var stable = below
            while stable >= 1 {
                let stableTotal = stable * stableCount
                stable -= 1
                // Too many turns for the table: smaller ones may fit.
                if stableTotal + canaryTotal > tableSize { continue }
                if let best = bestEqual, lowerBound(stableTotal, canaryTotal) > best.worstError + 1e-9 { break }
                let next = candidate(stableTotal, canaryTotal)
                if next.isBetter(than: bestEqual) { bestEqual = next }
            }
            stable = below + 1
            while stable <= maximumTurns {
                let stableTotal = stable * stableCount
                stable += 1
                if stableTotal + canaryTotal > tableSize { break }
                if let best = bestEqual, lowerBound(stableTotal, canaryTotal) > best.worstError + 1e-9 { break }
                let next = candidate(stableTotal, canaryTotal)
                if next.isBetter(than: bestEqual) { bestEqual = next }
            }
        }
        guard let bestEqual else { preconditionFailure("one turn each always fits the table") }
        guard bestEqual.worstError > 1 else { return bestEqual }

        // Turns differing by 1 within a group: every total T, the canary's part nearest the
        // target. Rounds and remainder are kept up to date without a division per total.
        var bestUnequal: Candidate? = nil
        // What an unequal candidate must beat: the equal one by more than an entry, then the best so far.
        var needed = bestEqual.worstError - 1
        let smallestTotal = stableCount + canaryCount
        let largestTotal = max(smallestTotal, min(tableSize, maximumTurns * smallestTotal))
        var rounds = tableSize / smallestTotal
        var nearest = target.basisPoints * smallestTotal / 10_000
        for total in smallestTotal...largestTotal {
            while rounds * total > tableSize { rounds -= 1 }
            while (nearest + 1) * 10_000 <= target.basisPoints * total { nearest += 1 }
            let remainder = tableSize - rounds * total
            var canaryTotal = nearest
            while canaryTotal <= nearest + 1 {
                defer { canaryTotal += 1 }
                let stableTotal = total - canaryTotal
                guard canaryTotal >= canaryCount, canaryTotal <= maximumTurns * canaryCount,
                    stableTotal >= stableCount, stableTotal <= maximumTurns * stableCount
                else { continue }
                // Cheap rejection: the canary's entries lie within rounds·C + (0 ... min(C, r)),
                // so a span wholly farther from the target than `needed` cannot win.
                let base = Double(rounds * canaryTotal)
                if base - targetEntries > needed || targetEntries - base - Double(min(canaryTotal, remainder)) > needed {
                    continue
                }
                let next = Candidate(
                    stableTotal: stableTotal, canaryTotal: canaryTotal, rounds: rounds, remainder: remainder,
                    targetEntries: targetEntries)
                if next.worstError < needed && next.isBetter(than: bestUnequal) {
                    bestUnequal = next
                    needed = next.worstError + 1e-9
                }
            }
        }
        return bestUnequal ?? bestEqual
    }

    /// The canary's share of the table entries held by live endpoints with these weights (in
    /// list order), by the populate loop's counts. Weight-0 endpoints are counted with no turns:
    /// their last weight is not known here, and their clients spread over the others.
    static func evaluate(_ endpoints: TwoClassView, _ listWeights: [Int]) -> Double {
        endpoints.canaryShare(of: MaglevHashingModel.entryCounts(turns: MaglevHashingModel.turns(lastWeights: listWeights)))
    }
}
