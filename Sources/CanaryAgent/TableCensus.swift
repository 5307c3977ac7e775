import CanaryCore
import IPVS

/// Running totals over the services the agent owns in the kernel, updated per changed service so
/// that one change costs work in proportion to that service, not to the table: how many services
/// and destinations are programmed, and which endpoint addresses carry IPVS-NAT destinations (the
/// hairpin masquerade set), counted per address because several services may share an endpoint.
struct TableCensus: Sendable {
    private(set) var services = 0
    private(set) var destinations = 0
    private var perService: [ServiceKey: Contribution] = [:]
    private var masqueradeUses: [IPAddress: Int] = [:]

    private struct Contribution: Sendable {
        var destinations: Int
        var masqueraded: Set<IPAddress>
    }

    /// The endpoint addresses with at least one masqueraded destination.
    var masqueradedEndpoints: Set<IPAddress> { Set(masqueradeUses.keys) }

    /// Whether an endpoint address has a masqueraded destination (a look-up, for one change).
    func isMasqueraded(_ address: IPAddress) -> Bool { masqueradeUses[address] != nil }

    /// The census of a whole table.
    init(_ table: IPVSTableIndex = [:], owns: (ServiceKey) -> Bool = { _ in true }) {
        for (key, entry) in table where owns(key) { _ = update(key, entry) }
    }

    /// Counts the service as it is now (nil or not owned: gone). Returns the endpoint addresses
    /// that joined the masqueraded set and those that left it.
    mutating func update(_ key: ServiceKey, _ entry: ServiceEntry?) -> (added: Set<IPAddress>, removed: Set<IPAddress>) {
        let new = entry.map { entry in
            Contribution(
                destinations: entry.destinations.count,
                masqueraded: Set(entry.destinations.lazy.filter { $0.forwarding == .masquerade }.map(\.address.address)))
        }
        let old = perService[key]
        perService[key] = new
        services += (new == nil ? 0 : 1) - (old == nil ? 0 : 1)
        destinations += (new?.destinations ?? 0) - (old?.destinations ?? 0)
        var added = Set<IPAddress>()
        var removed = Set<IPAddress>()
        let before = old?.masqueraded ?? []
        let after = new?.masqueraded ?? []
        for address in after.subtracting(before) {
            masqueradeUses[address, default: 0] += 1
            if masqueradeUses[address] == 1 { added.insert(address) }
        }
        for address in before.subtracting(after) {
            let uses = (masqueradeUses[address] ?? 1) - 1
            masqueradeUses[address] = uses > 0 ? uses : nil
            if uses <= 0 { removed.insert(address) }
        }
        return (added, removed)
    }
}

/// Which services use each virtual address, among those desired and those in the kernel: an
/// address is released once no service of either kind is left on it.
struct AddressUse: Sendable {
    private var users: [IPAddress: Set<ServiceKey>] = [:]

    init(_ keys: some Sequence<ServiceKey> = []) {
        for key in keys { update(key, inUse: true) }
    }

    mutating func update(_ key: ServiceKey, inUse: Bool) {
        guard case .inet(_, let socket) = key else { return }
        if inUse {
            users[socket.address, default: []].insert(key)
        } else if var keys = users[socket.address] {
            keys.remove(key)
            users[socket.address] = keys.isEmpty ? nil : keys
        }
    }

    func isUsed(_ address: IPAddress) -> Bool { users[address] != nil }
}
