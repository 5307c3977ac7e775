import CanaryCore
import Foundation
import IPVS
import StaticConfig
import Testing

@Suite("The static configuration file")
struct StaticConfigurationTests {
    static let example = """
        scheduler: wrr
        services:
          - name: web
            address: 10.96.0.10
            port: 80
            protocol: tcp
            scheduler: sh
            stable: [10.9.1.2:80, 10.9.1.3:80]
            canary:
              weight: 10
              endpoints: ["10.9.1.9:80"]
          - name: dns6
            address: fd00::53
            port: 53
            protocol: udp
            persistence-timeout: 300
            stable: ["[fd00:1::2]:53"]
            canary:
              weight: 12.5
              endpoints: ["[fd00:1::9]:53"]
          - name: plain
            address: 10.96.0.11
            port: 8080
            stable: [10.9.2.1:8080]
        """

    @Test("the documented example reads into the desired state the planner needs")
    func example() throws {
        let configuration = try StaticConfiguration(yaml: Self.example, file: "agent.yaml")
        #expect(configuration.defaultScheduler == .weightedRoundRobin)
        #expect(configuration.services.map(\.name) == ["web", "dns6", "plain"])
        let web = configuration.services[0]
        #expect(web.key == .inet(.tcp, SocketAddress("10.96.0.10:80")!))
        #expect(web.scheduler == .sourceHashing)
        #expect(web.stable.map(\.address) == [SocketAddress("10.9.1.2:80")!, SocketAddress("10.9.1.3:80")!])
        #expect(web.stable.allSatisfy { $0.state == .live })
        #expect(web.canary.map(\.address) == [SocketAddress("10.9.1.9:80")!])
        #expect(web.canaryShare == CanaryShare(basisPoints: 1_000))
        let dns = configuration.services[1]
        #expect(dns.key == .inet(.udp, SocketAddress("[fd00::53]:53")!))
        #expect(dns.scheduler == .weightedRoundRobin)
        #expect(dns.persistence == Persistence(timeout: 300))
        #expect(dns.canaryShare == CanaryShare(basisPoints: 1_250))
        let plain = configuration.services[2]
        #expect(plain.canary.isEmpty && plain.canaryShare == .zero)
        #expect(configuration.desiredState.services.count == 3)
    }

    /// Each bad file is rejected whole with one line naming the file, the line and the field.
    @Test(
        "a bad file is one clear error naming file, line and field",
        arguments: [
            ("services:\n  - name: a\n    address: 10.0.0.300\n    port: 80\n    stable: []\n",
             "agent.yaml:3: services[0].address: '10.0.0.300' is not an IPv4 or IPv6 address"),
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 70000\n    stable: []\n",
             "agent.yaml:4: services[0].port: '70000' is not a port (1-65535)"),
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    stable: [10.0.0.2:80]\n    canary:\n      weight: 150\n      endpoints: [10.0.0.3:80]\n",
             "agent.yaml:7: services[0].canary.weight: '150' is not a percentage from 0 to 100 with at most two decimals"),
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    stable: [10.0.0.2:80]\n    canary:\n      weight: 1e3\n      endpoints: []\n",
             "agent.yaml:7: services[0].canary.weight: '1e3' is not a percentage from 0 to 100 with at most two decimals"),
            ("scheduler: lb\nservices: []\n", "agent.yaml:1: scheduler: 'lb' is not a scheduler (sh, rr, wrr or mh)"),
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    wieght: 3\n    stable: []\n",
             "agent.yaml:5: services[0].wieght: unknown field (known: address, backends, canary, name, persistence-timeout, port, protocol, scheduler, stable)"),
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    stable: [\"[fd00::2]:80\"]\n",
             "agent.yaml:5: services[0].stable[0]: [fd00::2]:80 is IPv6 but the service address is IPv4: IPVS NAT cannot cross address families"),
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    protocol: icmp\n    stable: []\n",
             "agent.yaml:5: services[0].protocol: 'icmp' is not tcp, udp or sctp"),
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    stable: [10.0.0.2:80, 10.0.0.2:80]\n",
             "agent.yaml:5: services[0].stable[1]: 10.0.0.2:80 is listed twice"),
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    stable: [10.0.0.2:80]\n  - name: a\n    address: 10.0.0.5\n    port: 80\n    stable: [10.0.0.2:80]\n",
             "agent.yaml:6: services[1].name: 'a' is already the name of services[0]"),
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n", "agent.yaml:2: services[0].stable: missing: give stable (and canary), or backends"),
            ("services: [\n", "agent.yaml:2: invalid YAML: while parsing a flow node: did not find expected node content"),
        ])
    func rejects(yaml: String, expected: String) {
        do {
            _ = try StaticConfiguration(yaml: yaml, file: "agent.yaml")
            Issue.record("accepted a bad file:\n\(yaml)")
        } catch {
            #expect(error.description == expected)
        }
    }

    @Test("an endpoint in both stable and canary is refused")
    func stableAndCanary() {
        let yaml = "services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    stable: [10.0.0.2:80]\n    canary:\n      weight: 5\n      endpoints: [10.0.0.2:80]\n"
        #expect(throws: InputProblem.self) { try StaticConfiguration(yaml: yaml, file: "agent.yaml") }
    }

    @Test("the example the systemd unit ships (systemd/config.example.yaml) is a valid file")
    func shippedExample() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("systemd/config.example.yaml").path
        let configuration = try StaticConfiguration(yaml: try String(contentsOfFile: path, encoding: .utf8), file: path)
        #expect(configuration.services.count == 4)
        #expect(configuration.services.contains { $0.key.family == .inet6 && $0.persistence != nil })
    }
}
