import IPVS

/// Chooses destination weights that make a scheduler give the canary its target share, and says
/// what share the kernel really gives with them.
///
/// Each scheduler maps weights to traffic its own way (the models beside this file follow the
/// kernel's code):
/// - wrr: proportional over one cycle; the smallest weights within 0.01 percentage point.
/// - sh: 256 buckets filled in list order; weights sum to 256, the share is a multiple of 1/256.
/// - mh: weights quantised to at most 63 turns in a 4093-entry table.
/// - rr (and lc): weights ignored except 0; the share is the ratio of live endpoints.
/// - others (wlc, sed, nq, …): proportional like wrr, the share only approximate.
///
/// Common rules: draining endpoints get weight 0 (they stay, serving their connections); a target
/// of 0 % gives the canary weight 0 and 100 % gives stable weight 0; without live canary endpoints
/// everything goes to stable, without live stable endpoints everything goes to the canary.
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
        let target = service.canaryShare
        var notes: [String] = []
        var warnings: [String] = []
        if !endpoints.duplicates.isEmpty {
            warnings.append(
                "listed twice, kept once (stable before canary): \(SolverSupport.list(endpoints.duplicates))")
        }

        guard endpoints.liveCount > 0 else {
            let weights = endpoints.weightMap(stableTotal: 0, canaryTotal: 0)
            var assignment = WeightAssignment(
                weights: weights, effectiveCanaryShare: 0,
                explanation: "no live endpoint: the kernel has no destination for new connections",
                warnings: warnings + ["\(service.name): no live endpoint, new connections are refused"])
            assignment.destinationOrder = endpoints.members.map(\.address)
            return assignment
        }

        var stableGetsTraffic = true, canaryGetsTraffic = true
        if endpoints.liveCanaryCount == 0 {
            canaryGetsTraffic = false
            if target > .zero { notes.append("no live canary endpoint: every new connection goes to stable") }
        } else if endpoints.liveStableCount == 0 {
            stableGetsTraffic = false
            if target < .all { notes.append("no live stable endpoint: the canary takes every new connection") }
            if target == .zero {
                warnings.append("\(service.name): the canary takes all new connections despite a target of 0%")
            }
        } else if target == .zero {
            canaryGetsTraffic = false
        } else if target == .all {
            stableGetsTraffic = false
        }

        var assignment: WeightAssignment
        let both = stableGetsTraffic && canaryGetsTraffic
        switch service.scheduler {
        case .sourceHashing:
            assignment = SourceHashingSolver.solve(
                endpoints, target: target, stableGetsTraffic: stableGetsTraffic, canaryGetsTraffic: canaryGetsTraffic)
        case .maglevHashing:
            assignment = MaglevHashingSolver.solve(
                endpoints, target: target, stableGetsTraffic: stableGetsTraffic, canaryGetsTraffic: canaryGetsTraffic)
        case .roundRobin, .leastConnection:
            assignment = countBased(
                endpoints, target: target, scheduler: service.scheduler, stableGetsTraffic: stableGetsTraffic,
                canaryGetsTraffic: canaryGetsTraffic)
        case .weightedRoundRobin:
            assignment =
                both
                ? WeightedRoundRobinSolver.solve(endpoints, target: target)
                : oneGroup(endpoints, stableGetsTraffic: stableGetsTraffic, cycle: true)
        case "fo", "ovf", "dh":
            assignment =
                both
                ? WeightedRoundRobinSolver.solve(endpoints, target: target)
                : oneGroup(endpoints, stableGetsTraffic: stableGetsTraffic, cycle: false)
            assignment.cycleLength = nil
            if both {
                assignment.explanation =
                    "\(service.scheduler) does not split new connections by weight: the weights are proportional, "
                    + "the share of \(SolverSupport.percent(assignment.effectiveCanaryShare)) is nominal"
                assignment.warnings.append(
                    "\(service.name): \(service.scheduler) cannot split traffic between stable and canary "
                        + Self.unsplittableReason(service.scheduler) + "; use wrr, sh or mh")
            }
        default:
            assignment =
                both
                ? WeightedRoundRobinSolver.solveProportional(endpoints, target: target, scheduler: service.scheduler)
                : oneGroup(endpoints, stableGetsTraffic: stableGetsTraffic, cycle: false)
        }

        if let explanation = assignment.explanation { notes.append(explanation) }
        assignment.explanation = notes.isEmpty ? nil : notes.joined(separator: "; ")
        assignment.warnings = warnings + assignment.warnings
        assignment.destinationOrder = endpoints.members.map(\.address)
        return assignment
    }

    private static func unsplittableReason(_ scheduler: Scheduler) -> String {
        switch scheduler.rawValue {
        case "fo": "(fo sends every new connection to the endpoint of highest weight)"
        case "ovf": "(ovf fills the endpoint of highest weight up to its weight in connections first)"
        default: "(dh hashes the destination, the virtual address: all clients go to one endpoint)"
        }
    }

    /// Every live endpoint of one group at weight 1, every other endpoint 0.
    private static func oneGroup(_ endpoints: SolverEndpoints, stableGetsTraffic: Bool, cycle: Bool) -> WeightAssignment {
        let live = stableGetsTraffic ? endpoints.liveStableCount : endpoints.liveCanaryCount
        let weights = endpoints.weightMap(stableTotal: stableGetsTraffic ? live : 0, canaryTotal: stableGetsTraffic ? 0 : live)
        return WeightAssignment(
            weights: weights, effectiveCanaryShare: stableGetsTraffic ? 0 : 1, cycleLength: cycle ? live : nil)
    }

    /// rr and lc ignore weights other than 0 (`ip_vs_rr_schedule` takes the next destination with
    /// `weight > 0`, `ip_vs_lc_schedule` skips `weight == 0`): the share is the canary's part of
    /// the live endpoints (exact per round for rr, approximate for lc).
    private static func countBased(
        _ endpoints: SolverEndpoints, target: CanaryShare, scheduler: Scheduler, stableGetsTraffic: Bool,
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
