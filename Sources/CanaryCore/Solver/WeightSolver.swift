import IPVS

/// Chooses destination weights that make a scheduler give each backend group its target share
/// (its weight over the sum of the weights), and says what share the kernel really gives with them.
///
/// Each scheduler maps weights to traffic its own way (the models beside this file follow the
/// kernel's code):
/// - wrr: proportional over one cycle; the smallest weights within 0.01 percentage point.
/// - sh: 256 buckets filled in list order; weights sum to 256, the share is a multiple of 1/256.
/// - mh: weights quantised to at most 63 turns in a 4093-entry table.
/// - rr (and lc): weights ignored except 0; the share is the ratio of live endpoints.
/// - others (wlc, sed, nq, …): proportional like wrr, the share only approximate.
///
/// Common rules: draining endpoints get weight 0 (they stay, serving their connections); a group of
/// weight 0 gets weight 0; a group without live endpoints leaves its share to the others
/// (`TrafficTargets`); an address in several groups is one destination with the sum of their
/// shares for it. One class of destinations, or two whose target is whole basis points (the
/// stable/canary split), go to the two-class solvers; anything else to `ManyClassSolver`.
public enum WeightSolver {
    /// Solves the weights of one service for its scheduler, assuming the kernel lists its
    /// destinations as the agent adds them to a new service (stable then canary, most recent first).
    public static func solve(_ service: DesiredService) -> WeightAssignment {
        solve(service, kernelOrder: nil)
    }

    /// Solves the weights of one service for its scheduler.
    ///
    /// - Parameter kernelOrder: the service's destinations as the kernel lists them now (a dump's
    ///   order: most recently added first); endpoints missing from it are taken as about to be
    ///   added, so listed first. The order matters only for sh with draining endpoints, for mh's
    ///   last partial round, and for which endpoints starve when sh has more than 256.
    public static func solve(_ service: DesiredService, kernelOrder: [SocketAddress]?) -> WeightAssignment {
        let endpoints = SolverEndpoints(service, kernelOrder: kernelOrder)
        var notes: [String] = []
        var warnings: [String] = []
        if !endpoints.duplicates.isEmpty {
            warnings.append("listed twice, kept once: \(SolverSupport.list(endpoints.duplicates))")
        }
        if !endpoints.shared.isEmpty {
            let groups = Set(endpoints.shared.flatMap(\.groups)).sorted().map { service.backends[$0].name }
            notes.append(
                "\(SolverSupport.list(endpoints.shared.map(\.address))) "
                    + "\(endpoints.shared.count == 1 ? "is" : "are") in more than one group (\(groups.joined(separator: ", "))): "
                    + "one destination each, carrying the sum of those groups' shares for it")
        }
        let traffic = TrafficTargets(service, endpoints)
        notes += traffic.notes
        warnings += traffic.warnings

        guard !traffic.refuses else {
            var assignment = WeightAssignment(
                weights: endpoints.weightMap(endpoints.listOrder.map { _ in 0 }), effectiveCanaryShare: 0,
                explanation: notes.joined(separator: "; "), warnings: warnings)
            assignment.refusesNewConnections = true
            assignment.destinationOrder = endpoints.members.map(\.address)
            assignment.groups = groupShares(service, endpoints, traffic: traffic, classShares: nil, listWeights: nil)
            return assignment
        }

        // Each class's target: its live endpoints times what its groups ask of each.
        let classTargets = endpoints.classes.map { destinationClass -> Double in
            guard destinationClass.liveCount > 0 else { return 0 }
            // One group: its whole target (all its live endpoints are this class).
            if destinationClass.isSingleGroup && destinationClass.liveCount == endpoints.groupLiveCounts[destinationClass.group] {
                return traffic.groupTargets[destinationClass.group]
            }
            let each = destinationClass.groups.reduce(0.0) { sum, group in
                endpoints.groupLiveCounts[group] > 0
                    ? sum + traffic.groupTargets[group] / Double(endpoints.groupLiveCounts[group]) : sum
            }
            return each * Double(destinationClass.liveCount)
        }
        var trafficClasses: [Int] = []
        trafficClasses.reserveCapacity(2)
        for index in classTargets.indices where classTargets[index] > 0 { trafficClasses.append(index) }

        var assignment: WeightAssignment
        var classShares: [Double]
        var listWeights: [Int]?
        if trafficClasses.count == 1 {
            let view = TwoClassView(endpoints: endpoints, stableClass: trafficClasses[0], canaryClass: nil)
            (assignment, listWeights) = solveTwoClasses(view, target: .zero, service: service)
            classShares = endpoints.classes.indices.map { $0 == trafficClasses[0] ? 1 : 0 }
        } else if trafficClasses.count == 2, let basisPoints = exactBasisPoints(service, endpoints, trafficClasses) {
            let view = TwoClassView(endpoints: endpoints, stableClass: trafficClasses[0], canaryClass: trafficClasses[1])
            let target = CanaryShare(basisPoints: basisPoints) ?? .zero
            (assignment, listWeights) = solveTwoClasses(view, target: target, service: service)
            let canary = assignment.effectiveCanaryShare
            classShares = endpoints.classes.indices.map {
                $0 == trafficClasses[1] ? canary : $0 == trafficClasses[0] ? 1 - canary : 0
            }
        } else {
            (assignment, listWeights, classShares) = solveManyClasses(
                endpoints, trafficClasses: trafficClasses, targets: trafficClasses.map { classTargets[$0] }, service: service)
        }

        if let explanation = assignment.explanation { notes.append(explanation) }
        assignment.explanation = notes.isEmpty ? nil : notes.joined(separator: "; ")
        assignment.warnings = warnings + assignment.warnings
        assignment.destinationOrder = endpoints.members.map(\.address)
        assignment.groups = groupShares(
            service, endpoints, traffic: traffic, classShares: classShares, listWeights: listWeights,
            weights: assignment.weights)
        assignment.effectiveCanaryShare = assignment.groups.dropFirst().reduce(0) { $0 + $1.effective }
        return assignment
    }

    /// The second class's target in whole basis points, when both classes are single groups and
    /// it is one (the stable/canary split always is): then the two-class solvers, whose results
    /// the annotation scheme has always had, apply unchanged.
    private static func exactBasisPoints(
        _ service: DesiredService, _ endpoints: SolverEndpoints, _ trafficClasses: [Int]
    ) -> Int? {
        let first = endpoints.classes[trafficClasses[0]], second = endpoints.classes[trafficClasses[1]]
        guard first.isSingleGroup, second.isSingleGroup else { return nil }
        let a = service.backends[first.group].weight, b = service.backends[second.group].weight
        guard a > 0, b > 0, (b * 10_000) % (a + b) == 0 else { return nil }
        return b * 10_000 / (a + b)
    }

    /// The stable/canary solvers, for one class or two whose target is whole basis points.
    private static func solveTwoClasses(
        _ endpoints: TwoClassView, target: CanaryShare, service: DesiredService
    ) -> (WeightAssignment, [Int]?) {
        let both = endpoints.canaryClass != nil
        var assignment: WeightAssignment
        switch service.scheduler {
        case .sourceHashing:
            assignment = SourceHashingSolver.solve(
                endpoints, target: target, stableGetsTraffic: true, canaryGetsTraffic: both)
        case .maglevHashing:
            assignment = MaglevHashingSolver.solve(
                endpoints, target: target, stableGetsTraffic: true, canaryGetsTraffic: both)
        case .roundRobin, .leastConnection:
            assignment = countBased(
                endpoints, target: target, scheduler: service.scheduler, stableGetsTraffic: true, canaryGetsTraffic: both)
        case .weightedRoundRobin:
            assignment =
                both
                ? WeightedRoundRobinSolver.solve(endpoints, target: target)
                : oneGroup(endpoints, cycle: true)
        case "fo", "ovf", "dh":
            assignment =
                both
                ? WeightedRoundRobinSolver.solve(endpoints, target: target)
                : oneGroup(endpoints, cycle: false)
            assignment.cycleLength = nil
            if both {
                assignment.explanation =
                    "\(service.scheduler) does not split new connections by weight: the weights are proportional, "
                    + "the share of \(SolverSupport.percent(assignment.effectiveCanaryShare)) is nominal"
                assignment.warnings.append(
                    "\(service.name): \(service.scheduler) cannot split traffic between groups "
                        + Self.unsplittableReason(service.scheduler) + "; use wrr, sh or mh")
            }
        default:
            assignment =
                both
                ? WeightedRoundRobinSolver.solveProportional(endpoints, target: target, scheduler: service.scheduler)
                : oneGroup(endpoints, cycle: false)
        }
        return (assignment, nil)
    }

    /// Three classes or more, or targets that are not whole basis points.
    private static func solveManyClasses(
        _ endpoints: SolverEndpoints, trafficClasses: [Int], targets: [Double], service: DesiredService
    ) -> (WeightAssignment, [Int], [Double]) {
        let counts = trafficClasses.map { endpoints.classes[$0].liveCount }
        func listWeights(_ totals: [Int]) -> [Int] {
            var all = [Int](repeating: 0, count: endpoints.classes.count)
            for (position, classIndex) in trafficClasses.enumerated() { all[classIndex] = totals[position] }
            return endpoints.listWeights(classTotals: all)
        }
        var notes: [String] = []
        var warnings: [String] = []
        var cycle: Int? = nil
        let weights: [Int]
        let shares: [Double]
        let zeroWeightCount = endpoints.listOrder.count - counts.reduce(0, +)
        switch service.scheduler {
        case .sourceHashing:
            let liveBuckets = SourceHashingModel.bucketCount - zeroWeightCount
            func served(_ weights: [Int]) -> [Double] {
                endpoints.classShares(of: SourceHashingModel(weights: weights).servedBuckets(fallback: true))
            }
            if endpoints.listOrder.count > SourceHashingModel.bucketCount
                || counts.reduce(0, +) > liveBuckets
            {
                weights = listWeights(counts)
                shares = served(weights)
                let held = SourceHashingModel(weights: weights).heldBuckets
                let starved = endpoints.listOrder.indices.filter { held[$0] == 0 && weights[$0] > 0 }
                warnings.append(
                    "sh has 256 buckets for \(endpoints.listOrder.count) endpoints: the last in the kernel's list get none"
                        + (starved.isEmpty ? "" : "; live endpoints that get no new connections: "
                            + SolverSupport.list(starved.map { endpoints.listOrder[$0].address })))
                notes.append("more endpoints than sh's 256 buckets: one bucket each in list order, the targets cannot be met")
            } else {
                guard var buckets = ManyClassSolver.sourceHashingBuckets(counts: counts, targets: targets, liveBuckets: liveBuckets)
                else { preconditionFailure("the live endpoints fit the buckets") }
                var best = listWeights(buckets)
                var bestShares = served(best)
                func error(_ classShares: [Double]) -> Double {
                    trafficClasses.indices.reduce(0.0) { max($0, abs(classShares[trafficClasses[$1]] - targets[$1])) }
                }
                if zeroWeightCount > 0 {
                    // Weight-0 endpoints' buckets move by sh-fallback: improve by single moves on the model.
                    var bestError = error(bestShares)
                    var improved = true, rounds = 0
                    while improved && rounds < 2 * (zeroWeightCount + 1) {
                        improved = false
                        rounds += 1
                        for from in buckets.indices {
                            for to in buckets.indices where to != from && buckets[from] > counts[from] {
                                var next = buckets
                                next[from] -= 1
                                next[to] += 1
                                let candidate = listWeights(next)
                                let candidateShares = served(candidate)
                                let candidateError = error(candidateShares)
                                if candidateError < bestError - 1e-12 {
                                    (buckets, best, bestShares, bestError) = (next, candidate, candidateShares, candidateError)
                                    improved = true
                                }
                            }
                        }
                    }
                    notes.append("the \(zeroWeightCount) buckets of weight-0 endpoints move to live ones by sh-fallback")
                } else {
                    let divisor = best.reduce(0) { greatestCommonDivisor($1, $0) }
                    if divisor > 1 { best = best.map { $0 / divisor } }
                }
                weights = best
                shares = bestShares
                if trafficClasses.indices.contains(where: { buckets[$0] == counts[$0] && targets[$0] * Double(liveBuckets) < Double(counts[$0]) - 0.5 }) {
                    notes.append("every live endpoint holds at least one of sh's 256 buckets, more than some targets ask")
                }
            }
        case .maglevHashing:
            if counts.reduce(0, +) > MaglevHashingModel.tableSize {
                weights = listWeights(counts)
                warnings.append(
                    "mh's table has \(MaglevHashingModel.tableSize) entries: the kernel refuses more than that many destinations")
            } else {
                let turns = ManyClassSolver.maglevTurns(counts: counts, targets: targets)
                weights = listWeights(turns.totals)
                if !turns.isEqualWithinClasses {
                    notes.append("endpoints of a group differ by 1 in weight, closer than equal weights by over one entry")
                }
            }
            shares = endpoints.classShares(
                of: MaglevHashingModel.entryCounts(turns: MaglevHashingModel.turns(lastWeights: weights)))
            if zeroWeightCount > 0 {
                notes.append(
                    "\(zeroWeightCount) weight-0 endpoints keep their entries from their last weight; their clients move "
                        + "to live ones by mh-fallback")
            }
        case .roundRobin, .leastConnection:
            weights = listWeights(counts)
            let total = counts.reduce(0, +)
            shares = endpoints.classes.indices.map { classIndex in
                trafficClasses.firstIndex(of: classIndex).map { Double(counts[$0]) / Double(total) } ?? 0
            }
            let how = service.scheduler == .roundRobin ? "takes live endpoints in turn" : "sends each new connection to the least busy endpoint"
            notes.append("\(service.scheduler) \(how) and ignores weights other than 0: each group's share is its part of the live endpoints")
            let far = trafficClasses.indices.filter { abs(shares[trafficClasses[$0]] - targets[$0]) > farFromTarget }
            if !far.isEmpty {
                warnings.append(
                    "\(service.scheduler) splits by the count of live endpoints, up to "
                        + "\(SolverSupport.percent(far.map { abs(shares[trafficClasses[$0]] - targets[$0]) }.max() ?? 0)) "
                        + "from a group's target; use wrr, sh or mh to split by weight")
            }
        default:
            let split = ManyClassSolver.weightedRoundRobin(counts: counts, targets: targets)
            weights = listWeights(split.totals)
            shares = endpoints.classes.indices.map { classIndex in
                trafficClasses.firstIndex(of: classIndex).map { Double(split.totals[$0]) / Double(split.sum) } ?? 0
            }
            if service.scheduler == .weightedRoundRobin {
                cycle = split.sum
                if !split.isEqualWithinClasses {
                    notes.append(
                        "endpoints of a group differ by 1 in weight: equal weights would need a cycle over "
                            + "\(max(WeightedRoundRobinSolver.longCycle, 2 * split.sum)) connections")
                }
                if split.sum > WeightedRoundRobinSolver.longCycle {
                    notes.append(
                        "one wrr cycle is \(split.sum) connections: the shares hold over each whole cycle, "
                            + "the largest weights are served first within it")
                }
            } else if ["fo", "ovf", "dh"].contains(service.scheduler.rawValue) {
                notes.append("\(service.scheduler) does not split new connections by weight: the shares are nominal")
                warnings.append(
                    "\(service.name): \(service.scheduler) cannot split traffic between groups "
                        + Self.unsplittableReason(service.scheduler) + "; use wrr, sh or mh")
            } else {
                notes.append(
                    "\(service.scheduler) balances by connections in progress, not in turn: the weight shares are "
                        + "what it approaches, the real split is approximate")
            }
        }
        var assignment = WeightAssignment(
            weights: endpoints.weightMap(weights), effectiveCanaryShare: 0,
            explanation: notes.isEmpty ? nil : notes.joined(separator: "; "), warnings: warnings, cycleLength: cycle)
        assignment.effectiveCanaryShare = 0
        return (assignment, weights, shares)
    }
    private static func unsplittableReason(_ scheduler: Scheduler) -> String {
        switch scheduler.rawValue {
        case "fo": "(fo sends every new connection to the endpoint of highest weight)"
        case "ovf": "(ovf fills the endpoint of highest weight up to its weight in connections first)"
        default: "(dh hashes the destination, the virtual address: all clients go to one endpoint)"
        }
    }

    /// Every live endpoint of the one class with traffic at weight 1, every other endpoint 0.
    private static func oneGroup(_ endpoints: TwoClassView, cycle: Bool) -> WeightAssignment {
        let live = endpoints.liveStableCount
        let weights = endpoints.weightMap(stableTotal: live, canaryTotal: 0)
        return WeightAssignment(weights: weights, effectiveCanaryShare: 0, cycleLength: cycle ? live : nil)
    }

    /// rr and lc ignore weights other than 0 (`ip_vs_rr_schedule` takes the next destination with
    /// `weight > 0`, `ip_vs_lc_schedule` skips `weight == 0`): the share is the canary's part of
    /// the live endpoints (exact per round for rr, approximate for lc).
    private static func countBased(
        _ endpoints: TwoClassView, target: CanaryShare, scheduler: Scheduler, stableGetsTraffic: Bool,
        canaryGetsTraffic: Bool
    ) -> WeightAssignment {
        let stable = stableGetsTraffic ? endpoints.liveStableCount : 0
        let canary = canaryGetsTraffic ? endpoints.liveCanaryCount : 0
        let weights = endpoints.weightMap(stableTotal: stable, canaryTotal: canary)
        let share = Double(canary) / Double(stable + canary)
        guard stable > 0 && canary > 0 else { return WeightAssignment(weights: weights, effectiveCanaryShare: share) }
        var explanation: String? = nil
        var warnings: [String] = []
        let how = scheduler == .roundRobin ? "takes live endpoints in turn" : "sends each new connection to the least busy endpoint"
        if !SolverSupport.matches(share, target) || scheduler != .roundRobin {
            explanation =
                "\(scheduler) \(how) and ignores weights other than 0: the canary gets \(scheduler == .roundRobin ? "" : "about ")"
                + "\(canary) of \(stable + canary) live endpoints (\(SolverSupport.percent(share))), target \(target)"
        }
        if abs(share - target.fraction) > farFromTarget {
            warnings.append(
                "\(scheduler) gives the canary \(SolverSupport.percent(share)) instead of \(target): the share follows "
                    + "the count of live endpoints; use wrr, sh or mh to split by weight")
        }
        return WeightAssignment(weights: weights, effectiveCanaryShare: share, explanation: explanation, warnings: warnings)
    }

    /// How far the effective share may be from the target (1 percentage point) before the
    /// count-based schedulers warn.
    static let farFromTarget = 0.01
}
