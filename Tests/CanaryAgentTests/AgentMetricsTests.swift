import CanaryCore
import IPVS
import MetricsTestKit
import Testing

@testable import CanaryAgent

/// The series rendered at scrape time, and the census that keeps one change's bookkeeping small.
@Suite("Metrics and census")
struct AgentMetricsTests {
    static func stats(connections: UInt64, inBytes: UInt64 = 0, outBytes: UInt64 = 0) -> TrafficStats {
        var stats = TrafficStats()
        stats.connections = connections
        stats.inBytes = inBytes
        stats.outBytes = outBytes
        return stats
    }

    @Test("traffic counters follow the kernel's, continue across a restarted destination, and forget what is gone")
    func trafficCounters() {
        let metrics = AgentMetrics(factory: TestMetrics())
        let web = AgentMetrics.DestinationLabel(service: "web", destination: "10.9.1.2:80", role: "stable")
        let api = AgentMetrics.DestinationLabel(service: "api", destination: "10.9.2.2:80", role: "canary")
        metrics.traffic([(web, Self.stats(connections: 5, inBytes: 100, outBytes: 1000)), (api, Self.stats(connections: 1))])
        metrics.traffic([(web, Self.stats(connections: 7, inBytes: 150, outBytes: 1200))])
        // Deleted and added again: the kernel starts from 0; the series goes on from 7.
        metrics.traffic([(web, Self.stats(connections: 2, inBytes: 10, outBytes: 20))])
        let text = metrics.renderScrapeTimeSeries(shares: [])
        #expect(text.contains(#"canary_agent_destination_connections_total{service="web",destination="10.9.1.2:80",role="stable"} 9"#), "\(text)")
        #expect(text.contains(#"canary_agent_destination_bytes_total{service="web",destination="10.9.1.2:80",role="stable",direction="in"} 160"#))
        #expect(text.contains(#"canary_agent_destination_bytes_total{service="web",destination="10.9.1.2:80",role="stable",direction="out"} 1220"#))
        #expect(!text.contains("10.9.2.2"))
        #expect(text.contains("# TYPE canary_agent_destination_connections_total counter"))
    }

    @Test("above the limit the per-destination series are dropped, and the output says why")
    func destinationSeriesLimit() {
        let metrics = AgentMetrics(factory: TestMetrics(), destinationSeriesLimit: 1)
        let web = AgentMetrics.DestinationLabel(service: "web", destination: "10.9.1.2:80", role: "stable")
        let canary = AgentMetrics.DestinationLabel(service: "web", destination: "10.9.1.9:80", role: "canary")
        metrics.traffic([(web, Self.stats(connections: 5))])
        #expect(metrics.renderScrapeTimeSeries(shares: []).contains("10.9.1.2:80"))
        metrics.traffic([(web, Self.stats(connections: 6)), (canary, Self.stats(connections: 1))])
        let text = metrics.renderScrapeTimeSeries(shares: [])
        #expect(!text.contains("10.9.1.2:80") && !text.contains("10.9.1.9:80"))
        #expect(text.contains("not exported: 2 destinations, more than --destination-metrics-limit 1"), "\(text)")
    }

    @Test("shares render one line per service, with label values escaped")
    func shares() {
        let metrics = AgentMetrics(factory: TestMetrics())
        let text = metrics.renderScrapeTimeSeries(shares: [
            .init(service: "shop/web:http", target: 0.25, effective: 0.2), .init(service: "odd\"name\\x", target: 0, effective: 0),
            .init(service: "evil\r\nfake_metric 1\nmore\rstill", target: 0.5, effective: 0.5),
        ])
        #expect(text.contains(#"canary_agent_canary_share_target{service="shop/web:http"} 0.25"#), "\(text)")
        #expect(text.contains(#"canary_agent_canary_share_effective{service="shop/web:http"} 0.2"#))
        #expect(text.contains(#"canary_agent_canary_share_target{service="odd\"name\\x"} 0.0"#))
        #expect(text.contains("canary_agent_canary_share_target{service=\"evil\u{FFFD}\\nfake_metric 1\\nmore\u{FFFD}still\"} 0.5"), "\(text)")
        // Every line is a comment or NAME{LABELS} VALUE, the name one of the agent's: no label value
        // starts a line of its own (split on CR too, as a reader may).
        let lines = text.unicodeScalars.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).map { String(String.UnicodeScalarView($0)) }
        for line in lines where !line.hasPrefix("#") {
            #expect(line.hasPrefix("canary_agent_"), "\(line)")
            #expect(line.hasSuffix("} 0.25") || line.hasSuffix("} 0.2") || line.hasSuffix("} 0.0") || line.hasSuffix("} 0.5"), "\(line)")
        }
    }

    @Test("netlink operations are counted per operation and result, once per sync")
    func netlinkCounts() throws {
        let factory = TestMetrics()
        let metrics = AgentMetrics(factory: factory)
        metrics.netlinkOperations([
            .init(operation: "add-destination", result: "ok"): 3, .init(operation: "add-destination", result: "destination_exists"): 1,
        ])
        metrics.netlinkOperations([.init(operation: "add-destination", result: "ok"): 2])
        #expect(factory.counterTotal(label: "canary_agent_netlink_operations_total", dimensions: [("operation", "add-destination"), ("result", "ok")]) == 5)
        #expect(factory.counterTotal(label: "canary_agent_netlink_operations_total", dimensions: [("operation", "add-destination"), ("result", "destination_exists")]) == 1)
    }

    static func entry(_ service: String, _ destinations: [(String, ForwardingMethod)]) -> ServiceEntry {
        ServiceEntry(
            service: VirtualService(key: .inet(.tcp, SocketAddress(service)!), scheduler: .weightedRoundRobin),
            destinations: destinations.map { Destination(address: SocketAddress($0.0)!, forwarding: $0.1) })
    }

    @Test("the census counts services and destinations and reports each masqueraded endpoint's first and last use")
    func census() {
        let a = Self.entry("10.96.0.1:80", [("10.9.0.1:80", .masquerade), ("10.9.0.2:80", .masquerade)])
        let b = Self.entry("10.96.0.2:80", [("10.9.0.2:8080", .masquerade), ("10.9.0.3:80", .directRoute)])
        var census = TableCensus()
        #expect(census.update(a.service.key, a) == (added: [IPAddress("10.9.0.1")!, IPAddress("10.9.0.2")!], removed: []))
        // 10.9.0.2 is a's already; 10.9.0.3 is direct routing: not masqueraded.
        #expect(census.update(b.service.key, b) == (added: [], removed: []))
        #expect((census.services, census.destinations) == (2, 4))
        #expect(census.update(a.service.key, nil) == (added: [], removed: [IPAddress("10.9.0.1")!]))
        #expect(census.masqueradedEndpoints == [IPAddress("10.9.0.2")!])
        #expect((census.services, census.destinations) == (1, 2))
        let whole = TableCensus([a.service.key: a, b.service.key: b], owns: { $0 == b.service.key })
        #expect(whole.masqueradedEndpoints == [IPAddress("10.9.0.2")!])
        #expect((whole.services, whole.destinations) == (1, 2))
    }
}
