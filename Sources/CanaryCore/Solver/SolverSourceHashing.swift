import IPVS

/// Weights for sh: the kernel splits clients over 256 buckets, each destination taking `weight`
/// consecutive ones in list order (see `SourceHashingModel`). So:
/// - the weights of all destinations, counting a weight-0 one as 1 (it still takes a bucket),
///   must sum to at most 256, or the destinations late in the list get no bucket;
/// - summing to exactly 256 makes every destination hold exactly its weight in buckets, whatever
///   the list order; the canary's share is then `k / 256`, and the solver picks the closest `k`
///   that leaves every live endpoint at least one bucket;
/// - weight-0 (draining) endpoints' buckets move to live ones through sh-fallback, which the
///   agent always sets on sh services; the model follows the kernel's fallback walk exactly.
enum SourceHashingSolver {
    static let bucketCount = SourceHashingModel.bucketCount

    /// - Parameters:
    ///   - stableGetsTraffic / canaryGetsTraffic: whether that group's live endpoints get weight.
    static func solve(
        _ endpoints: TwoClassView, target: CanaryShare, stableGetsTraffic: Bool, canaryGetsTraffic: Bool
    ) -> WeightAssignment {
        let stableCount = stableGetsTraffic ? endpoints.liveStableCount : 0
        let canaryCount = canaryGetsTraffic ? endpoints.liveCanaryCount : 0
        let destinationCount = endpoints.listOrder.count
        if destinationCount > bucketCount {
            return degraded(endpoints, target: target, stableCount: stableCount, canaryCount: canaryCount)
        }
        let zeroWeightCount = destinationCount - stableCount - canaryCount
        let liveBuckets = bucketCount - zeroWeightCount

        func evaluate(canaryBuckets: Int) -> (weights: [Int], share: Double) {
            let weights = endpoints.listWeights(
                stableTotal: stableCount > 0 ? liveBuckets - canaryBuckets : 0, canaryTotal: canaryBuckets)
            return (weights, share(endpoints, weights))
        }

        let ideal = Double(target.basisPoints) * Double(bucketCount) / 10_000
        var chosen: (canaryBuckets: Int, weights: [Int], share: Double)
        if canaryCount == 0 {
            let result = evaluate(canaryBuckets: 0)
            chosen = (0, result.weights, result.share)
        } else if stableCount == 0 {
            let result = evaluate(canaryBuckets: liveBuckets)
            chosen = (liveBuckets, result.weights, result.share)
        } else {
            // Without weight-0 endpoints the share is exactly k / 256; with them their buckets
            // move by fallback, shifting the share by at most their count.
            let lowest = canaryCount, highest = liveBuckets - stableCount
            let center = Int(ideal.rounded())
            let reach = zeroWeightCount + 1
            let from = min(max(lowest, center - reach), highest)
            let to = max(min(highest, center + reach), lowest)
            var best: (canaryBuckets: Int, weights: [Int], share: Double, error: Double, even: Bool)? = nil
            for k in from...to {
                let result = evaluate(canaryBuckets: k)
                let error = abs(result.share - target.fraction)
                let even = k % canaryCount == 0 && (liveBuckets - k) % stableCount == 0
                if let current = best {
                    if error > current.error + 1e-12 { continue }
                    if abs(error - current.error) <= 1e-12 && !(even && !current.even) { continue }
                }
                best = (k, result.weights, result.share, error, even)
            }
            guard let best else { preconditionFailure("the sh candidate range is never empty") }
            chosen = (best.canaryBuckets, best.weights, best.share)
        }

        var weights = chosen.weights
        if zeroWeightCount == 0 {
            // Weights summing to 256 with gcd g (a power of two) fill the same bucket counts as
            // the weights divided by g, whose sum divides 256: prefer the small ones.
            let divisor = weights.reduce(0) { greatestCommonDivisor($1, $0) }
            if divisor > 1 { weights = weights.map { $0 / divisor } }
        }

        var notes: [String] = []
        if stableCount > 0 && canaryCount > 0 && !SolverSupport.matches(chosen.share, target) {
            var note =
                "sh hashes clients to 256 buckets: the canary holds \(chosen.canaryBuckets) "
                + "(\(SolverSupport.percent(chosen.share))), the closest to the target \(target)"
            if chosen.canaryBuckets == canaryCount && ideal < Double(canaryCount) - 0.5 {
                note += " that gives each of the \(canaryCount) live canary endpoints a bucket"
            } else if chosen.canaryBuckets == liveBuckets - stableCount && ideal > Double(liveBuckets - stableCount) + 0.5 {
                note += " that leaves each of the \(stableCount) live stable endpoints a bucket"
            }
            notes.append(note)
        }
        if zeroWeightCount > 0 && stableCount > 0 && canaryCount > 0 {
            notes.append("the \(zeroWeightCount) buckets of weight-0 endpoints move to live ones by sh-fallback")
        }
        return WeightAssignment(
            weights: endpoints.weightMap(weights), effectiveCanaryShare: chosen.share,
            explanation: notes.isEmpty ? nil : notes.joined(separator: "; "))
    }

    /// The canary's share of clients with these weights (in list order), by the kernel's table
    /// and fallback walk.
    static func share(_ endpoints: TwoClassView, _ listWeights: [Int]) -> Double {
        endpoints.canaryShare(of: SourceHashingModel(weights: listWeights).servedBuckets(fallback: true))
    }

    /// More endpoints than buckets: each takes one bucket in list order until they run out, so
    /// every weight is 1 (or 0) and the endpoints late in the list (added earliest) get nothing.
    static func degraded(
        _ endpoints: TwoClassView, target: CanaryShare, stableCount: Int, canaryCount: Int
    ) -> WeightAssignment {
        let weights = endpoints.listWeights(stableTotal: stableCount, canaryTotal: canaryCount)
        let held = SourceHashingModel(weights: weights).heldBuckets
        let starved = endpoints.listOrder.indices.filter { held[$0] == 0 }
        let starvedLive = starved.filter { weights[$0] > 0 }.map { endpoints.listOrder[$0].address }
        let effective = share(endpoints, weights)
        var warnings = [
            "sh has 256 buckets for \(endpoints.listOrder.count) endpoints: \(starved.count) get no bucket, "
                + "the last in the kernel's list (the earliest added)"
        ]
        if !starvedLive.isEmpty {
            warnings.append("live endpoints that get no new connections: \(SolverSupport.list(starvedLive))")
        }
        return WeightAssignment(
            weights: endpoints.weightMap(weights), effectiveCanaryShare: effective,
            explanation: "more endpoints than sh's 256 buckets: one bucket each in list order; the canary gets "
                + "\(SolverSupport.percent(effective)) (target \(target))",
            warnings: warnings)
    }
}
