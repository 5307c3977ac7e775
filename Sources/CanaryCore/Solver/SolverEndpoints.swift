import IPVS

/// A service's endpoints as the solver works on them: each address once, split into live
/// stable, live canary and the rest, in the order the kernel will list them.
struct SolverEndpoints {
    enum Group: Hashable { case stable, canary }

    struct Member: Hashable {
        var address: SocketAddress
        var group: Group
        var isLive: Bool
        /// Position among the live endpoints of its group, in the service's order; -1 when not live.
        var rank: Int
    }

    /// Every endpoint once, in the service's order (stable, then canary).
    let members: [Member]
    /// Every endpoint once, in the kernel's list order as the solver assumes it.
    let listOrder: [Member]
    let liveStableCount: Int
    let liveCanaryCount: Int
    /// Addresses listed twice: the first occurrence (stable before canary) is the one kept.
    let duplicates: [SocketAddress]

    /// - Parameter kernelOrder: the service's destinations as the kernel lists them now (a dump's
    ///   order, most recently added first). Endpoints not in it are about to be added, so they
    ///   come first. Without it the solver assumes the agent added the service's endpoints in
    ///   their order (stable, then canary), which the kernel lists in reverse.
    init(_ service: DesiredService, kernelOrder: [SocketAddress]?) {
        let count = service.stable.count + service.canary.count
        var members: [Member] = []
        members.reserveCapacity(count)
        // Short lists are checked for duplicates linearly, which is cheaper than hashing.
        let usesSet = count > 32
        var seen = Set<SocketAddress>(minimumCapacity: usesSet ? count : 0)
        var duplicates: [SocketAddress] = []
        var stableRank = 0, canaryRank = 0
        func add(_ endpoint: Endpoint, _ group: Group) {
            let isDuplicate =
                usesSet ? !seen.insert(endpoint.address).inserted : members.contains { $0.address == endpoint.address }
            if isDuplicate {
                duplicates.append(endpoint.address)
                return
            }
            var rank = -1
            if endpoint.state == .live {
                if group == .stable {
                    rank = stableRank
                    stableRank += 1
                } else {
                    rank = canaryRank
                    canaryRank += 1
                }
            }
            members.append(Member(address: endpoint.address, group: group, isLive: rank >= 0, rank: rank))
        }
        for endpoint in service.stable { add(endpoint, .stable) }
        for endpoint in service.canary { add(endpoint, .canary) }
        self.members = members
        self.duplicates = duplicates
        liveStableCount = stableRank
        liveCanaryCount = canaryRank

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

    var liveCount: Int { liveStableCount + liveCanaryCount }

    /// Live stable endpoints, in the service's order.
    var liveStable: [SocketAddress] { members.filter { $0.group == .stable && $0.isLive }.map(\.address) }
    /// Live canary endpoints, in the service's order.
    var liveCanary: [SocketAddress] { members.filter { $0.group == .canary && $0.isLive }.map(\.address) }

    /// Weights in list order: each group's total spread over its live endpoints as evenly as
    /// integers allow (the first `total % count` in the service's order get one more), every
    /// other endpoint (draining, or of a group given 0) 0.
    func listWeights(stableTotal: Int, canaryTotal: Int) -> [Int] {
        let stableBase = liveStableCount > 0 ? stableTotal / liveStableCount : 0
        let stableExtra = liveStableCount > 0 ? stableTotal % liveStableCount : 0
        let canaryBase = liveCanaryCount > 0 ? canaryTotal / liveCanaryCount : 0
        let canaryExtra = liveCanaryCount > 0 ? canaryTotal % liveCanaryCount : 0
        return listOrder.map { member in
            guard member.rank >= 0 else { return 0 }
            return member.group == .stable
                ? stableBase + (member.rank < stableExtra ? 1 : 0) : canaryBase + (member.rank < canaryExtra ? 1 : 0)
        }
    }

    /// The weights by address for weights in list order.
    func weightMap(_ listWeights: [Int]) -> [SocketAddress: Int32] {
        var weights: [SocketAddress: Int32] = [:]
        weights.reserveCapacity(listOrder.count)
        for (member, weight) in zip(listOrder, listWeights) { weights[member.address] = Int32(clamping: weight) }
        return weights
    }

    /// The weights by address for group totals spread as `listWeights` does.
    func weightMap(stableTotal: Int, canaryTotal: Int) -> [SocketAddress: Int32] {
        weightMap(listWeights(stableTotal: stableTotal, canaryTotal: canaryTotal))
    }

    /// The canary's part of `counts` (one per list position) over their sum; 0 when none.
    func canaryShare(of counts: [Int]) -> Double {
        var canary = 0, total = 0
        for (member, count) in zip(listOrder, counts) {
            total += count
            if member.group == .canary { canary += count }
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
