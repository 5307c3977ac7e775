import CanaryCore
import Foundation
import IPVS
import MetricsTestKit
import Testing

@testable import CanaryAgent

/// What people see of a service with more than two groups: the desired-state document, the
/// traffic labels and the per-group metrics.
@Suite("Backend groups: document, labels, metrics")
struct BackendGroupsTests {
    static func socket(_ text: String) -> SocketAddress {
        guard let socket = SocketAddress(text) else { preconditionFailure("a valid address: \(text)") }
        return socket
    }

    /// blue 70 (two pods), green 20 (one pod, shared with canary), canary 10 (the shared pod and a
    /// draining one), from Services of a route.
    static let checkout = DesiredService(
        origin: ServiceOrigin(object: .service(namespace: "shop", name: "checkout"), port: "https"),
        key: .inet(.tcp, socket("10.96.0.12:443")), scheduler: .weightedRoundRobin,
        backends: [
            BackendGroup(
                name: "blue", origin: .service(namespace: "shop", name: "checkout-blue"), weight: 70,
                endpoints: [Endpoint(socket("10.9.3.1:443")), Endpoint(socket("10.9.3.2:443"))]),
            BackendGroup(name: "green", weight: 20, endpoints: [Endpoint(socket("10.9.4.1:443"))]),
            BackendGroup(
                name: "canary", weight: 10,
                endpoints: [Endpoint(socket("10.9.4.1:443")), Endpoint(socket("10.9.5.1:443"), state: .draining)]),
        ],
        unweightedFallback: .refuseNewConnections)

    @Test("the /desired document carries every group, origin, weight and the fallback rule")
    func documentRoundTrip() throws {
        let state = DesiredState(services: [Self.checkout, ReconcilerTests.web])
        let encoded = try JSONEncoder().encode(DesiredStateDocument(state))
        let decoded = try JSONDecoder().decode(DesiredStateDocument.self, from: encoded)
        #expect(try decoded.desiredState() == state)
        // The stable/canary split keeps the older document's fields alone, for older CLIs.
        let web = try #require(decoded.services.first { $0.name == "web" })
        #expect(web.backends == nil && web.canaryBasisPoints == 1000)
        var bad = decoded
        let index = try #require(bad.services.firstIndex { $0.name == "shop/checkout:https" })
        bad.services[index].backends?[1].weight = 1_000_001
        #expect(throws: DesiredStateDocument.DocumentError.self) { try bad.desiredState() }
    }

    @Test("each destination is labelled with its group; a shared one's connections split by what each group asks")
    func trafficLabels() throws {
        let assignment = WeightSolver.solve(Self.checkout)
        let entry = ServiceEntry(
            service: VirtualService(key: Self.checkout.key, scheduler: .weightedRoundRobin),
            destinations: assignment.destinationOrder.map { Destination(address: $0, weight: assignment.weights[$0] ?? 0) })
        let labeling = TrafficLabeling(
            ready: true, ownership: Ownership(services: [Self.checkout.key]), desired: DesiredState(services: [Self.checkout]),
            destinations: 4)
        let (rows, parts) = labeling.rows(of: [entry])
        let roles = Dictionary(uniqueKeysWithValues: rows.map { ($0.label.destination, $0.label.role) })
        #expect(roles == ["10.9.3.1:443": "blue", "10.9.3.2:443": "blue", "10.9.4.1:443": "green+canary", "10.9.5.1:443": "canary"])
        // The shared pod: green asks 20 % of its one live pod, canary 10 % of its one: 2/3 and 1/3.
        let shared = try #require(rows.first { $0.label.destination == "10.9.4.1:443" }).label
        let split = try #require(parts[shared])
        #expect(split.map(\.backend) == ["green", "canary"])
        #expect(abs(split[0].fraction - 2.0 / 3) < 1e-12 && abs(split[1].fraction - 1.0 / 3) < 1e-12)
    }

    @Test("per-group series: weight, target, effective, observed (from counted connections), live endpoints, refusal")
    func groupSeries() throws {
        let metrics = AgentMetrics(factory: TestMetrics())
        let labels = ["10.9.3.1:443", "10.9.3.2:443", "10.9.4.1:443"].map {
            AgentMetrics.DestinationLabel(service: "shop/checkout:https", destination: $0, role: "")
        }
        let parts: [AgentMetrics.DestinationLabel: [AgentMetrics.GroupPart]] = [
            labels[0]: [.init(backend: "blue", fraction: 1)], labels[1]: [.init(backend: "blue", fraction: 1)],
            labels[2]: [.init(backend: "green", fraction: 2.0 / 3), .init(backend: "canary", fraction: 1.0 / 3)],
        ]
        func stats(_ connections: UInt64) -> TrafficStats {
            var stats = TrafficStats()
            stats.connections = connections
            return stats
        }
        metrics.traffic(zip(labels, [stats(100), stats(100), stats(30)]).map { ($0, $1) }, groupParts: parts)
        // Since the first sample: blue 70 + 70, green 40, canary 20 of 200 new connections.
        metrics.traffic(zip(labels, [stats(170), stats(170), stats(90)]).map { ($0, $1) }, groupParts: parts)
        let assignment = WeightSolver.solve(Self.checkout)
        let text = metrics.renderScrapeTimeSeries(shares: [
            .init(
                service: "shop/checkout:https", target: 0.3, effective: assignment.effectiveCanaryShare,
                groups: assignment.groups, refuses: false)
        ])
        let label = #"service="shop/checkout:https",backend="#
        #expect(text.contains("canary_agent_backend_weight{\(label)\"blue\"} 70"), "\(text)")
        #expect(text.contains("canary_agent_backend_share_target{\(label)\"green\"} 0.2"))
        #expect(text.contains("canary_agent_backend_share_observed{\(label)\"blue\"} 0.7"), "\(text)")
        #expect(text.contains("canary_agent_backend_share_observed{\(label)\"canary\"} 0.1"), "\(text)")
        #expect(text.contains("canary_agent_backend_live_endpoints{\(label)\"canary\"} 1"))
        #expect(text.contains("canary_agent_backend_connections_total{\(label)\"blue\"} 340"), "\(text)")
        #expect(text.contains(#"canary_agent_service_refusing_new_connections{service="shop/checkout:https"} 0"#))
        #expect(!text.contains(#"canary_agent_canary_share_target{service="shop/checkout:https"}"#), "three groups: no canary series")
        let effective = try #require(assignment.groups.first { $0.name == "blue" }).effective
        #expect(text.contains("canary_agent_backend_share_effective{\(label)\"blue\"} \(effective)"))
    }
}
