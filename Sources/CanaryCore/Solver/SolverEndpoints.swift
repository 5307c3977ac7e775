import IPVS

/// A service's endpoints as the solver works on them: each address once, in destination
/// classes (the set of groups that list it: for groups that share no address, one class per
/// group), in the order the kernel will list them.
struct SolverEndpoints {
    struct Member: Hashable {
        var address: SocketAddress
        /// Index into `classes`.
        var classIndex: Int
        var isLive: Bool
        /// Position among the live endpoints of its class, in the service's order; -1 when not live.
        var rank: Int
    }

    /// Endpoints listed by the same set of groups: they carry the same share each.
    struct DestinationClass: Hashable {
        /// The first group that lists these endpoints.
        var group: Int
        /// The other groups that list them, ascending (empty unless addresses are shared: no allocation).
        var otherGroups: [Int] = []
        var liveCount: Int

        /// Every group that lists these endpoints, ascending.
        var groups: [Int] { otherGroups.isEmpty ? [group] : [group] + otherGroups }
        var isSingleGroup: Bool { otherGroups.isEmpty }
        func contains(_ index: Int) -> Bool { group == index || otherGroups.contains(index) }
    }

    /// Every endpoint once, in the service's order (the groups in order, a duplicate's first occurrence).
    let members: [Member]
    /// Every endpoint once, in the kernel's list order as the solver assumes it.
    let listOrder: [Member]
    let classes: [DestinationClass]
    /// Per group: its live endpoints, each address once (an address in two groups counts in both).
    let groupLiveCounts: [Int]
    /// Addresses listed twice within one group: kept once.
    let duplicates: [SocketAddress]
    /// Addresses listed by more than one group, with the groups: one destination each.
    let shared: [(address: SocketAddress, groups: [Int])]

    /// - Parameter kernelOrder: the service's destinations as the kernel lists them now (a dump's
    ///   order, most recently added first). Endpoints not in it are about to be added, so they
    ///   come first. Without it the solver assumes the agent added the service's endpoints in
    ///   their order (the groups in order), which the kernel lists in reverse.
    init(_ service: DesiredService, kernelOrder: [SocketAddress]?) {
        let groupCount = service.backends.count
        var count = 0
        for group in service.backends { count += group.endpoints.count }
        // The common case first: no address in two groups, so each group is a class. One pass.
        var members: [Member] = []
        members.reserveCapacity(count)
        var classes: [DestinationClass] = []
        classes.reserveCapacity(groupCount)
        var duplicates: [SocketAddress] = []
        // Short lists are checked for duplicates linearly, which is cheaper than hashing.
        let usesIndex = count > 32
        var index: [SocketAddress: Int] = usesIndex ? Dictionary(minimumCapacity: count) : [:]
        var shared = false
        walk: for (groupIndex, group) in service.backends.enumerated() {
            classes.append(DestinationClass(group: groupIndex, liveCount: 0))
            for endpoint in group.endpoints {
                let existing: Int? =
                    usesIndex ? index[endpoint.address] : members.firstIndex { $0.address == endpoint.address }
                if let existing {
                    if members[existing].classIndex != groupIndex {
                        shared = true
                        break walk
                    }
                    duplicates.append(endpoint.address)
                    if endpoint.state == .live && !members[existing].isLive {
                        members[existing].isLive = true
                        members[existing].rank = classes[groupIndex].liveCount
                        classes[groupIndex].liveCount += 1
                    }
                    continue
                }
                if usesIndex { index[endpoint.address] = members.count }
                var rank = -1
                if endpoint.state == .live {
                    rank = classes[groupIndex].liveCount
                    classes[groupIndex].liveCount += 1
                }
                members.append(Member(address: endpoint.address, classIndex: groupIndex, isLive: rank >= 0, rank: rank))
            }
        }
        if shared {
            (members, classes, duplicates, self.shared) = Self.sharedClasses(service)
        } else {
            self.shared = []
        }
        var groupLiveCounts = [Int](repeating: 0, count: groupCount)
        for destinationClass in classes {
            groupLiveCounts[destinationClass.group] += destinationClass.liveCount
            for other in destinationClass.otherGroups { groupLiveCounts[other] += destinationClass.liveCount }
        }
        self.members = members
        self.classes = classes
        self.groupLiveCounts = groupLiveCounts
        self.duplicates = duplicates

        if let kernelOrder {
            let listed = Set(kernelOrder)
            let byAddress = Dictionary(members.map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
            let new = members.reversed().filter { !listed.contains($0.address) }
            var present = Set<SocketAddress>()
            let existing = kernelOrder.compactMap { address -> Member? in
                guard present.insert(address).inserted else { return nil }
                return byAddress[address]
            }
            listOrder = new + existing
        } else {
            listOrder = members.reversed()
        }
    }

    /// The classes when some address is in several groups: each set of groups listing an address
    /// is a class (one per group first, then one per set of several).
    private static func sharedClasses(_ service: DesiredService) -> (
        [Member], [DestinationClass], [SocketAddress], [(address: SocketAddress, groups: [Int])]
    ) {
        var addresses: [SocketAddress] = []
        var firstGroup: [Int] = []
        var live: [Bool] = []
        var otherGroups: [Int: [Int]] = [:]
        var index: [SocketAddress: Int] = [:]
        var duplicates: [SocketAddress] = []
        for (groupIndex, group) in service.backends.enumerated() {
            for endpoint in group.endpoints {
                if let existing = index[endpoint.address] {
                    if (otherGroups[existing]?.last ?? firstGroup[existing]) == groupIndex {
                        duplicates.append(endpoint.address)
                    } else {
                        otherGroups[existing, default: []].append(groupIndex)
                    }
                    if endpoint.state == .live { live[existing] = true }
                    continue
                }
                index[endpoint.address] = addresses.count
                addresses.append(endpoint.address)
                firstGroup.append(groupIndex)
                live.append(endpoint.state == .live)
            }
        }
        var classes: [DestinationClass] = service.backends.indices.map { DestinationClass(group: $0, liveCount: 0) }
        var classOf = firstGroup
        var shared: [(address: SocketAddress, groups: [Int])] = []
        var classIndex: [[Int]: Int] = [:]
        for position in otherGroups.keys.sorted() {
            let others = otherGroups[position] ?? []
            let groups = [firstGroup[position]] + others
            shared.append((addresses[position], groups))
            if let known = classIndex[groups] {
                classOf[position] = known
            } else {
                classIndex[groups] = classes.count
                classOf[position] = classes.count
                classes.append(DestinationClass(group: firstGroup[position], otherGroups: others, liveCount: 0))
            }
        }
        var members: [Member] = []
        members.reserveCapacity(addresses.count)
        for position in addresses.indices {
            var rank = -1
            if live[position] {
                rank = classes[classOf[position]].liveCount
                classes[classOf[position]].liveCount += 1
            }
            members.append(Member(address: addresses[position], classIndex: classOf[position], isLive: rank >= 0, rank: rank))
        }
        return (members, classes, duplicates, shared)
    }

    var liveCount: Int { classes.reduce(0) { $0 + $1.liveCount } }

    /// Weights in list order: each class's total spread over its live endpoints as evenly as
    /// integers allow (the first `total % count` in the service's order get one more), every
    /// other endpoint (draining, or of a class given 0) 0.
    func listWeights(classTotals: [Int]) -> [Int] {
        let base = classes.indices.map { classes[$0].liveCount > 0 ? classTotals[$0] / classes[$0].liveCount : 0 }
        let extra = classes.indices.map { classes[$0].liveCount > 0 ? classTotals[$0] % classes[$0].liveCount : 0 }
        return listOrder.map { member in
            guard member.rank >= 0 else { return 0 }
            return base[member.classIndex] + (member.rank < extra[member.classIndex] ? 1 : 0)
        }
    }

    /// The weights by address for weights in list order.
    func weightMap(_ listWeights: [Int]) -> [SocketAddress: Int32] {
        var weights: [SocketAddress: Int32] = [:]
        weights.reserveCapacity(listOrder.count)
        for (member, weight) in zip(listOrder, listWeights) { weights[member.address] = Int32(clamping: weight) }
        return weights
    }

    /// Each class's part of `counts` (one per list position) over their sum; all 0 when none.
    func classShares(of counts: [Int]) -> [Double] {
        var perClass = [Int](repeating: 0, count: classes.count)
        var total = 0
        for (member, count) in zip(listOrder, counts) {
            total += count
            perClass[member.classIndex] += count
        }
        return perClass.map { total == 0 ? 0 : Double($0) / Double(total) }
    }
}

/// Two classes of a service seen as the stable/canary split the two-class solvers were written
/// for: "stable" is the class that comes first, "canary" the other (absent when one class takes
/// every new connection).
struct TwoClassView {
    let endpoints: SolverEndpoints
    let stableClass: Int
    let canaryClass: Int?

    var listOrder: [SolverEndpoints.Member] { endpoints.listOrder }
    var liveStableCount: Int { endpoints.classes[stableClass].liveCount }
    var liveCanaryCount: Int { canaryClass.map { endpoints.classes[$0].liveCount } ?? 0 }

    /// Weights in list order for these totals (other classes 0), spread as `listWeights(classTotals:)` does.
    func listWeights(stableTotal: Int, canaryTotal: Int) -> [Int] {
        let stableCount = liveStableCount, canaryCount = liveCanaryCount
        let stableBase = stableCount > 0 ? stableTotal / stableCount : 0
        let stableExtra = stableCount > 0 ? stableTotal % stableCount : 0
        let canaryBase = canaryCount > 0 ? canaryTotal / canaryCount : 0
        let canaryExtra = canaryCount > 0 ? canaryTotal % canaryCount : 0
        let canaryClass = canaryClass ?? -1
        return endpoints.listOrder.map { member in
            guard member.rank >= 0 else { return 0 }
            if member.classIndex == stableClass { return stableBase + (member.rank < stableExtra ? 1 : 0) }
            if member.classIndex == canaryClass { return canaryBase + (member.rank < canaryExtra ? 1 : 0) }
            return 0
        }
    }

    func weightMap(_ listWeights: [Int]) -> [SocketAddress: Int32] { endpoints.weightMap(listWeights) }

    func weightMap(stableTotal: Int, canaryTotal: Int) -> [SocketAddress: Int32] {
        weightMap(listWeights(stableTotal: stableTotal, canaryTotal: canaryTotal))
    }

    /// The canary class's part of `counts` (one per list position) over their sum; 0 when none.
    func canaryShare(of counts: [Int]) -> Double {
        guard let canaryClass else { return 0 }
        var canary = 0, total = 0
        for (member, count) in zip(listOrder, counts) {
            total += count
            if member.classIndex == canaryClass { canary += count }
        }
        return total == 0 ? 0 : Double(canary) / Double(total)
    }
}

/// Helpers shared by the per-scheduler solvers.
enum SolverSupport {
    /// A share as a percentage with up to four decimals: "10%", "10.1562%".
    static func percent(_ share: Double) -> String { percentText(share) }

    /// "a, b, c and 4 more".
    static func list(_ addresses: [SocketAddress], limit: Int = 8) -> String {
        let shown = addresses.prefix(limit).map(\.description).joined(separator: ", ")
        return addresses.count > limit ? "\(shown) and \(addresses.count - limit) more" : shown
    }

    /// True when the share equals the target.
    static func matches(_ share: Double, _ target: CanaryShare) -> Bool {
        abs(share - target.fraction) < 1e-12
    }
}
