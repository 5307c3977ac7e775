import CanaryCore
import Foundation
import IPVS
import IPVSNetlink
import Testing

/// The `canary-agent` executable that `swift build --build-tests` puts beside the test bundle.
private let agentPath = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    .appendingPathComponent("canary-agent").path

@Suite("canary-agent's CLI against the real kernel", .requiresIPVS, .serialized)
struct CLIKernelTests {
    static let config = """
        scheduler: wrr
        services:
          - name: web
            address: 10.96.9.1
            port: 80
            stable: [10.9.9.2:80, 10.9.9.3:80, 10.9.9.4:80]
            canary:
              weight: 20
              endpoints: [10.9.9.9:80]
        """

    @Test("plan shows what a sync would do, list shows the kernel's table, explain the weights")
    func planListExplain() throws {
        try KernelTable.exclusive { ipvs in
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("canary-cli-\(getpid()).yaml")
            try Self.config.write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }

            // Against an empty table: the service and its four destinations are to be added.
            let plan = try run(agentPath, ["plan", "--config", file.path]).split(separator: "\n").map(String.init)
            #expect(plan.first == "add service TCP 10.96.9.1:80 scheduler wrr", "\(plan)")
            #expect(plan.filter { $0.hasPrefix("add destination") }.count == 4, "\(plan)")
            #expect(plan.contains("add destination 10.9.9.9:80 to TCP 10.96.9.1:80 weight 3"), "\(plan)")
            #expect(try ipvs.dumpTable().isEmpty, "plan must not change the kernel")

            // Once the kernel holds the desired table, there is nothing to change.
            let web = DesiredService(
                name: "web", key: .inet(.tcp, SocketAddress("10.96.9.1:80")!), scheduler: .weightedRoundRobin,
                stable: ["10.9.9.2:80", "10.9.9.3:80", "10.9.9.4:80"].map { Endpoint(SocketAddress($0)!) },
                canary: [Endpoint(SocketAddress("10.9.9.9:80")!)], canaryShare: CanaryShare(basisPoints: 2_000)!)
            let desired = DesiredTable(DesiredState(services: [web]))
            var drains = DrainTracker()
            let operations = Planner(ownership: Ownership(services: [web.key]), drainTimeout: .seconds(60))
                .plan(desired: desired, current: [:], drains: &drains, now: .now).operations
            for result in try ipvs.apply(operations) { try result.get() }
            #expect(try run(agentPath, ["plan", "--config", file.path]) == "nothing to change: the kernel holds the desired table\n")

            // list --output json reads the kernel's table.
            let listing = try run(agentPath, ["list", "--output", "json"])
            let rows = try JSONSerialization.jsonObject(with: Data(listing.utf8)) as? [[String: Any]]
            let service = try #require(rows?.first)
            #expect(service["service"] as? String == "TCP 10.96.9.1:80")
            let weights = (service["destinations"] as? [[String: Any]])?.compactMap { $0["weight"] as? Int }.sorted()
            #expect(weights == [3, 4, 4, 4])

            // explain says how the weights came about.
            let explanation = try run(agentPath, ["explain", "web", "--config", file.path])
            #expect(explanation.contains("canary share: target 20%, effective 20.00%, wrr cycle 15 connections"), "\(explanation)")
            #expect(explanation.contains("canary  10.9.9.9:80 weight 3"), "\(explanation)")

            // An unknown service is one line and a non-zero exit.
            #expect(throws: CommandFailure.self) { try run(agentPath, ["explain", "nope", "--config", file.path]) }
        }
    }
}
