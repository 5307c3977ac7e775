import CanaryCore
import IPVS
import StaticConfig
import Testing

@Suite("The static file's backends: form")
struct StaticConfigurationBackendsTests {
    static let example = """
        services:
          - name: checkout
            address: 10.96.0.12
            port: 443
            scheduler: sh
            backends:
              - name: blue
                weight: 70
                endpoints: [10.9.3.1:443]
              - name: green
                weight: 20
                endpoints: [10.9.4.1:443, 10.9.4.2:443]
              - name: canary
                endpoints: [10.9.5.1:443]
              - name: old
                weight: 0
                endpoints: []
        """

    @Test("the documented form reads into ordered weighted groups with Gateway API's rules")
    func example() throws {
        let configuration = try StaticConfiguration(yaml: Self.example, file: "agent.yaml")
        let service = try #require(configuration.services.first)
        #expect(service.backends.map(\.name) == ["blue", "green", "canary", "old"])
        #expect(service.backends.map(\.weight) == [70, 20, 1, 0], "weight defaults to 1, as a backendRef's")
        #expect(service.backends.map { $0.endpoints.map(\.address.description) } == [
            ["10.9.3.1:443"], ["10.9.4.1:443", "10.9.4.2:443"], ["10.9.5.1:443"], [],
        ])
        #expect(service.unweightedFallback == .refuseNewConnections)
        #expect(service.scheduler == .sourceHashing)
    }

    @Test("the stable/canary form keeps its meaning: two groups, and the split's fallback")
    func stableAndCanaryUnchanged() throws {
        let yaml = """
            services:
              - name: web
                address: 10.96.0.10
                port: 80
                stable: [10.9.1.2:80]
                canary:
                  weight: 12.5
                  endpoints: [10.9.1.9:80]
            """
        let service = try #require(try StaticConfiguration(yaml: yaml, file: "agent.yaml").services.first)
        #expect(service.backends.map(\.name) == ["stable", "canary"])
        #expect(service.backends.map(\.weight) == [8_750, 1_250])
        #expect(service.unweightedFallback == .useGroupsOfWeightZero)
        #expect(service.canaryShare == CanaryShare(basisPoints: 1_250))
    }

    @Test("an endpoint in two backends is allowed: one destination with both shares")
    func sharedEndpoint() throws {
        let yaml = """
            services:
              - name: argo
                address: 10.96.0.13
                port: 80
                scheduler: wrr
                backends:
                  - {name: stable, weight: 90, endpoints: [10.9.6.1:80, 10.9.6.2:80]}
                  - {name: canary, weight: 10, endpoints: [10.9.6.2:80]}
            """
        let service = try #require(try StaticConfiguration(yaml: yaml, file: "agent.yaml").services.first)
        let assignment = WeightSolver.solve(service)
        #expect(assignment.destinationOrder.count == 2)
        #expect(abs(assignment.groups[0].effective - 0.9) < 0.0001 + 1e-9)
    }

    static let head = "services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n"

    @Test(
        "every bad value is one line: file:line: field: message",
        arguments: [
            (head + "    backends: []\n", "agent.yaml:5: services[0].backends: must be a list of 1 to 16 backends (name, weight, endpoints)"),
            (head + "    backends:\n      - name: x\n        weight: 1000001\n        endpoints: []\n",
             "agent.yaml:7: services[0].backends[0].weight: '1000001' is not a weight (0-1000000)"),
            (head + "    backends:\n      - name: x\n        weight: -1\n        endpoints: []\n",
             "agent.yaml:7: services[0].backends[0].weight: '-1' is not a weight: write it in decimal digits only (no sign, prefix, leading zero, '_' or ':'), 0-1000000"),
            (head + "    backends:\n      - name: x\n        weight: \"5\"\n        endpoints: []\n",
             "agent.yaml:7: services[0].backends[0].weight: '5' is quoted: write the weight as a number without quotes"),
            (head + "    backends:\n      - name: x\n        endpoints: []\n      - name: x\n        endpoints: []\n",
             "agent.yaml:8: services[0].backends[1].name: 'x' is already the name of services[0].backends[0]"),
            (head + "    backends:\n      - weight: 3\n        endpoints: []\n", "agent.yaml:6: services[0].backends[0].name: missing"),
            (head + "    backends:\n      - name: x\n", "agent.yaml:6: services[0].backends[0].endpoints: missing"),
            (head + "    backends:\n      - name: x\n        wieght: 3\n        endpoints: []\n",
             "agent.yaml:7: services[0].backends[0].wieght: unknown field (known: endpoints, name, weight)"),
            (head + "    backends:\n      - name: x\n        endpoints: [10.0.0.1:8080]\n",
             "agent.yaml:7: services[0].backends[0].endpoints[0]: 10.0.0.1:8080 is on the service's own address 10.0.0.1: an endpoint must be another address"),
            (head + "    stable: []\n    backends:\n      - name: x\n        endpoints: []\n",
             "agent.yaml:5: services[0].stable: give either stable (and canary) or backends, not both"),
            (head + "    backends:\n" + String(repeating: "      - {name: n, endpoints: []}\n", count: 1)
                + (1...16).map { "      - {name: n\($0), endpoints: []}\n" }.joined(),
             "agent.yaml:6: services[0].backends: 17 backends: at most 16, as in a Gateway API rule"),
        ])
    func rejects(yaml: String, expected: String) {
        do {
            _ = try StaticConfiguration(yaml: yaml, file: "agent.yaml")
            Issue.record("accepted a bad file:\n\(yaml)")
        } catch {
            #expect(error.description == expected)
            #expect(!error.description.contains("\n"))
        }
    }
}
