import CanaryCore
import Foundation
import IPVS
import IPVSTestSupport
import Logging
import MetricsTestKit
import Prometheus
import ServiceLifecycle
import StaticConfig
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@testable import CanaryAgent

/// The whole daemon as `canary-agent run --config FILE` starts it (`Agent`: the file source, the
/// reconciler's loop, the HTTP endpoints), on the in-memory kernel and node.
@Suite("Agent: the daemon's service group", .timeLimit(.minutes(1)))
struct AgentTests {
    @Test("a static file is programmed, a change of it follows, and a graceful shutdown leaves the table")
    func staticAgentEndToEnd() async throws {
        let (directory, file) = try EndpointsAndSourcesTests.temporaryConfigurationFile()
        defer { try? FileManager.default.removeItem(at: directory) }
        func write(weight: String) throws {
            try EndpointsAndSourcesTests.writeWebService(to: file, stable: ["10.9.1.2:80", "10.9.1.3:80", "10.9.1.4:80"], weight: weight)
        }
        try write(weight: "10")

        let kernel = InMemoryIPVS()
        let node = InMemoryNodePlumbing()
        let registry = PrometheusCollectorRegistry()
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let logger = Logger(label: "test")
        let agent = Agent(
            kernel: kernel, scrapeKernel: kernel, node: node,
            source: StaticFileSource(path: file.path, pollInterval: .milliseconds(20), logger: logger),
            settings: Reconciler.Settings(), metrics: AgentMetrics(factory: PrometheusMetricsFactory(registry: registry)),
            registry: registry, listen: ("127.0.0.1", 0), logger: logger, onListening: { portContinuation.yield($0) })
        let group = agent.serviceGroup(gracefulShutdownSignals: [])
        let running = Task { try await group.run() }
        defer { running.cancel() }
        var iterator = ports.makeAsyncIterator()
        let port = try #require(await iterator.next())

        let key = ServiceKey.inet(.tcp, SocketAddress("10.96.0.10:80")!)
        // 3 stable at 30 % each and the canary at 10 %: 3 : 3 : 3 : 1.
        func weights() throws -> [String: Int32] {
            let entry = try kernel.dumpTable().first { $0.service.key == key }
            return Dictionary(uniqueKeysWithValues: (entry?.destinations ?? []).map { ("\($0.address)", $0.weight) })
        }
        try await ReconcilerTests().waitUntil { try weights() == ["10.9.1.2:80": 3, "10.9.1.3:80": 3, "10.9.1.4:80": 3, "10.9.1.9:80": 1] }
        #expect(node.addresses.contains(IPAddress("10.96.0.10")!))
        try await ReconcilerTests().waitUntil { (try? await EndpointsAndSourcesTests.get("http://127.0.0.1:\(port)/readyz").0) == 200 }

        // 40 %: 20 % per stable endpoint, 40 % for the canary: 1 : 1 : 1 : 2.
        try write(weight: "40")
        try await ReconcilerTests().waitUntil { try weights() == ["10.9.1.2:80": 1, "10.9.1.3:80": 1, "10.9.1.4:80": 1, "10.9.1.9:80": 2] }
        let status = try await EndpointsAndSourcesTests.get("http://127.0.0.1:\(port)/status")
        #expect(status.0 == 200 && status.1.contains("\"staticService\"") == false && status.1.contains("StaticService"), "\(status.1)")

        // SIGTERM's path: every service ends (a kept-alive HTTP connection included: URLSession keeps
        // the one above open), the kernel keeps what was programmed.
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(try weights() == ["10.9.1.2:80": 1, "10.9.1.3:80": 1, "10.9.1.4:80": 1, "10.9.1.9:80": 2])
        #expect(node.addresses.contains(IPAddress("10.96.0.10")!))
    }
}
