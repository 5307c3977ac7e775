import IPVS

/// The agent's masquerade (source NAT) rules for IPVS-NAT, in a chain of its own.
///
/// IPVS in NAT mode (masquerading) rewrites a new connection's destination from the virtual
/// address to the chosen endpoint and rewrites the replies back ("de-NAT") as they pass through
/// this node. That works only if the replies DO pass through this node. When they would not, the
/// connection's source must be rewritten to an address of this node (MASQUERADE), so that the
/// endpoint answers this node, whose IPVS de-NATs the reply and hands it to the client. The
/// chain masquerades exactly the IPVS-NAT connections whose replies would otherwise go astray:
///
/// 1. **Clients on the node itself** (`-m addrtype --src-type LOCAL`): a process on the node
///    that connects to a virtual address gets a source address of the node, usually the
///    virtual address itself (it is local, on the agent's dummy interface). An endpoint on
///    another host would answer that address, which every node holds, so the reply would be
///    delivered locally on the endpoint's host (or elsewhere) and never de-NATed here.
///    Masquerading puts the outgoing interface's address in the source, which routes back here.
/// 2. **Hairpin** (source and destination the same endpoint, matched by one rule against the
///    set `HairpinSet` keeps, as kube-proxy's KUBE-LOOP-BACK): an endpoint that connects to its
///    own Service and is picked itself receives a packet from itself to itself; it would answer
///    itself directly, inside its own network stack, with the endpoint's address as the source
///    instead of the virtual address, and the client (itself) would drop that reply.
///    Masquerading makes the source this node, so the reply comes back through IPVS. The chain
///    does not change with the endpoints: a change of endpoints is one set update.
/// 2b. **Endpoints as clients, where bridged traffic bypasses netfilter** (`endpointClients`: no
///    br_netfilter, as on a lab box or VM host with backends on a bridge): an endpoint that calls
///    a Service and is given a neighbour on its own bridge gets the neighbour's answer straight
///    over the bridge, from the neighbour's address, never de-NATed: the connection fails. So every
///    IPVS-NAT connection whose source is an endpoint is masqueraded (the same set, matched as
///    `src,src`: its entries are endpoint-to-itself pairs). With br_netfilter the bridge hands those
///    replies to conntrack, which de-NATs them, and the client's address is kept (2. only).
/// 3. **Everything, with `masqueradeAll`**: clients off the node (an external client sending to
///    a node, a router spreading a virtual address over nodes) whose endpoint is on another
///    host: its reply goes straight to the client, bypassing this node. The price is that the
///    endpoint no longer sees the client's address, hence opt-in.
///
/// Other clients need nothing: a pod on this node reaching an endpoint elsewhere gets its reply
/// routed to the pod's address, which leads through this node (the pod's gateway), where IPVS
/// de-NATs it; the client's address is kept.
///
/// Every rule matches only IPVS-NAT traffic in its original direction with the `ipvs` match
/// (`-m ipvs --vdir ORIGINAL --vmethod MASQ`, module xt_ipvs; `--vdir` implies `--ipvs`, a
/// packet IPVS handled, and iptables-save prints it without), so no other traffic of the node
/// is touched. The nat table sees a connection's first packet only; that is enough because
/// IPVS keeps the netfilter connection (`net.ipv4.vs.conntrack=1`), whose NAT then applies to
/// every packet of it.
///
/// The chain `CANARY-POSTROUTING` (nat table, IPv4 and IPv6 alike) is jumped to from the top of
/// POSTROUTING by exactly one rule carrying `jumpComment`. Applying lists the nat table
/// (`iptables -t nat -S`) and writes only when the chain or the jump differ from what they should
/// be: the whole chain in one `iptables-restore --noflush` transaction (declaring the chain
/// empties it and the new rules replace the old at once, nothing else in the table is touched),
/// the jump added when missing, extra copies deleted.
public struct MasqueradeRules: Sendable {
    /// The agent's own chain in the nat table.
    public static let chain = "CANARY-POSTROUTING"
    /// The comment of the one POSTROUTING rule that jumps to `chain`.
    public static let jumpComment = "canary-agent: masquerade IPVS-NAT traffic that would not return through this node"

    /// The iptables programs, looked up in PATH: the ones of the backend (nft or legacy) the
    /// node's other rules use.
    public struct Tools: Hashable, Sendable {
        public var iptables: String
        public var iptablesRestore: String
        public var ip6tables: String
        public var ip6tablesRestore: String

        public init(iptables: String, iptablesRestore: String, ip6tables: String, ip6tablesRestore: String) {
            self.iptables = iptables
            self.iptablesRestore = iptablesRestore
            self.ip6tables = ip6tables
            self.ip6tablesRestore = ip6tablesRestore
        }

        /// `iptables`, `iptables-restore`, `ip6tables`, `ip6tables-restore`.
        public static let standard = Tools(
            iptables: "iptables", iptablesRestore: "iptables-restore",
            ip6tables: "ip6tables", ip6tablesRestore: "ip6tables-restore")

        func list(_ family: IPAddress.Family) -> String { family == .inet ? iptables : ip6tables }
        func restore(_ family: IPAddress.Family) -> String { family == .inet ? iptablesRestore : ip6tablesRestore }
    }

    /// The matches that select IPVS-NAT packets in their original direction. Tests of the
    /// transaction logic on a kernel without IPVS replace them (internal).
    var ipvsNATMatch: [String] = ["-m", "ipvs", "--vdir", "ORIGINAL", "--vmethod", "MASQ"]
    /// The match of a hairpin connection (source and destination one endpoint), or with
    /// `sourceOnly` of any connection from an endpoint, per family. Tests on a kernel without ipset
    /// replace it (internal).
    var hairpinMatch: @Sendable (_ family: IPAddress.Family, _ sourceOnly: Bool) -> [String] = { family, sourceOnly in
        ["-m", "set", "--match-set", HairpinSet.name(family), sourceOnly ? "src,src" : "src,dst"]
    }

    public let runner: any CommandRunner
    public let tools: Tools

    public init(runner: any CommandRunner = SpawnCommandRunner(), tools: Tools = .standard) {
        self.runner = runner
        self.tools = tools
    }

    /// Programs the chain of each family in `families`: one listing, and one transaction where
    /// the chain or the jump are not as they should be. Returns whether anything was written. The
    /// hairpin rule refers to the family's `HairpinSet`, which must exist first.
    @discardableResult
    public func apply(
        masqueradeAll: Bool, endpointClients: Bool = false, families: Set<IPAddress.Family> = [.inet, .inet6]
    ) throws(NodeNetworkError) -> Bool {
        var wrote = false
        for family in families.sorted() {
            let existing = try listNAT(family)
            let jumps = Self.jumpRules(in: existing)
            let rules = chainRules(family: family, masqueradeAll: masqueradeAll, endpointClients: endpointClients)
            let wanted = rules.map { "-A \(Self.chain) \($0)" }
            if jumps.count == 1, Self.chainExists(in: existing), Self.rules(ofChainIn: existing) == wanted { continue }
            try restore(family, render(rules, existingJumps: jumps))
            wrote = true
        }
        return wrote
    }

    /// Deletes the jump and the chain of each family, leaving every other rule alone. Nothing
    /// there is not an error.
    public func remove(families: Set<IPAddress.Family> = [.inet, .inet6]) throws(NodeNetworkError) {
        for family in families.sorted() {
            let existing = try listNAT(family)
            guard let script = Self.renderRemoval(
                existingJumps: Self.jumpRules(in: existing), chainExists: Self.chainExists(in: existing))
            else { continue }
            try restore(family, script)
        }
    }

    /// The chain's rules, in order, as `iptables-save` prints them (without the `-A CHAIN`).
    public func chainRules(family: IPAddress.Family, masqueradeAll: Bool, endpointClients: Bool = false) -> [String] {
        let match = ipvsNATMatch.joined(separator: " ")
        if masqueradeAll {
            return ["-m comment --comment \"all IPVS-NAT traffic (masquerade-all)\" \(match) -j MASQUERADE"]
        }
        let endpoints = hairpinMatch(family, endpointClients).joined(separator: " ")
        return [
            "-m comment --comment \"clients on this node\" -m addrtype --src-type LOCAL \(match) -j MASQUERADE",
            endpointClients
                ? "-m comment --comment \"endpoint clients without br_netfilter\" \(endpoints) \(match) -j MASQUERADE"
                : "-m comment --comment hairpin \(endpoints) \(match) -j MASQUERADE",
        ]
    }

    /// The `iptables-restore --noflush` input that makes the chain hold exactly `rules` (from
    /// `chainRules`) and leaves exactly one jump to it: `existingJumps` are the jump rules there
    /// now, as `iptables -S` prints them.
    public func render(_ rules: [String], existingJumps: [String]) -> String {
        var lines = ["*nat", ":\(Self.chain) - [0:0]"]
        lines += rules.map { "-A \(Self.chain) \($0)" }
        if existingJumps.isEmpty {
            lines.append("-I POSTROUTING 1 -m comment --comment \"\(Self.jumpComment)\" -j \(Self.chain)")
        } else {
            // Keep the first; a second one (an old agent's, a hand-made copy) would only run the chain twice.
            lines += existingJumps.dropFirst().map { Self.deletion(of: $0) }
        }
        lines.append("COMMIT")
        return lines.joined(separator: "\n") + "\n"
    }

    /// The `iptables-restore --noflush` input that deletes the jumps and the chain, or nil when
    /// neither is there.
    public static func renderRemoval(existingJumps: [String], chainExists: Bool) -> String? {
        guard !existingJumps.isEmpty || chainExists else { return nil }
        var lines = ["*nat"]
        lines += existingJumps.map(deletion(of:))
        if chainExists {
            lines += ["-F \(chain)", "-X \(chain)"]
        }
        lines.append("COMMIT")
        return lines.joined(separator: "\n") + "\n"
    }

    /// The POSTROUTING rules that jump to the chain, from an `iptables -t nat -S` listing.
    public static func jumpRules(in listing: String) -> [String] {
        listing.split(whereSeparator: \.isNewline).map(String.init).filter { line in
            let words = line.split(separator: " ")
            guard words.count >= 2, words[0] == "-A", words[1] == "POSTROUTING" else { return false }
            return zip(words, words.dropFirst()).contains { ($0 == "-j" || $0 == "-g") && $1 == Substring(chain) }
        }
    }

    /// Whether an `iptables -t nat -S` listing declares the chain.
    public static func chainExists(in listing: String) -> Bool {
        listing.split(whereSeparator: \.isNewline).contains { $0 == "-N \(chain)" }
    }

    /// The chain's rules in an `iptables -t nat -S` listing, as listed (`-A CANARY-POSTROUTING …`).
    static func rules(ofChainIn listing: String) -> [String] {
        listing.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("-A \(chain) ") }.map(String.init)
    }

    /// A listed rule (`-A POSTROUTING …`) as a deletion (`-D POSTROUTING …`).
    static func deletion(of rule: String) -> String { "-D" + rule.dropFirst(2) }

    private func listNAT(_ family: IPAddress.Family) throws(NodeNetworkError) -> String {
        let command = tools.list(family)
        let arguments = ["-w", "-t", "nat", "-S"]
        let result = try runner.run(command, arguments, input: "")
        guard result.status == 0 else {
            throw .command(command: ([command] + arguments).joined(separator: " "), output: Self.summary(result))
        }
        return result.standardOutput
    }

    private func restore(_ family: IPAddress.Family, _ script: String) throws(NodeNetworkError) {
        let command = tools.restore(family)
        let arguments = ["-w", "--noflush"]
        let result = try runner.run(command, arguments, input: script)
        guard result.status == 0 else {
            throw .command(command: ([command] + arguments).joined(separator: " "), output: Self.summary(result))
        }
    }

    /// What a failed command said, on one line.
    static func summary(_ result: CommandResult) -> String {
        let text = (result.standardError + "\n" + result.standardOutput)
            .split(whereSeparator: \.isNewline)
            .map { $0.drop { $0 == " " || $0 == "\t" } }.filter { !$0.isEmpty }
            .joined(separator: "; ")
        return "exit status \(result.status)" + (text.isEmpty ? "" : ": " + text)
    }
}
