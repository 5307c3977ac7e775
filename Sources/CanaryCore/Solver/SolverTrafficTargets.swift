import IPVS

/// Which groups take new connections, and what share each is to get, before any scheduler's
/// rounding: a group's weight over the weights of the groups that can take connections.
///
/// - A group with weight > 0 and no live endpoint cannot take its share: the others take it in
///   proportion to their weights.
/// - No group with weight can take connections: under `.useGroupsOfWeightZero` (the
///   stable/canary split) the groups of weight 0 with live endpoints take them, by their count of
///   live endpoints; under `.refuseNewConnections` (Gateway API) new connections are refused.
/// - No live endpoint at all: refused.
struct TrafficTargets {
    /// Per group, summing to 1 unless `refuses`.
    var groupTargets: [Double]
    var refuses = false
    var notes: [String] = []
    var warnings: [String] = []

    init(_ service: DesiredService, _ endpoints: SolverEndpoints) {
        let groups = service.backends
        let live = endpoints.groupLiveCounts
        groupTargets = groups.map { _ in 0 }
        func names(_ indices: [Int]) -> String {
            let quoted = indices.map { groups[$0].name }
            return quoted.count <= 1 ? quoted.joined() : quoted.dropLast().joined(separator: ", ") + " and " + quoted.last!
        }
        guard endpoints.liveCount > 0 else {
            refuses = true
            notes.append("no live endpoint: the kernel has no destination for new connections")
            warnings.append("\(service.name): no live endpoint, new connections are refused")
            return
        }
        // One pass for the common case: every group with weight has a live endpoint.
        var activeTotal = 0, missingCount = 0
        for (index, group) in groups.enumerated() where group.weight > 0 {
            if live[index] > 0 { activeTotal += group.weight } else { missingCount += 1 }
        }
        if activeTotal > 0 {
            for (index, group) in groups.enumerated() where group.weight > 0 && live[index] > 0 {
                groupTargets[index] = Double(group.weight) / Double(activeTotal)
            }
            guard missingCount > 0 else { return }
            let active = groups.indices.filter { groups[$0].weight > 0 && live[$0] > 0 }
            let missing = groups.indices.filter { groups[$0].weight > 0 && live[$0] == 0 }
            notes.append(
                "no live \(names(missing)) endpoint: "
                    + (active.count == 1
                        ? "every new connection goes to \(names(active))"
                        : "\(missing.count == 1 ? "its" : "their") share goes to \(names(active)) in proportion to their weights"))
            return
        }
        let weighted = groups.indices.filter { groups[$0].weight > 0 }
        let missing = weighted.filter { live[$0] == 0 }
        switch service.unweightedFallback {
        case .useGroupsOfWeightZero:
            let fallback = groups.indices.filter { live[$0] > 0 }
            let total = fallback.reduce(0) { $0 + live[$1] }
            for group in fallback { groupTargets[group] = Double(live[group]) / Double(total) }
            notes.append(
                missing.isEmpty
                    ? "every group has weight 0: \(names(fallback)) take\(fallback.count == 1 ? "s" : "") every new connection"
                    : "no live \(names(missing)) endpoint: every new connection goes to \(names(fallback))")
            if fallback.contains(where: { $0 > 0 }) {
                warnings.append(
                    "\(service.name): \(names(fallback)) take\(fallback.count == 1 ? "s" : "") all new connections "
                        + "despite a weight of 0")
            }
        case .refuseNewConnections:
            refuses = true
            if weighted.isEmpty {
                notes.append("every group has weight 0: new connections are refused, existing ones finish")
                warnings.append("\(service.name): every backend has weight 0, new connections are refused")
            } else {
                notes.append(
                    "no live \(names(missing)) endpoint and every other group has weight 0: new connections are refused")
                warnings.append("\(service.name): no backend with weight has a live endpoint, new connections are refused")
            }
        }
    }
}

extension WeightSolver {
    /// Each group's target and effective share, and why they differ.
    static func groupShares(
        _ service: DesiredService, _ endpoints: SolverEndpoints, traffic: TrafficTargets, classShares: [Double]?,
        listWeights: [Int]?, weights: [SocketAddress: Int32] = [:]
    ) -> [WeightAssignment.GroupShare] {
        let total = service.totalWeight
        let live = endpoints.groupLiveCounts
        // What each group asks of each of its live endpoints.
        let perEndpoint = service.backends.indices.map { live[$0] > 0 ? traffic.groupTargets[$0] / Double(live[$0]) : 0 }
        // Built on first use: most groups get their target exactly and need no phrase.
        var classPhrases: [String]? = nil
        return service.backends.enumerated().map { index, group in
            let target = total == 0 ? 0 : Double(group.weight) / Double(total)
            var effective = 0.0
            // The one class of a group that shares no endpoint (-1: none, or several).
            var onlyClass = -1, classCount = 0
            if let classShares {
                for (classIndex, destinationClass) in endpoints.classes.enumerated()
                where destinationClass.liveCount > 0 && destinationClass.contains(index) {
                    classCount += 1
                    onlyClass = destinationClass.isSingleGroup ? classIndex : -1
                    if destinationClass.isSingleGroup {
                        effective += classShares[classIndex]
                    } else {
                        let asked = destinationClass.groups.reduce(0.0) { $0 + perEndpoint[$1] }
                        if asked > 0 { effective += classShares[classIndex] * perEndpoint[index] / asked }
                    }
                }
            }
            var reason: String? = nil
            if traffic.refuses {
                reason = target > 0 ? "new connections are refused" : nil
            } else if group.weight > 0 && live[index] == 0 {
                reason = "no live endpoint: its share goes to the other groups"
            } else if group.weight == 0 && effective > 0 {
                reason = "weight 0, but no group with weight has a live endpoint: it takes new connections"
            } else if abs(effective - target) > 1e-9 {
                var parts: [String] = []
                if abs(traffic.groupTargets[index] - target) > 1e-9 {
                    parts.append("takes part of the share of groups without live endpoints")
                }
                if abs(effective - traffic.groupTargets[index]) > 1e-9 {
                    if classCount == 1, onlyClass >= 0, let classShares {
                        if classPhrases == nil {
                            // The two-class solvers hand back weights by address only: put them in list order here.
                            let inListOrder = listWeights ?? endpoints.listOrder.map { Int(weights[$0.address] ?? 0) }
                            classPhrases = heldPhrases(service.scheduler, endpoints, classShares, inListOrder)
                        }
                        parts.append("\(service.scheduler) gives it \(classPhrases?[onlyClass] ?? "")")
                    } else {
                        parts.append("\(service.scheduler) gives its endpoints \(SolverSupport.percent(effective))")
                    }
                }
                reason = parts.isEmpty ? nil : parts.joined(separator: "; ")
            }
            return WeightAssignment.GroupShare(
                name: group.name, weight: group.weight, target: target, effective: effective, liveEndpoints: live[index],
                reason: reason)
        }
    }

    /// Per class, what its endpoints hold of the scheduler's unit: "3 of every 29 connections",
    /// "26 of 256 buckets", "419 of 4093 table entries", "2 of 5 live endpoints". sh's and mh's
    /// counts are the class shares (already the kernel model's) times the buckets or entries.
    static func heldPhrases(
        _ scheduler: Scheduler, _ endpoints: SolverEndpoints, _ classShares: [Double], _ listWeights: [Int]
    ) -> [String] {
        func perClass(_ counts: [Int]) -> [Int] {
            var sums = [Int](repeating: 0, count: endpoints.classes.count)
            for (member, count) in zip(endpoints.listOrder, counts) { sums[member.classIndex] += count }
            return sums
        }
        switch scheduler {
        case .sourceHashing:
            let buckets = SourceHashingModel.bucketCount
            return classShares.map { "\(Int(($0 * Double(buckets)).rounded())) of \(buckets) buckets" }
        case .maglevHashing:
            let entries = MaglevHashingModel.tableSize
            return classShares.map { "\(Int(($0 * Double(entries)).rounded())) of \(entries) table entries" }
        case .roundRobin, .leastConnection:
            let taking = perClass(listWeights.map { $0 > 0 ? 1 : 0 })
            let all = taking.reduce(0, +)
            return taking.map { "\($0) of \(all) live endpoints" }
        default:
            let divisor = max(1, listWeights.reduce(0) { greatestCommonDivisor($1, $0) })
            let sums = perClass(listWeights)
            let cycle = sums.reduce(0, +) / divisor
            return sums.map { "\($0 / divisor) of every \(cycle) connections" }
        }
    }
}
