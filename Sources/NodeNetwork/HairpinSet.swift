import IPVS

/// The endpoints whose hairpin connections are masqueraded, as an ipset per family (the kernel's
/// ip_set, through the `ipset` program): `CANARY-HAIRPIN` (IPv4) and `CANARY-HAIRPIN6` (IPv6), of
/// type `hash:net,net` with one host-to-itself entry per endpoint (`10.0.0.5,10.0.0.5`), matched by
/// `MasqueradeRules`' hairpin rule as `src,dst`: exactly the packets from an endpoint to itself.
///
/// One rule and a set, where one rule per endpoint would make every change of endpoints rewrite
/// the chain (100,000 rules for 10,000 Services of 10 endpoints): a change adds and deletes entries
/// over netlink (`IPSetNetlink`, many per datagram; no process started), a hash lookup in the
/// kernel per packet. A full replacement (the agent's start, a repair) fills a scratch set and
/// swaps it in at once, so the live set is never half full. The sets' life (create, swap, destroy)
/// is the `ipset` program's: a few lines, rarely. Without the netlink socket every entry goes
/// through `ipset -exist restore` too.
public struct HairpinSet: Sendable {
    /// The set of a family.
    public static func name(_ family: IPAddress.Family) -> String {
        family == .inet ? "CANARY-HAIRPIN" : "CANARY-HAIRPIN6"
    }

    /// The scratch set a full replacement fills before swapping it in.
    static func scratchName(_ family: IPAddress.Family) -> String { name(family) + "-NEW" }

    /// Room for every endpoint of 10,000 Services of 100 endpoints each.
    public static let maximumEntries = 1 << 20

    public let runner: any CommandRunner
    /// The ipset program, looked up in PATH.
    public let ipset: String
    /// Where entries are added and deleted; nil: through the ipset program.
    public let entries: IPSetNetlink?

    /// The netlink socket is opened in the network namespace of the calling thread.
    public init(
        runner: any CommandRunner = SpawnCommandRunner(), ipset: String = "ipset", entries: IPSetNetlink? = try? IPSetNetlink()
    ) {
        self.runner = runner
        self.ipset = ipset
        self.entries = entries
    }

    /// Makes the family's set hold exactly these endpoints (those of other families are ignored).
    /// Unless `rewrite`, a set that exists with as many entries as asked is taken as right (one
    /// `ipset list -terse`), so that the periodic check of an unchanged node costs one listing;
    /// otherwise the set is rebuilt in a scratch set and swapped in. Returns whether it wrote.
    @discardableResult
    public func sync(endpoints: Set<IPAddress>, family: IPAddress.Family, rewrite: Bool) throws(NodeNetworkError) -> Bool {
        let wanted = endpoints.filter { $0.family == family }
        let count = try entryCount(family)
        if !rewrite, count == wanted.count { return false }
        guard let entries else {
            try restore(renderReplacement(endpoints: wanted, family: family, exists: count != nil))
            return true
        }
        let (prepare, swap) = renderReplacementSteps(family: family, exists: count != nil)
        try restore(prepare)
        try entries.update(set: Self.scratchName(family), adding: wanted.sorted(), removing: [])
        try restore(swap)
        return true
    }

    /// Adds and deletes endpoints in one call; adding one already there or deleting one not there
    /// is not an error (`-exist`).
    public func update(adding: Set<IPAddress>, removing: Set<IPAddress>) throws(NodeNetworkError) {
        guard !adding.isEmpty || !removing.isEmpty else { return }
        guard let entries else { return try restore(renderUpdate(adding: adding, removing: removing)) }
        for family in [IPAddress.Family.inet, .inet6] {
            let add = adding.filter { $0.family == family }.sorted()
            let remove = removing.filter { $0.family == family }.sorted()
            if !add.isEmpty || !remove.isEmpty { try entries.update(set: Self.name(family), adding: add, removing: remove) }
        }
    }

    /// Destroys the sets of these families (after the rules that use them are gone).
    public func remove(families: Set<IPAddress.Family> = [.inet, .inet6]) throws(NodeNetworkError) {
        for family in families.sorted() {
            for name in [Self.scratchName(family), Self.name(family)] {
                let arguments = ["list", "-name", name]
                let listed = try runner.run(ipset, arguments, input: "")
                guard listed.status == 0 else { continue }
                try run(["destroy", name])
            }
        }
    }

    // MARK: - Rendering

    /// The `ipset restore` input that fills a scratch set and swaps it with the live one.
    func renderReplacement(endpoints: Set<IPAddress>, family: IPAddress.Family, exists: Bool) -> String {
        let live = Self.name(family)
        let scratch = Self.scratchName(family)
        var lines = [Self.create(scratch, family), "flush \(scratch)"]
        lines += endpoints.sorted().map { "add \(scratch) \(Self.entry($0))" }
        if !exists { lines.append(Self.create(live, family)) }
        lines += ["swap \(scratch) \(live)", "destroy \(scratch)"]
        return lines.joined(separator: "\n") + "\n"
    }

    /// The `ipset restore` inputs around filling the scratch set over netlink: before, the scratch
    /// set made empty; after, the live set made if missing, swapped with the scratch, which goes.
    func renderReplacementSteps(family: IPAddress.Family, exists: Bool) -> (prepare: String, swap: String) {
        let live = Self.name(family)
        let scratch = Self.scratchName(family)
        var swap = exists ? [] : [Self.create(live, family)]
        swap += ["swap \(scratch) \(live)", "destroy \(scratch)"]
        return ([Self.create(scratch, family), "flush \(scratch)"].joined(separator: "\n") + "\n", swap.joined(separator: "\n") + "\n")
    }

    /// The `ipset restore` input of a change: deletions first, then additions.
    func renderUpdate(adding: Set<IPAddress>, removing: Set<IPAddress>) -> String {
        var lines = removing.sorted().map { "del \(Self.name($0.family)) \(Self.entry($0))" }
        lines += adding.sorted().map { "add \(Self.name($0.family)) \(Self.entry($0))" }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func create(_ name: String, _ family: IPAddress.Family) -> String {
        "create \(name) hash:net,net family \(family == .inet ? "inet" : "inet6") maxelem \(maximumEntries)"
    }

    /// An endpoint to itself.
    private static func entry(_ address: IPAddress) -> String { "\(address),\(address)" }

    // MARK: - Commands

    /// The family's entry count from `ipset list -terse`, nil when the set does not exist.
    private func entryCount(_ family: IPAddress.Family) throws(NodeNetworkError) -> Int? {
        let result = try runner.run(ipset, ["list", "-terse", Self.name(family)], input: "")
        guard result.status == 0 else { return nil }
        for line in result.standardOutput.split(whereSeparator: \.isNewline) where line.hasPrefix("Number of entries:") {
            return Int(line.dropFirst("Number of entries:".count).filter { !$0.isWhitespace })
        }
        return nil
    }

    private func restore(_ script: String) throws(NodeNetworkError) {
        try run(["-exist", "restore"], input: script)
    }

    private func run(_ arguments: [String], input: String = "") throws(NodeNetworkError) {
        let result = try runner.run(ipset, arguments, input: input)
        guard result.status == 0 else {
            throw .command(command: ([ipset] + arguments).joined(separator: " "), output: MasqueradeRules.summary(result))
        }
    }
}
