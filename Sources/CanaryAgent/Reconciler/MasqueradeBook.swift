import CanaryCore
import Foundation
import IPVS
import NodeNetwork

/// The masquerade rules and the hairpin set, kept equal to the endpoints of the agent's services.
///
/// At a full sync the census is taken again from the table and the rules and set are written
/// whole (the set rewritten only when an earlier update failed, else checked by its size); after a
/// change, only the endpoints that joined or left the set are sent. While writing keeps failing the
/// error is kept with its start, for `status` and `/readyz`.
struct MasqueradeBook: Sendable {
    private(set) var census = TableCensus()
    /// Set when a hairpin update failed: the next full sync rewrites the set instead of trusting its size.
    private var needsRewrite = true
    private var coversIPv6 = false
    /// The error while the rules keep failing, and since when (wall clock, for people).
    private(set) var error: AgentStatus.OngoingError?
    /// Since when they keep failing (for `/readyz`).
    private(set) var failingSince: ContinuousClock.Instant?

    /// Counts the owned services of the whole table again and writes the rules and the set.
    mutating func syncAll(_ table: IPVSTableIndex, ownership: Ownership, node: any NodePlumbing) -> NodeNetworkError? {
        census = TableCensus(table, owns: ownership.owns)
        return write(node)
    }

    /// Counts the changed services again and sends only the endpoints that joined or left the set.
    mutating func update(
        _ keys: Set<ServiceKey>, table: IPVSTableIndex, ownership: Ownership, node: any NodePlumbing
    ) -> NodeNetworkError? {
        var touched = Set<IPAddress>()
        for key in keys {
            let change = census.update(key, ownership.owns(key) ? table[key] : nil)
            touched.formUnion(change.added)
            touched.formUnion(change.removed)
        }
        let adding = touched.filter(census.isMasqueraded)
        if !coversIPv6, adding.contains(where: { $0.family == .inet6 }) {
            return write(node)  // the first IPv6 endpoint: the IPv6 set and rules come first
        }
        guard !touched.isEmpty else { return nil }
        do {
            try node.updateMasquerade(adding: adding, removing: touched.subtracting(adding))
            return nil
        } catch {
            needsRewrite = true
            failed(error)
            return error
        }
    }

    private mutating func write(_ node: any NodePlumbing) -> NodeNetworkError? {
        let endpoints = census.masqueradedEndpoints
        do {
            try node.syncMasquerade(endpoints: endpoints, rewrite: needsRewrite)
            needsRewrite = false
            coversIPv6 = endpoints.contains { $0.family == .inet6 }
            // The rules and the set were written whole: an earlier failure is repaired.
            error = nil
            failingSince = nil
            return nil
        } catch {
            needsRewrite = true
            failed(error)
            return error
        }
    }

    private mutating func failed(_ failure: NodeNetworkError) {
        failingSince = failingSince ?? .now
        error = AgentStatus.OngoingError(message: "\(failure)", since: error?.since ?? Date())
    }
}

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
