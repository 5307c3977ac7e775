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
/// 2. **Hairpin** (`-s EP -d EP`, one rule per endpoint address): an endpoint that connects to
///    its own Service and is picked itself receives a packet from itself to itself; it would
///    answer itself directly, inside its own network stack, with the endpoint's address as the
///    source instead of the virtual address, and the client (itself) would drop that reply.
///    Masquerading makes the source this node, so the reply comes back through IPVS.
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
/// POSTROUTING by exactly one rule carrying `jumpComment`. Applying writes the whole chain in one
/// `iptables-restore --noflush` transaction: declaring the chain empties it and the new rules
/// replace the old at once, nothing else in the table is touched, and the jump is added only
/// when a listing (`iptables -t nat -S`) shows it missing (extra copies are deleted).
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

    public let runner: any CommandRunner
    public let tools: Tools

    public init(runner: any CommandRunner = SpawnCommandRunner(), tools: Tools = .standard) {
        self.runner = runner
        self.tools = tools
    }

    /// Programs the chain of each family in `families` for these endpoints: one transaction per
    /// family. Endpoint addresses of a family not listed are ignored.
    public func apply(
        endpoints: Set<IPAddress>, masqueradeAll: Bool, families: Set<IPAddress.Family> = [.inet, .inet6]
    ) throws(NodeNetworkError) {
        for family in families.sorted() {
            let existing = try listNAT(family)
            let script = render(
                family: family, endpoints: endpoints.filter { $0.family == family }, masqueradeAll: masqueradeAll,
                existingJumps: Self.jumpRules(in: existing))
            try restore(family, script)
        }
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
    public func chainRules(family: IPAddress.Family, endpoints: Set<IPAddress>, masqueradeAll: Bool) -> [String] {
        let match = ipvsNATMatch.joined(separator: " ")
        if masqueradeAll {
            return ["-m comment --comment \"all IPVS-NAT traffic (masquerade-all)\" \(match) -j MASQUERADE"]
        }
        let hostBits = family == .inet ? 32 : 128
        var rules = ["-m comment --comment \"clients on this node\" -m addrtype --src-type LOCAL \(match) -j MASQUERADE"]
        for endpoint in endpoints.filter({ $0.family == family }).sorted() {
            let address = "\(endpoint)/\(hostBits)"
            rules.append("-s \(address) -d \(address) -m comment --comment hairpin \(match) -j MASQUERADE")
        }
        return rules
    }

    /// The `iptables-restore --noflush` input that makes the chain hold exactly `chainRules` and
    /// leaves exactly one jump to it: `existingJumps` are the jump rules there now, as
    /// `iptables -S` prints them.
    public func render(
        family: IPAddress.Family, endpoints: Set<IPAddress>, masqueradeAll: Bool, existingJumps: [String]
    ) -> String {
        var lines = ["*nat", ":\(Self.chain) - [0:0]"]
        lines += chainRules(family: family, endpoints: endpoints, masqueradeAll: masqueradeAll).map { "-A \(Self.chain) \($0)" }
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

    /// A listed rule (`-A POSTROUTING …`) as a deletion (`-D POSTROUTING …`).
    static func deletion(of rule: String) -> String { "-D" + rule.dropFirst(2) }

    private func listNAT(_ family: IPAddress.Family) throws(NodeNetworkError) -> String {
        let command = tools.list(family)
        let arguments = ["-w", "-t", "nat", "-S"]
        let result = try runner.run(command, arguments, input: "")
        guard result.status == 0 else {
            throw .iptables(command: ([command] + arguments).joined(separator: " "), output: Self.summary(result))
        }
        return result.standardOutput
    }

    private func restore(_ family: IPAddress.Family, _ script: String) throws(NodeNetworkError) {
        let command = tools.restore(family)
        let arguments = ["-w", "--noflush"]
        let result = try runner.run(command, arguments, input: script)
        guard result.status == 0 else {
            throw .iptables(command: ([command] + arguments).joined(separator: " "), output: Self.summary(result))
        }
    }

    /// What a failed command said, on one line.
    private static func summary(_ result: CommandResult) -> String {
        let text = (result.standardError + "\n" + result.standardOutput)
            .split(whereSeparator: \.isNewline)
            .map { $0.drop { $0 == " " || $0 == "\t" } }.filter { !$0.isEmpty }
            .joined(separator: "; ")
        return "exit status \(result.status)" + (text.isEmpty ? "" : ": " + text)
    }
}
