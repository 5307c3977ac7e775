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

        /// The canary's fewest and most entries over every list order.
        static func canaryEntryRange(stableTotal: Int, canaryTotal: Int) -> ClosedRange<Int> {
            let total = stableTotal + canaryTotal
            let rounds = tableSize / total, remainder = tableSize % total
            return (rounds * canaryTotal + max(0, remainder - stableTotal))...(rounds * canaryTotal + min(canaryTotal, remainder))
        }

        init(stableTotal: Int, canaryTotal: Int, targetEntries: Double) {
            self.stableTotal = stableTotal
            self.canaryTotal = canaryTotal
            let range = Self.canaryEntryRange(stableTotal: stableTotal, canaryTotal: canaryTotal)
            worstError = max(abs(Double(range.lowerBound) - targetEntries), abs(Double(range.upperBound) - targetEntries))
        }

        func isBetter(than other: Candidate?) -> Bool {
            guard let other else { return true }
            if worstError < other.worstError - 1e-9 { return true }
            return abs(worstError - other.worstError) <= 1e-9 && total < other.total
        }
    }

    static func solve(
        _ endpoints: SolverEndpoints, target: CanaryShare, stableGetsTraffic: Bool, canaryGetsTraffic: Bool
    ) -> WeightAssignment {
        let stableCount = stableGetsTraffic ? endpoints.liveStable.count : 0
        let canaryCount = canaryGetsTraffic ? endpoints.liveCanary.count : 0
        var warnings: [String] = []
        if endpoints.listOrder.count > tableSize {
            warnings.append(
                "mh's table has \(tableSize) entries: the kernel refuses more than \(tableSize) destinations "
                    + "(this service has \(endpoints.listOrder.count))")
        }
        guard stableCount > 0 && canaryCount > 0 && stableCount + canaryCount <= tableSize else {
            // One group only (or more endpoints than entries): one turn each.
            let weights = SolverSupport.weights(endpoints, stableTotal: stableCount, canaryTotal: canaryCount)
            let share = evaluate(endpoints, weights: weights)
            return WeightAssignment(weights: weights, effectiveCanaryShare: share, warnings: warnings)
        }
        let targetEntries = target.fraction * Double(tableSize)

        // Equal turns: s per stable endpoint, c per canary endpoint, every pair that fits the table.
        var bestEqual: Candidate? = nil
        for canary in 1...maximumTurns {
            let canaryTotal = canary * canaryCount
            for stable in 1...maximumTurns {
                let stableTotal = stable * stableCount
                guard stableTotal + canaryTotal <= tableSize else { break }
                let candidate = Candidate(stableTotal: stableTotal, canaryTotal: canaryTotal, targetEntries: targetEntries)
                if candidate.isBetter(than: bestEqual) { bestEqual = candidate }
            }
        }
        guard var chosen = bestEqual else { preconditionFailure("one turn each always fits the table") }
        var isEqual = true

        // Turns differing by 1 within a group: every total, the canary's part nearest the target.
        if chosen.worstError > 1 {
            var bestUnequal: Candidate? = nil
            let smallestTotal = stableCount + canaryCount
            let largestTotal = max(smallestTotal, min(tableSize, maximumTurns * smallestTotal))
            for total in smallestTotal...largestTotal {
                let nearest = target.basisPoints * total / 10_000
                for canaryTotal in nearest...(nearest + 1) {
                    let stableTotal = total - canaryTotal
                    guard (canaryCount...(maximumTurns * canaryCount)).contains(canaryTotal),
                        (stableCount...(maximumTurns * stableCount)).contains(stableTotal)
                    else { continue }
                    let candidate = Candidate(stableTotal: stableTotal, canaryTotal: canaryTotal, targetEntries: targetEntries)
                    if candidate.isBetter(than: bestUnequal) { bestUnequal = candidate }
                }
            }
            if let bestUnequal, bestUnequal.worstError < chosen.worstError - 1 {
                chosen = bestUnequal
                isEqual = false
            }
        }

        let weights = SolverSupport.weights(endpoints, stableTotal: chosen.stableTotal, canaryTotal: chosen.canaryTotal)
        let share = evaluate(endpoints, weights: weights)
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
            weights: weights, effectiveCanaryShare: share,
            explanation: notes.isEmpty ? nil : notes.joined(separator: "; "), warnings: warnings)
    }

    /// The canary's share of the table entries held by live endpoints with these weights, by the
    /// populate loop's counts in the assumed list order. Weight-0 endpoints are counted with no
    /// turns: their last weight is not known here, and their clients spread over the others.
    static func evaluate(_ endpoints: SolverEndpoints, weights: [SocketAddress: Int32]) -> Double {
        let turns = MaglevHashingModel.turns(lastWeights: SolverSupport.listWeights(endpoints, weights))
        let entries = MaglevHashingModel.entryCounts(turns: turns)
        var canary = 0, total = 0
        for (member, count) in zip(endpoints.listOrder, entries) {
            total += count
            if member.group == .canary { canary += count }
        }
        return total == 0 ? 0 : Double(canary) / Double(total)
    }
}
