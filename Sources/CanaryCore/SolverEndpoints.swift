import IPVS

/// A service's endpoints as the solver works on them: each address once, split into live
/// stable, live canary and the rest, in the order the kernel will list them.
struct SolverEndpoints {
    enum Group: Hashable { case stable, canary }

    struct Member: Hashable {
        var address: SocketAddress
        var group: Group
        var isLive: Bool
    }

    /// Every endpoint once, in the kernel's list order as the solver assumes it.
    let listOrder: [Member]
    /// Live stable endpoints, in the service's order.
    let liveStable: [SocketAddress]
    /// Live canary endpoints, in the service's order.
    let liveCanary: [SocketAddress]
    /// Addresses listed twice: the first occurrence (stable before canary) is the one kept.
    let duplicates: [SocketAddress]

    /// - Parameter kernelOrder: the service's destinations as the kernel lists them now (a dump's
    ///   order, most recently added first). Endpoints not in it are about to be added, so they
    ///   come first. Without it the solver assumes the agent added the service's endpoints in
    ///   their order (stable, then canary), which the kernel lists in reverse.
    init(_ service: DesiredService, kernelOrder: [SocketAddress]?) {
        var members: [Member] = []
        members.reserveCapacity(service.stable.count + service.canary.count)
        var seen = Set<SocketAddress>(minimumCapacity: service.stable.count + service.canary.count)
        var duplicates: [SocketAddress] = []
        for (group, endpoints) in [(Group.stable, service.stable), (Group.canary, service.canary)] {
            for endpoint in endpoints {
                guard seen.insert(endpoint.address).inserted else {
                    duplicates.append(endpoint.address)
                    continue
                }
                members.append(Member(address: endpoint.address, group: group, isLive: endpoint.state == .live))
            }
        }
        liveStable = members.filter { $0.group == .stable && $0.isLive }.map(\.address)
        liveCanary = members.filter { $0.group == .canary && $0.isLive }.map(\.address)
        self.duplicates = duplicates

        let assumedAddOrder = members.reversed()
        if let kernelOrder {
            let listed = Set(kernelOrder)
            let byAddress = Dictionary(members.map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
            let new = assumedAddOrder.filter { !listed.contains($0.address) }
            var present = Set<SocketAddress>()
            let existing = kernelOrder.compactMap { address -> Member? in
                guard present.insert(address).inserted else { return nil }
                return byAddress[address]
            }
            listOrder = new + existing
        } else {
            listOrder = Array(assumedAddOrder)
        }
    }

    var liveCount: Int { liveStable.count + liveCanary.count }
}

/// Helpers shared by the per-scheduler solvers.
enum SolverSupport {
    /// Spreads `total` over `count` endpoints as evenly as integers allow: the first
    /// `total % count` get one more.
    static func spread(_ total: Int, over count: Int) -> [Int] {
        guard count > 0 else { return [] }
        let base = total / count, extra = total % count
        return (0..<count).map { $0 < extra ? base + 1 : base }
    }

    /// Weights for every endpoint: the given live ones spread from their group totals, all
    /// others (draining, or a group that gets nothing) 0.
    static func weights(
        _ endpoints: SolverEndpoints, stableTotal: Int, canaryTotal: Int
    ) -> [SocketAddress: Int32] {
        var weights: [SocketAddress: Int32] = [:]
        weights.reserveCapacity(endpoints.listOrder.count)
        for member in endpoints.listOrder { weights[member.address] = 0 }
        if stableTotal > 0 {
            for (address, weight) in zip(endpoints.liveStable, spread(stableTotal, over: endpoints.liveStable.count)) {
                weights[address] = Int32(clamping: weight)
            }
        }
        if canaryTotal > 0 {
            for (address, weight) in zip(endpoints.liveCanary, spread(canaryTotal, over: endpoints.liveCanary.count)) {
                weights[address] = Int32(clamping: weight)
            }
        }
        return weights
    }

    /// Weights in the kernel's list order.
    static func listWeights(_ endpoints: SolverEndpoints, _ weights: [SocketAddress: Int32]) -> [Int] {
        endpoints.listOrder.map { Int(weights[$0.address] ?? 0) }
    }

    /// A share as a percentage with up to four decimals: "10%", "10.1562%".
    static func percent(_ share: Double) -> String {
        let scaled = (share * 1_000_000).rounded()
        let whole = Int(scaled) / 10_000, fraction = Int(scaled) % 10_000
        guard fraction != 0 else { return "\(whole)%" }
        var digits = String(fraction)
        while digits.count < 4 { digits = "0" + digits }
        while digits.hasSuffix("0") { digits.removeLast() }
        return "\(whole).\(digits)%"
    }

    /// "a, b, c and 4 more".
    static func list(_ addresses: [SocketAddress], limit: Int = 8) -> String {
        let shown = addresses.prefix(limit).map(\.description).joined(separator: ", ")
        return addresses.count > limit ? "\(shown) and \(addresses.count - limit) more" : shown
    }

    /// True when the share equals the target exactly (in basis points as a fraction).
    static func matches(_ share: Double, _ target: CanaryShare) -> Bool {
        abs(share - target.fraction) < 1e-12
    }
}
