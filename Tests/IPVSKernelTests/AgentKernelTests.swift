import Foundation
import IPVS
import IPVSNetlink
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The `canary-agent` executable that `swift build --build-tests` puts beside the test bundle.
let agentPath = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    .appendingPathComponent("canary-agent").path

/// `canary-agent run --config FILE` and every CLI command, against the real kernel: what
/// `ipvsadm -Sn` shows, reload on change and on SIGHUP, SIGTERM leaving the table, a restart adopting
/// it without a change, and `cleanup` leaving nothing behind.
@Suite("canary-agent run and its CLI against the real kernel", .requiresIPVS, .serialized)
struct AgentKernelTests {
    static let interface = "canarytest0"

    static func config(weight: String, scheduler: String = "wrr") -> String {
        """
        scheduler: \(scheduler)
        services:
          - name: web
            address: 10.96.9.1
            port: 80
            stable: [10.9.9.2:80, 10.9.9.3:80, 10.9.9.4:80]
            canary:
              weight: \(weight)
              endpoints: [10.9.9.9:80]
          - name: dns
            address: 10.96.9.2
            port: 53
            protocol: udp
            stable: [10.9.9.2:53]
        """
    }

    /// A running agent, stopped (SIGTERM) when the test is done with it.
    final class Agent {
        let process = Process()
        let log: URL
        let port: Int

        convenience init(config: String, port: Int) throws {
            try self.init(arguments: ["--config", config], port: port)
        }

        init(arguments: [String], port: Int) throws {
            self.port = port
            log = FileManager.default.temporaryDirectory.appendingPathComponent("canary-agent-\(getpid())-\(port).log")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.executableURL = URL(fileURLWithPath: agentPath)
            process.arguments = ["run"] + arguments + [
                "--interface", AgentKernelTests.interface, "--listen", "127.0.0.1:\(port)",
                "--drift-check-interval", "2", "--log-level", "debug",
            ]
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
        }

        var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        func cli(_ arguments: [String]) throws -> String {
            try run(agentPath, arguments + ["--agent", "127.0.0.1:\(port)"])
        }

        /// `status --output json`, whatever its exit status (2 when the agent reports an error).
        func status() throws -> [String: Any] {
            let text: String
            do {
                text = try cli(["status", "--output", "json"])
            } catch let failure as CommandFailure where failure.status == 2 {
                text = failure.stdout
            }
            return try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        }

        /// Stops it the way systemd and the kubelet do, and waits for it (30 s at most: then it is
        /// killed, the test fails and its log is shown).
        func terminate() -> Int32 {
            process.terminate()
            let deadline = Date().addingTimeInterval(30)
            while process.isRunning && Date() < deadline { usleep(50_000) }
            if process.isRunning {
                Issue.record("the agent did not stop within 30 s of SIGTERM:\n\(output)")
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                return -1
            }
            if process.terminationStatus != 0 { Issue.record("the agent exited \(process.terminationStatus):\n\(output)") }
            return process.terminationStatus
        }

        deinit {
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
            }
            try? FileManager.default.removeItem(at: log)
        }
    }

    /// `ipvsadm -Sn`, sorted (the kernel lists services in hash order).
    static func saved() throws -> [String] {
        try run("/usr/sbin/ipvsadm", ["-Sn"]).split(separator: "\n").map(String.init).sorted()
    }

    static func addresses() throws -> String {
        (try? run("/usr/sbin/ip", ["-o", "addr", "show", "dev", interface])) ?? ""
    }

    /// Polls until `condition` holds; fails the test with `what` after 60 s (the VM is slow).
    static func eventually(_ what: String, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if (try? condition()) == true { return }
            usleep(100_000)
        }
        Issue.record("not within 60 s: \(what)")
        throw CommandFailure(command: what, status: -1, stderr: "timed out")
    }

    @Test("run programs the table, the CLI reads it, a change and a SIGHUP take effect, SIGTERM leaves it, a restart adopts it, cleanup removes it")
    func daemonLifecycle() throws {
        try KernelTable.exclusive { ipvs in
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("canary-agent-kernel-\(getpid())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let config = directory.appendingPathComponent("config.yaml")
            try Self.config(weight: "20").write(to: config, atomically: true, encoding: .utf8)
            // Someone else's service: the agent must never touch it.
            _ = try run("/usr/sbin/ipvsadm", ["-A", "-t", "192.168.77.1:8080", "-s", "rr"])
            _ = try run("/usr/sbin/ipvsadm", ["-a", "-t", "192.168.77.1:8080", "-r", "192.168.77.2:8080", "-m", "-w", "5"])
            let foreign = try Self.saved().filter { $0.contains("192.168.77.") }
            defer { _ = try? run(agentPath, ["cleanup", "--interface", Self.interface]) }

            // 0. Before the agent: plan from the file shows the adds and changes nothing; errors are one line.
            let plan = try run(agentPath, ["plan", "--config", config.path, "--interface", Self.interface])
            #expect(plan.split(separator: "\n").first == "add service TCP 10.96.9.1:80 scheduler wrr", "\(plan)")
            #expect(plan.contains("add destination 10.9.9.9:80 to TCP 10.96.9.1:80 weight 3"), "\(plan)")
            #expect(try Self.saved() == foreign.sorted(), "plan must not change the kernel")
            #expect(throws: CommandFailure.self) { try run(agentPath, ["explain", "nope", "--config", config.path]) }
            #expect(throws: CommandFailure.self) { try run(agentPath, ["status", "--agent", "127.0.0.1:1"]) }

            // 1. run: the table, the addresses, ready.
            var agent = try Agent(config: config.path, port: 19109)
            try Self.eventually("the agent is ready") { try agent.status()["ready"] as? Bool == true }
            let expected = [
                "-A -t 10.96.9.1:80 -s wrr",
                "-a -t 10.96.9.1:80 -r 10.9.9.2:80 -m -w 4",
                "-a -t 10.96.9.1:80 -r 10.9.9.3:80 -m -w 4",
                "-a -t 10.96.9.1:80 -r 10.9.9.4:80 -m -w 4",
                "-a -t 10.96.9.1:80 -r 10.9.9.9:80 -m -w 3",
                "-A -u 10.96.9.2:53 -s wrr",
                "-a -u 10.96.9.2:53 -r 10.9.9.2:53 -m -w 1",
            ]
            #expect(try Self.saved() == (expected + foreign).sorted(), "\(agent.output)")
            #expect(try Self.addresses().contains("10.96.9.1/32"))
            #expect(try Self.addresses().contains("10.96.9.2/32"))

            // 2. The CLI on it.
            let status = try agent.cli(["status"])
            #expect(status.contains("ready:   yes"), "\(status)")
            #expect(status.contains("web  TCP 10.96.9.1:80  wrr  canary 20.00% (effective 20.00%)"), "\(status)")
            let listing = try agent.cli(["list"])
            #expect(listing.contains("[web: canary target 20.00%, effective 20.00%"), "\(listing)")
            #expect(listing.split(separator: "\n").contains { $0.contains("10.9.9.9:80") && $0.hasSuffix(" canary") }, "\(listing)")
            #expect(listing.split(separator: "\n").contains { $0.contains("10.9.9.2:80") && $0.hasSuffix(" stable") }, "\(listing)")
            #expect(try agent.cli(["plan", "--interface", Self.interface]) == "nothing to change: the kernel holds the desired table\n")
            let explanation = try agent.cli(["explain", "web"])
            #expect(explanation.contains("wrr cycle 15 connections"), "\(explanation)")
            let metrics = try run("/usr/bin/curl", ["-sf", "http://127.0.0.1:19109/metrics"])
            #expect(metrics.contains("canary_agent_canary_share_target{service=\"web\"} 0.2"), "\(metrics)")
            #expect(metrics.contains("canary_agent_netlink_operations_total{operation=\"add-service\",result=\"ok\"} 2"), "\(metrics)")
            #expect(try run("/usr/bin/curl", ["-sf", "http://127.0.0.1:19109/readyz"]) == "ready\n")
            let info = try run(agentPath, ["info", "--output", "json"])
            #expect(info.contains("\"connectionTableSize\""), "\(info)")

            // 3. A changed file takes effect by itself; a bad one is rejected whole and the table kept.
            try Self.config(weight: "50").write(to: config, atomically: true, encoding: .utf8)
            try Self.eventually("the weight change reaches the kernel") {
                try Self.saved().contains("-a -t 10.96.9.1:80 -r 10.9.9.9:80 -m -w 3") && Self.saved().contains("-a -t 10.96.9.1:80 -r 10.9.9.2:80 -m -w 1")
            }
            let goodTable = try Self.saved()
            try "services:\n  - name: web\n    port: 99999\n".write(to: config, atomically: true, encoding: .utf8)
            try Self.eventually("the bad file is reported") { (try agent.status()["sourceError"] as? [String: Any]) != nil }
            #expect(try Self.saved() == goodTable)
            #expect(agent.output.contains("config.yaml"), "the rejection names the file")

            // 4. SIGHUP re-reads the file (written in place, keeping its time stamp, so only SIGHUP tells).
            let stamp = try FileManager.default.attributesOfItem(atPath: config.path)[.modificationDate] as? Date
            try Self.config(weight: "50", scheduler: "sh").write(to: config, atomically: false, encoding: .utf8)
            if let stamp { try FileManager.default.setAttributes([.modificationDate: stamp], ofItemAtPath: config.path) }
            kill(agent.process.processIdentifier, SIGHUP)
            try Self.eventually("SIGHUP: the scheduler becomes sh") { try Self.saved().contains { $0.hasPrefix("-A -t 10.96.9.1:80 -s sh") } }
            let shTable = try Self.saved()

            // 5. SIGTERM: the agent exits 0 and the table, the addresses stay.
            #expect(agent.terminate() == 0, "\(agent.output)")
            #expect(try Self.saved() == shTable)
            #expect(try Self.addresses().contains("10.96.9.1/32"))

            // 6. A restart adopts the table: no operation at all.
            agent = try Agent(config: config.path, port: 19110)
            try Self.eventually("the restarted agent is ready") { try agent.status()["ready"] as? Bool == true }
            let fullSync = try #require(try agent.status()["lastFullSync"] as? [String: Any])
            #expect(fullSync["operations"] as? Int == 0, "\(fullSync)")
            #expect(try Self.saved() == shTable)

            // 7. Drift: a service deleted by hand is back within the drift period; the foreign one is untouched.
            _ = try run("/usr/sbin/ipvsadm", ["-D", "-u", "10.96.9.2:53"])
            try Self.eventually("the deleted service is back") { try Self.saved() == shTable }
            #expect(agent.terminate() == 0)

            // 8. cleanup: the agent's services, addresses and interface go; the foreign service stays.
            _ = try run(agentPath, ["cleanup", "--interface", Self.interface])
            #expect(try Self.saved() == foreign)
            #expect(try Self.addresses().isEmpty)
            _ = ipvs
        }
    }
    @Test("run and cleanup refuse an interface that is not the agent's dummy, and touch nothing on it")
    func refusesAnInterfaceThatIsNotADummy() throws {
        try KernelTable.exclusive { ipvs in
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("canary-agent-kind-\(getpid())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let config = directory.appendingPathComponent("config.yaml")
            try Self.config(weight: "20").write(to: config, atomically: true, encoding: .utf8)
            // A real interface (a veth, as eth0 would be) with the node's address and someone's service on it.
            _ = try? run("/usr/sbin/ip", ["link", "del", "cnyveth0"])
            _ = try run("/usr/sbin/ip", ["link", "add", "cnyveth0", "type", "veth", "peer", "name", "cnyveth1"])
            defer { _ = try? run("/usr/sbin/ip", ["link", "del", "cnyveth0"]) }
            _ = try run("/usr/sbin/ip", ["addr", "add", "10.96.9.50/24", "dev", "cnyveth0"])
            _ = try run("/usr/sbin/ipvsadm", ["-A", "-t", "10.96.9.50:80", "-s", "rr"])
            _ = try run("/usr/sbin/ipvsadm", ["-a", "-t", "10.96.9.50:80", "-r", "10.96.9.51:80", "-m"])
            defer { _ = try? run("/usr/sbin/ipvsadm", ["-D", "-t", "10.96.9.50:80"]) }
            let before = try Self.saved()

            for arguments in [
                ["run", "--config", config.path, "--interface", "cnyveth0", "--listen", "127.0.0.1:19111"],
                ["cleanup", "--interface", "cnyveth0"],
            ] {
                do {
                    _ = try run("/usr/bin/timeout", ["60", agentPath] + arguments)
                    Issue.record("\(arguments[0]) accepted the veth cnyveth0 as its interface")
                } catch let failure as CommandFailure {
                    #expect(failure.status != 124, "\(arguments[0]) did not exit by itself")
                    let lines = failure.stderr.split(separator: "\n").filter { !$0.isEmpty }
                    #expect(
                        lines.contains { $0.contains("interface cnyveth0: exists but is of kind veth, not dummy") },
                        "\(failure.stderr)")
                }
            }
            #expect(try Self.saved() == before, "nothing on the veth's address was touched")
            #expect(try run("/usr/sbin/ip", ["-o", "addr", "show", "dev", "cnyveth0"]).contains("10.96.9.50/24"))
            _ = ipvs
        }
    }
}
