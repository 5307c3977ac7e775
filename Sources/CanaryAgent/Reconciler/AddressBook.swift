import CanaryCore
import IPVS
import NodeNetwork

/// The virtual addresses on the agent's interface, and the rules for claiming and releasing them.
///
/// An address is bound before the first service on it is added, unless the kernel already has a
/// service on it that the agent did not make (someone else's: the address is *blocked*, its desired
/// services are reported and left unprogrammed). It is released once no desired service and no
/// service in the kernel is left on it. Which services are the agent's follows from this: those on
/// a bound address (`ownership`).
struct AddressBook: Sendable {
    /// The addresses bound on the interface, as far as the agent knows (read again at each full sync).
    private(set) var bound: Set<IPAddress> = []
    /// Addresses the agent may not claim, with the foreign services on them.
    private(set) var blocked: [IPAddress: [ServiceKey]] = [:]
    private var use = AddressUse()

    /// Which services are the agent's: those on its addresses.
    var ownership: Ownership { Ownership(boundAddresses: bound) }

    /// Takes the interface's addresses as read (a full sync).
    mutating func adopt(bound addresses: Set<IPAddress>) { bound = addresses }

    /// The address that blocks a desired service, if one does.
    func blockingAddress(of key: ServiceKey) -> IPAddress? {
        guard case .inet(_, let socket) = key, blocked[socket.address] != nil else { return nil }
        return socket.address
    }

    /// Which addresses the given desired services need that are not bound yet: those the agent may
    /// claim, and those it may not because the table has services on them already (someone else's).
    static func claims(
        for keys: some Sequence<ServiceKey>, bound: Set<IPAddress>, table: IPVSTableIndex
    ) -> (claimable: Set<IPAddress>, blocked: [IPAddress: [ServiceKey]]) {
        var needed = Set<IPAddress>()
        for key in keys {
            guard case .inet(_, let socket) = key, !bound.contains(socket.address) else { continue }
            needed.insert(socket.address)
        }
        guard !needed.isEmpty else { return ([], [:]) }
        var blocked: [IPAddress: [ServiceKey]] = [:]
        for key in table.keys {
            guard case .inet(_, let socket) = key, needed.contains(socket.address) else { continue }
            blocked[socket.address, default: []].append(key)
        }
        return (needed.subtracting(blocked.keys), blocked.mapValues { $0.sorted() })
    }

    /// What binding the addresses of some desired services did.
    struct Binding {
        /// Addresses found blocked that were not before (each reported once).
        var newlyBlocked: [IPAddress: [ServiceKey]] = [:]
        var errors: [NodeNetworkError] = []
    }

    /// Binds the addresses the given desired services need, many per request, unless someone
    /// else's services are on an address already.
    mutating func bind(for keys: some Sequence<ServiceKey>, table: IPVSTableIndex, node: any NodePlumbing) -> Binding {
        var binding = Binding()
        let claims = Self.claims(for: keys, bound: bound, table: table)
        for (address, others) in claims.blocked {
            if blocked[address] == nil { binding.newlyBlocked[address] = others }
            blocked[address] = others
        }
        let addresses = claims.claimable.sorted()
        guard !addresses.isEmpty else { return binding }
        let results: [Result<Void, NodeNetworkError>]
        do {
            results = try node.bind(addresses)
        } catch {
            results = Array(repeating: .failure(error), count: addresses.count)
        }
        for (address, result) in zip(addresses, results) {
            switch result {
            case .success:
                bound.insert(address)
                blocked[address] = nil
            case .failure(let error):
                binding.errors.append(error)
            }
        }
        return binding
    }

    /// Counts which services use each address (desired or in the kernel) after a sync, for the
    /// changed services only (nil: every service, at a full sync), and releases the bound addresses
    /// no service uses any more. Returns the keys no longer in use at all, and the errors.
    mutating func release(
        changed keys: Set<ServiceKey>?, desired: DesiredState, table: IPVSTableIndex, node: any NodePlumbing
    ) -> (unused: Set<ServiceKey>, errors: [NodeNetworkError]) {
        var released: [IPAddress]
        var unused = Set<ServiceKey>()
        if let keys {
            var candidates = Set<IPAddress>()
            for key in keys {
                let inUse = desired.services[key] != nil || table[key] != nil
                use.update(key, inUse: inUse)
                if !inUse {
                    unused.insert(key)
                    if case .inet(_, let socket) = key { candidates.insert(socket.address) }
                }
            }
            released = candidates.filter { bound.contains($0) && !use.isUsed($0) }.sorted()
        } else {
            use = AddressUse(Set(desired.services.keys).union(table.keys))
            released = bound.filter { !use.isUsed($0) }.sorted()
        }
        var errors: [NodeNetworkError] = []
        for address in released {
            do {
                try node.unbind(address)
                bound.remove(address)
            } catch {
                errors.append(error)
            }
        }
        if !blocked.isEmpty {
            // An address stays blocked only while a desired service still wants it.
            let wanted = Set(desired.services.keys.compactMap { key -> IPAddress? in
                if case .inet(_, let socket) = key { socket.address } else { nil }
            })
            blocked = blocked.filter { wanted.contains($0.key) }
        }
        return (unused, errors)
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
