import IPVS
import Synchronization
import Testing

@testable import NodeNetwork

#if canImport(Glibc)
import Glibc
#endif

/// A runner that records what would be run and answers listings from a script.
final class RecordingRunner: CommandRunner {
    struct Call: Hashable, Sendable {
        var executable: String
        var arguments: [String]
        var input: String
    }

    private let state = Mutex<[Call]>([])
    let listings: [String: String]
    let failingExecutable: String?

    init(listings: [String: String] = [:], failing: String? = nil) {
        self.listings = listings
        failingExecutable = failing
    }

    var calls: [Call] { state.withLock { $0 } }

    func run(_ executable: String, _ arguments: [String], input: String) throws(NodeNetworkError) -> CommandResult {
        state.withLock { $0.append(Call(executable: executable, arguments: arguments, input: input)) }
        if executable == failingExecutable {
            return CommandResult(status: 2, standardError: "iptables-restore: line 3 failed\n")
        }
        return CommandResult(status: 0, standardOutput: arguments.contains("-S") ? listings[executable, default: ""] : "")
    }
}

@Suite struct MasqueradeRenderingTests {
    static let ipvs = "-m ipvs --vdir ORIGINAL --vmethod MASQ"
    static let jump = "-A POSTROUTING -m comment --comment \"\(MasqueradeRules.jumpComment)\" -j CANARY-POSTROUTING"

    static func chain(_ family: IPAddress.Family) -> [String] {
        [
            "-A CANARY-POSTROUTING -m comment --comment \"clients on this node\" -m addrtype --src-type LOCAL \(ipvs) -j MASQUERADE",
            "-A CANARY-POSTROUTING -m comment --comment hairpin -m set --match-set \(HairpinSet.name(family)) src,dst \(ipvs) -j MASQUERADE",
        ]
    }

    @Test func firstApplyWritesTheChainAndOneJumpPerFamily() throws {
        let runner = RecordingRunner()
        #expect(try MasqueradeRules(runner: runner).apply(masqueradeAll: false))
        let calls = runner.calls
        #expect(calls.map(\.executable) == ["iptables", "iptables-restore", "ip6tables", "ip6tables-restore"])
        #expect(calls[0].arguments == ["-w", "-t", "nat", "-S"])
        #expect(calls[1].arguments == ["-w", "--noflush"])
        for (call, family) in [(calls[1], IPAddress.Family.inet), (calls[3], .inet6)] {
            #expect(call.input == """
                *nat
                :CANARY-POSTROUTING - [0:0]
                \(Self.chain(family).joined(separator: "\n"))
                -I POSTROUTING 1 -m comment --comment "\(MasqueradeRules.jumpComment)" -j CANARY-POSTROUTING
                COMMIT

                """)
        }
    }

    @Test func aChainAndJumpAsTheyShouldBeAreNotRewritten() throws {
        let listing = (["-P POSTROUTING ACCEPT", "-N CANARY-POSTROUTING", Self.jump] + Self.chain(.inet)).joined(separator: "\n") + "\n"
        let runner = RecordingRunner(listings: ["iptables": listing])
        #expect(try MasqueradeRules(runner: runner).apply(masqueradeAll: false, families: [.inet]) == false)
        #expect(runner.calls.map(\.executable) == ["iptables"])
        // One rule of another agent version in the chain: rewritten.
        let old = listing + "-A CANARY-POSTROUTING -s 10.9.1.2/32 -d 10.9.1.2/32 -m comment --comment hairpin \(Self.ipvs) -j MASQUERADE\n"
        let rewriting = RecordingRunner(listings: ["iptables": old])
        #expect(try MasqueradeRules(runner: rewriting).apply(masqueradeAll: false, families: [.inet]))
    }

    @Test func aPresentJumpIsKeptAndExtraOnesDeleted() throws {
        let listing = "-P POSTROUTING ACCEPT\n-N CANARY-POSTROUTING\n\(Self.jump)\n-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE\n\(Self.jump)\n-A CANARY-POSTROUTING -j MASQUERADE\n"
        let runner = RecordingRunner(listings: ["iptables": listing])
        try MasqueradeRules(runner: runner).apply(masqueradeAll: false, families: [.inet])
        let script = runner.calls[1].input
        #expect(!script.contains("-I POSTROUTING"))
        #expect(script.split(separator: "\n").filter { $0.hasPrefix("-D POSTROUTING") }
            == ["-D POSTROUTING -m comment --comment \"\(MasqueradeRules.jumpComment)\" -j CANARY-POSTROUTING"])
        #expect(!script.contains("10.0.0.0/8"))
    }

    @Test func masqueradeAllIsOneRule() {
        let rules = MasqueradeRules(runner: RecordingRunner()).chainRules(family: .inet, masqueradeAll: true)
        #expect(rules == ["-m comment --comment \"all IPVS-NAT traffic (masquerade-all)\" \(Self.ipvs) -j MASQUERADE"])
    }

    @Test("without br_netfilter, every IPVS-NAT connection from an endpoint is masqueraded, not only hairpin")
    func endpointClientsWithoutBridgeNetfilter() throws {
        let runner = RecordingRunner()
        try MasqueradeRules(runner: runner).apply(masqueradeAll: false, endpointClients: true, families: [.inet])
        #expect(runner.calls.map(\.executable) == ["iptables", "iptables-restore"])
        let rules = runner.calls[1].input.split(separator: "\n").filter { $0.hasPrefix("-A CANARY-POSTROUTING") }
        #expect(rules == [
            "-A CANARY-POSTROUTING -m comment --comment \"clients on this node\" -m addrtype --src-type LOCAL \(Self.ipvs) -j MASQUERADE",
            "-A CANARY-POSTROUTING -m comment --comment \"endpoint clients without br_netfilter\" -m set --match-set CANARY-HAIRPIN src,src \(Self.ipvs) -j MASQUERADE",
        ])
    }

    @Test func onlyTheAskedFamiliesAreProgrammed() throws {
        let runner = RecordingRunner()
        try MasqueradeRules(runner: runner).apply(masqueradeAll: false, families: [.inet6])
        #expect(runner.calls.map(\.executable) == ["ip6tables", "ip6tables-restore"])
        #expect(runner.calls[1].input.contains("CANARY-HAIRPIN6 src,dst"))
    }

    @Test func removalDeletesTheJumpsAndTheChainOnly() throws {
        let listing = "-P POSTROUTING ACCEPT\n-N CANARY-POSTROUTING\n-N OTHER\n\(Self.jump)\n-A POSTROUTING -j OTHER\n-A CANARY-POSTROUTING -j MASQUERADE\n"
        let runner = RecordingRunner(listings: ["iptables": listing, "ip6tables": "-P POSTROUTING ACCEPT\n"])
        try MasqueradeRules(runner: runner).remove()
        // Nothing of ours in the IPv6 table: no restore there.
        #expect(runner.calls.map(\.executable) == ["iptables", "iptables-restore", "ip6tables"])
        #expect(runner.calls[1].input == """
            *nat
            -D POSTROUTING -m comment --comment "\(MasqueradeRules.jumpComment)" -j CANARY-POSTROUTING
            -F CANARY-POSTROUTING
            -X CANARY-POSTROUTING
            COMMIT

            """)
    }

    @Test func aFailedRestoreIsAnErrorWithWhatItSaid() {
        let runner = RecordingRunner(failing: "iptables-restore")
        #expect(throws: NodeNetworkError.command(
            command: "iptables-restore -w --noflush", output: "exit status 2: iptables-restore: line 3 failed")
        ) {
            try MasqueradeRules(runner: runner).apply(masqueradeAll: false)
        }
    }

    @Test func jumpRulesAreFoundByTargetNotByComment() {
        let listing = """
            -A POSTROUTING -j CANARY-POSTROUTING
            -A POSTROUTING -m comment --comment "CANARY-POSTROUTING" -j ACCEPT
            -A OUTPUT -j CANARY-POSTROUTING
            -A POSTROUTING -j CANARY-POSTROUTING-2
            """
        #expect(MasqueradeRules.jumpRules(in: listing) == ["-A POSTROUTING -j CANARY-POSTROUTING"])
        #expect(!MasqueradeRules.chainExists(in: listing))
    }

    @Test func aHairpinReplacementFillsAScratchSetAndSwapsItIn() {
        let set = HairpinSet(runner: RecordingRunner(), entries: nil)
        let endpoints: Set<IPAddress> = [IPAddress("10.9.1.3")!, IPAddress("10.9.1.2")!]
        #expect(set.renderReplacement(endpoints: endpoints, family: .inet, exists: false) == """
            create CANARY-HAIRPIN-NEW hash:net,net family inet maxelem \(HairpinSet.maximumEntries)
            flush CANARY-HAIRPIN-NEW
            add CANARY-HAIRPIN-NEW 10.9.1.2,10.9.1.2
            add CANARY-HAIRPIN-NEW 10.9.1.3,10.9.1.3
            create CANARY-HAIRPIN hash:net,net family inet maxelem \(HairpinSet.maximumEntries)
            swap CANARY-HAIRPIN-NEW CANARY-HAIRPIN
            destroy CANARY-HAIRPIN-NEW

            """)
        #expect(set.renderUpdate(adding: [IPAddress("fd00::2")!], removing: [IPAddress("10.9.1.2")!]) == """
            del CANARY-HAIRPIN 10.9.1.2,10.9.1.2
            add CANARY-HAIRPIN6 fd00::2,fd00::2

            """)
    }
}

/// The rules in a real kernel, each test in a network namespace of its own, read back with
/// iptables-save. The host has no IPVS and so no ipvs match: there the transaction logic runs with
/// a stand-in match (`-m mark`); the VM bench runs the real rules.
@Suite struct MasqueradeKernelTests {
    static let foreignRule = "-A POSTROUTING -s 192.168.77.0/24 -m comment --comment \"not ours\" -j MASQUERADE"

    static func natRules(_ tool: String) throws -> [String] {
        try shell(tool, "-t", "nat").split(separator: "\n").map(String.init).filter { $0.hasPrefix("-") || $0.hasPrefix(":") }
    }

    static func exercise(_ rules: MasqueradeRules) throws {
        for (save, iptables) in [("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")] {
            try shell(iptables, "-w", "-t", "nat", "-N", "OTHER")
            try shell(iptables, "-w", "-t", "nat", "-A", "OTHER", "-j", "RETURN")
            let foreign = iptables == "iptables" ? foreignRule : foreignRule.replacingOccurrences("192.168.77.0/24", "fd77::/64")
            try shell(iptables + "-restore", "-w", "--noflush", input: "*nat\n\(foreign)\nCOMMIT\n")
            let family: IPAddress.Family = iptables == "iptables" ? .inet : .inet6

            func check(masqueradeAll: Bool, endpointClients: Bool = false) throws {
                let saved = try natRules(save)
                let expected = rules.chainRules(family: family, masqueradeAll: masqueradeAll, endpointClients: endpointClients)
                #expect(saved.filter { $0.hasPrefix("-A CANARY-POSTROUTING ") } == expected.map { "-A CANARY-POSTROUTING \($0)" })
                let jumps = saved.filter { $0.hasPrefix("-A POSTROUTING") && $0.hasSuffix("-j CANARY-POSTROUTING") }
                #expect(jumps == ["-A POSTROUTING -m comment --comment \"\(MasqueradeRules.jumpComment)\" -j CANARY-POSTROUTING"])
                // The jump comes first, the foreign rules stay.
                #expect(saved.first { $0.hasPrefix("-A POSTROUTING") } == jumps.first)
                #expect(saved.contains(foreign))
                #expect(saved.contains("-A OTHER -j RETURN"))
            }

            #expect(try rules.apply(masqueradeAll: false, families: [family]))
            try check(masqueradeAll: false)
            // As the kernel lists it, the chain is what the agent writes: nothing to write again.
            #expect(try rules.apply(masqueradeAll: false, families: [family]) == false)
            try check(masqueradeAll: false)
            // Someone flushed the chain: written again.
            try shell(iptables, "-w", "-t", "nat", "-F", MasqueradeRules.chain)
            #expect(try rules.apply(masqueradeAll: false, families: [family]))
            try check(masqueradeAll: false)
            // Without br_netfilter: every connection from an endpoint, as iptables lists it.
            #expect(try rules.apply(masqueradeAll: false, endpointClients: true, families: [family]))
            try check(masqueradeAll: false, endpointClients: true)
            #expect(try rules.apply(masqueradeAll: false, endpointClients: true, families: [family]) == false)
            #expect(try rules.apply(masqueradeAll: true, families: [family]))
            try check(masqueradeAll: true)

            try rules.remove()
            let after = try natRules(save)
            #expect(!after.contains { $0.contains("CANARY-POSTROUTING") })
            #expect(after.contains(foreign))
            #expect(after.contains("-A OTHER -j RETURN"))
            try rules.remove()
            #expect(try natRules(save) == after)
            try shell(iptables + "-restore", "-w", "--noflush", input: "*nat\n-D\(foreign.dropFirst(2))\n-F OTHER\n-X OTHER\nCOMMIT\n")
        }
    }

    @Test func appliesReplacesAndRemovesTheChainWithAStandInMatch() throws {
        try NetworkNamespace.run {
            var rules = MasqueradeRules()
            rules.ipvsNATMatch = ["-m", "mark", "--mark", "0x4000/0x4000"]
            rules.hairpinMatch = { _, sourceOnly in ["-m", "mark", "--mark", sourceOnly ? "0x2000/0x2000" : "0x8000/0x8000"] }
            try Self.exercise(rules)
        }
    }

    @Test(.requiresIPVSMatch, .requiresIPSet)
    func appliesReplacesAndRemovesTheRealRules() throws {
        try NetworkNamespace.run {
            let set = HairpinSet()
            for family in [IPAddress.Family.inet, .inet6] { try set.sync(endpoints: [], family: family, rewrite: true) }
            try Self.exercise(MasqueradeRules())
            try set.remove()
        }
    }

    @Test(.requiresIPSet)
    func theHairpinSetIsReplacedUpdatedAndRemoved() throws {
        try NetworkNamespace.run {
            let set = HairpinSet()
            let first: Set<IPAddress> = [IPAddress("10.9.1.2")!, IPAddress("10.9.1.3")!, IPAddress("fd00::2")!]
            #expect(try set.endpoints(.inet) == nil)
            #expect(try set.sync(endpoints: first, family: .inet, rewrite: false))
            #expect(try set.sync(endpoints: first, family: .inet6, rewrite: false))
            #expect(try set.endpoints(.inet) == [IPAddress("10.9.1.2")!, IPAddress("10.9.1.3")!])
            #expect(try set.endpoints(.inet6) == [IPAddress("fd00::2")!])
            // The right size: trusted, not written.
            #expect(try set.sync(endpoints: first, family: .inet, rewrite: false) == false)
            // One change: exactly the entries named; adding one there and deleting one absent are fine.
            try set.update(adding: [IPAddress("10.9.1.4")!, IPAddress("10.9.1.3")!], removing: [IPAddress("10.9.1.2")!, IPAddress("10.9.1.7")!])
            #expect(try set.endpoints(.inet) == [IPAddress("10.9.1.3")!, IPAddress("10.9.1.4")!])
            // Someone deleted an entry: the size tells, and a sync rewrites it whole.
            try shell("ipset", "del", "CANARY-HAIRPIN", "10.9.1.4,10.9.1.4")
            #expect(try set.sync(endpoints: [IPAddress("10.9.1.3")!, IPAddress("10.9.1.4")!], family: .inet, rewrite: false))
            #expect(try set.endpoints(.inet) == [IPAddress("10.9.1.3")!, IPAddress("10.9.1.4")!])
            // The entry matches exactly a packet from the endpoint to itself.
            try shell("ipset", "test", "CANARY-HAIRPIN", "10.9.1.3,10.9.1.3")
            #expect(throws: (any Error).self) { try shell("ipset", "test", "CANARY-HAIRPIN", "10.9.1.3,10.9.1.4") }
            try set.remove()
            #expect(try set.endpoints(.inet) == nil)
            #expect(try set.endpoints(.inet6) == nil)
        }
    }

    @Test(.requiresIPSet)
    func twentyThousandEntriesGoOverNetlinkManyPerDatagram() throws {
        try NetworkNamespace.run {
            let set = HairpinSet()
            #expect(set.entries != nil)
            let many = Set((0..<20_000).map { IPAddress("10.\(100 + $0 / 65_536).\($0 / 256 % 256).\($0 % 256)")! })
            #expect(try set.sync(endpoints: many, family: .inet, rewrite: false))
            #expect(try set.endpoints(.inet) == many)
            // A set that is not there: one error naming it, nothing half done elsewhere.
            let entries = try #require(set.entries)
            #expect(throws: NodeNetworkError.self) {
                try entries.update(set: "CANARY-MISSING", adding: [IPAddress("10.1.1.1")!], removing: [])
            }
            do {
                try entries.update(set: "CANARY-MISSING", adding: [IPAddress("10.1.1.1")!], removing: [])
            } catch {
                #expect("\(error)".contains("CANARY-MISSING") && "\(error)".contains("10.1.1.1"), "\(error)")
            }
            try set.remove()
        }
    }
}

extension String {
    fileprivate func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        var result = ""
        var rest = self[...]
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound] + replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}

/// The rules in action in the VM: a client on the node connects to a virtual address served by
/// IPVS-NAT with an endpoint on another host, and the "clients on this node" rule masquerades it;
/// a connection of the node that is not IPVS's is left alone.
@Suite struct MasqueradeTrafficTests {
    static func packets(of comment: String, in saved: String) -> Int? {
        // iptables-save -c prints "[packets:bytes] -A CHAIN …".
        guard let line = saved.split(separator: "\n").first(where: { $0.contains("--comment \"\(comment)\"") }),
            line.hasPrefix("["), let colon = line.firstIndex(of: ":")
        else { return nil }
        return Int(line[line.index(after: line.startIndex)..<colon])
    }

    /// Starts a TCP connection (its SYN leaves at once) from an unbound socket and closes it.
    static func sendSYN(to address: String, port: UInt16) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw NetworkNamespace.Failure(description: "socket: \(errno)") }
        defer { _ = close(fd) }
        var target = sockaddr_in()
        target.sin_family = sa_family_t(AF_INET)
        target.sin_port = port.bigEndian
        _ = inet_pton(AF_INET, address, &target.sin_addr)
        let result = withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 || errno == EINPROGRESS else { throw NetworkNamespace.Failure(description: "connect: \(errno)") }
        usleep(200_000)
    }

    @Test(.requiresIPVSMatch, .requiresIPSet, .requiresDummyInterfaces, .requiresIPVSSysctls)
    func aClientOnTheNodeIsMasqueradedAndOtherTrafficIsNot() throws {
        try NetworkNamespace.run {
            _ = try Sysctls().ensure(SysctlSetting.ipvsRequired)
            let network = try RouteNetlink()
            try network.ensureDummyInterface(named: "canary0")
            try network.addAddress(IPAddress("10.96.0.10")!, to: "canary0")
            try RouteNetlinkTests.makeVeth()
            try shell("ip", "addr", "add", "10.0.0.1/24", "dev", "v0")
            try shell("ipvsadm", "-A", "-t", "10.96.0.10:80", "-s", "rr")
            try shell("ipvsadm", "-a", "-t", "10.96.0.10:80", "-r", "10.0.0.2:8080", "-m")
            defer { _ = try? shell("ipvsadm", "-C") }
            try HairpinSet().sync(endpoints: [IPAddress("10.0.0.2")!], family: .inet, rewrite: true)
            try MasqueradeRules().apply(masqueradeAll: false, families: [.inet])
            #expect(Self.packets(of: "clients on this node", in: try shell("iptables-save", "-c", "-t", "nat")) == 0)

            // Not IPVS: a plain connection of the node to a remote address.
            try Self.sendSYN(to: "10.0.0.3", port: 8080)
            #expect(Self.packets(of: "clients on this node", in: try shell("iptables-save", "-c", "-t", "nat")) == 0)

            // IPVS-NAT to an endpoint on another host, from the node itself: masqueraded.
            try Self.sendSYN(to: "10.96.0.10", port: 80)
            #expect(Self.packets(of: "clients on this node", in: try shell("iptables-save", "-c", "-t", "nat")) == 1)
            // IPVS made the connection, to the endpoint.
            let connections = try shell("ipvsadm", "-Lnc")
            #expect(connections.contains("10.96.0.10:80") && connections.contains("10.0.0.2:8080"))
        }
    }
}
