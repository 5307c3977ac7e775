import IPVS

extension DesiredService {
    /// For each endpoint address, the groups that list it (indices into `backends`, ascending).
    public var groupsByAddress: [SocketAddress: [Int]] {
        var groups: [SocketAddress: [Int]] = [:]
        for (index, group) in backends.enumerated() {
            for endpoint in group.endpoints where groups[endpoint.address]?.last != index {
                groups[endpoint.address, default: []].append(index)
            }
        }
        return groups
    }

    /// What a destination is to this service, for people and metric labels: its group's name
    /// (`stable`, `canary`, `blue`), the names joined by `+` for an address in several groups,
    /// nil for an address the service does not list.
    public func role(of address: SocketAddress, groups: [SocketAddress: [Int]]) -> String? {
        groups[address].map { $0.map { backends[$0].name }.joined(separator: "+") }
    }

    /// Each group's part of the connections the kernel counted on the service's destinations
    /// (`connections` by address), an address in several groups split in proportion to what
    /// each group asks of it; nil when none were counted.
    public func observedShares(connections: [SocketAddress: UInt64]) -> [Double]? {
        let groups = groupsByAddress
        let total = totalWeight
        // What each group asks of each of its live endpoints (its target over its live count).
        let asks = backends.map { group -> Double in
            let live = group.liveCount
            return live == 0 || total == 0 ? 0 : Double(group.weight) / Double(total) / Double(live)
        }
        var perGroup = backends.map { _ in 0.0 }
        var counted = 0.0
        for (address, count) in connections where count > 0 {
            guard let members = groups[address] else { continue }
            counted += Double(count)
            let asked = members.reduce(0.0) { $0 + asks[$1] }
            for member in members {
                perGroup[member] += asked > 0 ? Double(count) * asks[member] / asked : Double(count) / Double(members.count)
            }
        }
        guard counted > 0 else { return nil }
        return perGroup.map { $0 / counted }
    }
}
