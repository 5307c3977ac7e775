import CanaryCore
import Foundation
import IPVS
import IPVSTestSupport
import Logging
import Prometheus
import ServiceLifecycle
import StaticConfig
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@testable import CanaryAgent

/// The HTTP endpoints over a real socket, the desired-state document, and the static file source.
@Suite("HTTP endpoints and sources")
struct EndpointsAndSourcesTests {
    /// GETs a URL: the status code and the body.
    static func get(_ url: String) async throws -> (Int, String) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: url)!)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    @Test("/healthz, /readyz before and after the first sync, /metrics, /status and /desired")
    func endpoints() async throws {
        let registry = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory(registry: registry)
        let kernel = InMemoryIPVS()
        let metricsStore = AgentMetrics(factory: factory)
        let reconciler = Reconciler(
            kernel: kernel, node: InMemoryNodePlumbing(), metrics: metricsStore, sourceSummary: "test", logger: Logger(label: "test"))
        let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
        let endpoints = HTTPEndpoints(
            host: "127.0.0.1", port: 0, reconciler: reconciler, registry: registry,
            trafficSampler: TrafficSampler(kernel: kernel, reconciler: reconciler, metrics: metricsStore),
            logger: Logger(label: "test"), onListening: { portContinuation.yield($0) })
        let server = Task { try await endpoints.run() }
        defer { server.cancel() }
        var ports = portStream.makeAsyncIterator()
        let port = try #require(await ports.next())
        let base = "http://127.0.0.1:\(port)"

        #expect(try await Self.get(base + "/healthz") == (200, "ok\n"))
        #expect(try await Self.get(base + "/readyz").0 == 503)
        #expect(try await Self.get(base + "/desired").0 == 503)
        #expect(try await Self.get(base + "/nope").0 == 404)

        await reconciler.submit(.changed(.replaceAll(DesiredState(services: [ReconcilerTests.web])), problems: [], receivedAt: .now))
        await reconciler.fullSync()
        #expect(try await Self.get(base + "/readyz") == (200, "ready\n"))

        let (metricsStatus, metrics) = try await Self.get(base + "/metrics")
        #expect(metricsStatus == 200)
        #expect(metrics.contains(#"canary_agent_canary_share_target{service="web"} 0.1"#), "\(metrics)")
        #expect(metrics.contains(#"canary_agent_destination_connections_total{service="web",destination="10.9.1.9:80",role="canary"} 0"#), "\(metrics)")
        #expect(metrics.contains("canary_agent_ready 1"), "\(metrics)")

        let (_, statusBody) = try await Self.get(base + "/status")
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let status = try decoder.decode(AgentStatus.self, from: Data(statusBody.utf8))
        #expect(status.ready)
        #expect(status.services.map(\.name) == ["web"])

        let (_, desiredBody) = try await Self.get(base + "/desired")
        let document = try JSONDecoder().decode(DesiredStateDocument.self, from: Data(desiredBody.utf8))
        #expect(try document.desiredState() == DesiredState(services: [ReconcilerTests.web]))
    }

    @Test("the desired-state document names the field that does not parse")
    func documentErrors() throws {
        // A round trip keeps every field, a Kubernetes service's origin included.
        var fromCluster = ReconcilerTests.api
        fromCluster.origin = ServiceOrigin(object: .service(namespace: "shop", name: "api"), port: "http")
        let state = DesiredState(services: [ReconcilerTests.web, fromCluster])
        let encoded = try JSONEncoder().encode(DesiredStateDocument(state))
        #expect(try JSONDecoder().decode(DesiredStateDocument.self, from: encoded).desiredState() == state)
        var document = DesiredStateDocument(DesiredState(services: [ReconcilerTests.web, ReconcilerTests.api]))
        document.services[1].canary[0].address = "10.9.2.9"
        #expect(throws: DesiredStateDocument.DocumentError.self) { try document.desiredState() }
        do {
            _ = try document.desiredState()
        } catch {
            #expect(error.field == "services[1].canary[0]")
        }
    }

    /// A fresh directory with the path of a `config.yaml` in it (not written yet).
    static func temporaryConfigurationFile() throws -> (directory: URL, file: URL) {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("canary-static-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return (directory, directory.appendingPathComponent("config.yaml"))
    }

    /// A static file with one service `web` (the default scheduler, wrr) on 10.96.0.10:80 and the canary 10.9.1.9:80 at `weight` %.
    static func writeWebService(to file: URL, stable: [String], weight: String) throws {
        try """
        services:
          - name: web
            address: 10.96.0.10
            port: 80
            stable: [\(stable.joined(separator: ", "))]
            canary:
              weight: \(weight)
              endpoints: [10.9.1.9:80]
        """.write(to: file, atomically: true, encoding: .utf8)
    }

    @Test("the static file: read at start, again when it changes, a bad file rejected with its line and field")
    func staticFileSource() async throws {
        let (directory, file) = try Self.temporaryConfigurationFile()
        defer { try? FileManager.default.removeItem(at: directory) }
        func write(weight: String) throws { try Self.writeWebService(to: file, stable: ["10.9.1.2:80"], weight: weight) }
        try write(weight: "10")
        let source = StaticFileSource(path: file.path, pollInterval: .milliseconds(20), logger: Logger(label: "test"))
        let (events, continuation) = AsyncStream<SourceEvent>.makeStream()
        let running = Task { try await source.run { continuation.yield($0) } }
        defer { running.cancel() }
        var iterator = events.makeAsyncIterator()

        guard case .changed(.replaceAll(let first), _, _) = try #require(await iterator.next()) else {
            Issue.record("the first event is not a desired state")
            return
        }
        #expect(first.services.values.first?.canaryShare == CanaryShare(basisPoints: 1000))

        try write(weight: "25")
        guard case .changed(.replaceAll(let second), _, _) = try #require(await iterator.next()) else {
            Issue.record("the change is not a desired state")
            return
        }
        #expect(second.services.values.first?.canaryShare == CanaryShare(basisPoints: 2500))

        try write(weight: "150")
        guard case .rejected(let problem) = try #require(await iterator.next()) else {
            Issue.record("a bad file is not rejected")
            return
        }
        #expect(problem.object == InputObject(kind: .file, name: file.path))
        #expect(problem.line == 7)
        #expect(problem.field == "services[0].canary.weight")
    }
}
