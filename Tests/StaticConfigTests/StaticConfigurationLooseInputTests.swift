import CanaryCore
import Foundation
import IPVS
import StaticConfig
import Testing

/// "Loose input": spellings YAML 1.1 or a lenient reader would turn into something the writer of the
/// file did not see (`1:20` is port 80), addresses no service can live on, endpoints that loop back
/// into their own service, and names that forge lines in /metrics. Each is one error line naming the field.
@Suite("The static configuration file, strict input")
struct StaticConfigurationLooseInputTests {
    /// A one-service file with `port` on line 4 and `persistence-timeout` on line 5.
    static func file(port: String = "80", timeout: String = "300") -> String {
        "services:\n  - name: a\n    address: 10.0.0.1\n    port: \(port)\n    persistence-timeout: \(timeout)\n    stable: [10.0.0.2:80]\n"
    }

    static func refusal(_ yaml: String) -> String? {
        do {
            _ = try StaticConfiguration(yaml: yaml, file: "agent.yaml")
            Issue.record("accepted a bad file:\n\(yaml)")
            return nil
        } catch {
            return error.description
        }
    }

    static let portDigits = "is not a port: write it in decimal digits only (no sign, prefix, leading zero, '_' or ':'), 1-65535"
    static let secondsDigits =
        "is not a timeout in seconds: write it in decimal digits only (no sign, prefix, leading zero, '_' or ':'), 1-2678400"

    @Test(
        "a port is decimal digits only: every other spelling YAML 1.1 reads as a number is refused",
        arguments: [
            ("1:20", "agent.yaml:4: services[0].port: '1:20' \(portDigits)"),
            ("0x50", "agent.yaml:4: services[0].port: '0x50' \(portDigits)"),
            ("0o120", "agent.yaml:4: services[0].port: '0o120' \(portDigits)"),
            ("0120", "agent.yaml:4: services[0].port: '0120' \(portDigits)"),
            ("080", "agent.yaml:4: services[0].port: '080' \(portDigits)"),
            ("8_0", "agent.yaml:4: services[0].port: '8_0' \(portDigits)"),
            ("+80", "agent.yaml:4: services[0].port: '+80' \(portDigits)"),
            ("-80", "agent.yaml:4: services[0].port: '-80' \(portDigits)"),
            ("80.0", "agent.yaml:4: services[0].port: '80.0' \(portDigits)"),
            ("8e1", "agent.yaml:4: services[0].port: '8e1' \(portDigits)"),
            ("0b1010000", "agent.yaml:4: services[0].port: '0b1010000' \(portDigits)"),
            ("~", "agent.yaml:4: services[0].port: '~' \(portDigits)"),
            ("\"80\"", "agent.yaml:4: services[0].port: '80' is quoted: write the port as a number without quotes"),
            ("'80'", "agent.yaml:4: services[0].port: '80' is quoted: write the port as a number without quotes"),
            ("\"0x50\"", "agent.yaml:4: services[0].port: '0x50' is quoted: write the port as a number without quotes"),
            ("[80]", "agent.yaml:4: services[0].port: must be a single value"),
            ("0", "agent.yaml:4: services[0].port: '0' is not a port (1-65535)"),
            ("65536", "agent.yaml:4: services[0].port: '65536' is not a port (1-65535)"),
            ("99999999999999999999999", "agent.yaml:4: services[0].port: '99999999999999999999999' is not a port (1-65535)"),
        ])
    func port(spelling: String, expected: String) {
        #expect(Self.refusal(Self.file(port: spelling)) == expected)
    }

    @Test("a port given as a block scalar is refused")
    func blockScalarPort() {
        let yaml = "services:\n  - name: a\n    address: 10.0.0.1\n    port: |-\n      80\n    stable: [10.0.0.2:80]\n"
        #expect(Self.refusal(yaml) == "agent.yaml:4: services[0].port: '80' is a block scalar: write the port as a number after its key")
    }

    @Test(
        "persistence-timeout, the other integer field, has the same rule",
        arguments: [
            ("5:00", "agent.yaml:5: services[0].persistence-timeout: '5:00' \(secondsDigits)"),
            ("0x12c", "agent.yaml:5: services[0].persistence-timeout: '0x12c' \(secondsDigits)"),
            ("0454", "agent.yaml:5: services[0].persistence-timeout: '0454' \(secondsDigits)"),
            ("3_00", "agent.yaml:5: services[0].persistence-timeout: '3_00' \(secondsDigits)"),
            ("+300", "agent.yaml:5: services[0].persistence-timeout: '+300' \(secondsDigits)"),
            ("\"300\"", "agent.yaml:5: services[0].persistence-timeout: '300' is quoted: write the timeout in seconds as a number without quotes"),
            ("0", "agent.yaml:5: services[0].persistence-timeout: '0' is not a number of seconds (1-2678400)"),
            ("2678401", "agent.yaml:5: services[0].persistence-timeout: '2678401' is not a number of seconds (1-2678400)"),
        ])
    func timeout(spelling: String, expected: String) {
        #expect(Self.refusal(Self.file(timeout: spelling)) == expected)
    }

    @Test("the plain decimal spellings at the ends of each range are read as written")
    func validIntegers() throws {
        for (port, timeout) in [("1", "1"), ("65535", "2678400"), ("8080", "300")] {
            let configuration = try StaticConfiguration(yaml: Self.file(port: port, timeout: timeout), file: "agent.yaml")
            #expect(configuration.services[0].key == .inet(.tcp, SocketAddress(address: IPAddress("10.0.0.1")!, port: UInt16(port)!)))
            #expect(configuration.services[0].persistence == Persistence(timeout: UInt32(timeout)!))
        }
    }

    @Test("weights keep their decimal spellings: 12.5, 0.01, 100, 0 and a quoted \"10\"")
    func weights() throws {
        for (weight, basisPoints) in [("12.5", 1_250), ("0.01", 1), ("100", 10_000), ("0", 0), ("\"10\"", 1_000), ("7.25", 725)] {
            let yaml = "services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    stable: [10.0.0.2:80]\n    canary:\n      weight: \(weight)\n      endpoints: [10.0.0.3:80]\n"
            let configuration = try StaticConfiguration(yaml: yaml, file: "agent.yaml")
            #expect(configuration.services[0].canaryShare == CanaryShare(basisPoints: basisPoints))
        }
    }

    @Test(
        "a virtual address no service can live on is refused, naming the field and the reason",
        arguments: [
            ("0.0.0.0", "agent.yaml:3: services[0].address: 0.0.0.0 is the unspecified address: it cannot be a virtual address"),
            ("0.1.2.3", "agent.yaml:3: services[0].address: 0.1.2.3 is in 0.0.0.0/8 (this network): it cannot be a virtual address"),
            ("127.0.0.1", "agent.yaml:3: services[0].address: 127.0.0.1 is a loopback address: it cannot be a virtual address"),
            ("169.254.169.254", "agent.yaml:3: services[0].address: 169.254.169.254 is a link-local address: it cannot be a virtual address"),
            ("224.0.0.1", "agent.yaml:3: services[0].address: 224.0.0.1 is a multicast address: it cannot be a virtual address"),
            ("255.255.255.255", "agent.yaml:3: services[0].address: 255.255.255.255 is the broadcast address: it cannot be a virtual address"),
            ("\"::\"", "agent.yaml:3: services[0].address: :: is the unspecified address: it cannot be a virtual address"),
            ("\"::1\"", "agent.yaml:3: services[0].address: ::1 is a loopback address: it cannot be a virtual address"),
            ("\"fe80::1\"", "agent.yaml:3: services[0].address: fe80::1 is a link-local address: it cannot be a virtual address"),
            ("\"ff02::1\"", "agent.yaml:3: services[0].address: ff02::1 is a multicast address: it cannot be a virtual address"),
            ("\"::ffff:127.0.0.1\"",
             "agent.yaml:3: services[0].address: ::ffff:127.0.0.1 is a loopback address (IPv4-mapped): it cannot be a virtual address"),
        ])
    func unusableAddress(address: String, expected: String) {
        let isIPv6 = address.contains(":")
        let endpoint = isIPv6 ? "\"[fd00::2]:80\"" : "10.0.0.2:80"
        let yaml = "services:\n  - name: a\n    address: \(address)\n    port: 80\n    stable: [\(endpoint)]\n"
        #expect(Self.refusal(yaml) == expected)
    }

    @Test("an address with an embedded NUL is refused, on one line with the NUL escaped")
    func addressWithNUL() {
        let yaml = "services:\n  - name: a\n    address: \"10.96.0.10\\0evil\"\n    port: 80\n    stable: [10.0.0.2:80]\n"
        #expect(Self.refusal(yaml) == "agent.yaml:3: services[0].address: '10.96.0.10\\0evil' is not an IPv4 or IPv6 address")
    }

    @Test("an endpoint with an embedded NUL is refused")
    func endpointWithNUL() {
        let yaml = "services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    stable: [\"10.0.0.2\\0:80\"]\n"
        #expect(Self.refusal(yaml) == "agent.yaml:5: services[0].stable[0]: '10.0.0.2\\0:80' is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)")
    }

    @Test(
        "an endpoint on its own service's virtual address (any port) is refused, naming the endpoint",
        arguments: [
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    stable: [10.0.0.2:80, 10.0.0.1:80]\n",
             "agent.yaml:5: services[0].stable[1]: 10.0.0.1:80 is on the service's own address 10.0.0.1: an endpoint must be another address"),
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    stable:\n      - 10.0.0.2:80\n      - 10.0.0.1:8080\n",
             "agent.yaml:7: services[0].stable[1]: 10.0.0.1:8080 is on the service's own address 10.0.0.1: an endpoint must be another address"),
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    stable: [10.0.0.2:80]\n    canary:\n      weight: 5\n      endpoints: [10.0.0.1:81]\n",
             "agent.yaml:8: services[0].canary.endpoints[0]: 10.0.0.1:81 is on the service's own address 10.0.0.1: an endpoint must be another address"),
            ("services:\n  - name: a\n    address: \"fd00::53\"\n    port: 53\n    stable: [\"[fd00:0::53]:5353\"]\n",
             "agent.yaml:5: services[0].stable[0]: [fd00::53]:5353 is on the service's own address fd00::53: an endpoint must be another address"),
        ])
    func endpointOnVirtualAddress(yaml: String, expected: String) {
        #expect(Self.refusal(yaml) == expected)
    }

    @Test("an endpoint on another service's virtual address is still allowed")
    func endpointOnOtherService() throws {
        let yaml = "services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    stable: [10.0.0.5:80]\n  - name: b\n    address: 10.0.0.5\n    port: 80\n    stable: [10.0.0.1:80]\n"
        #expect(try StaticConfiguration(yaml: yaml, file: "agent.yaml").services.count == 2)
    }

    @Test(
        "a name with a control character is refused on one line, the character escaped",
        arguments: [
            ("\"web\\r\\nfake 1\"", "agent.yaml:2: services[0].name: 'web\\r\\nfake 1' contains a control character (U+000D): a name is printable text only"),
            ("\"web\\0\"", "agent.yaml:2: services[0].name: 'web\\0' contains a control character (U+0000): a name is printable text only"),
            ("\"a\\tb\"", "agent.yaml:2: services[0].name: 'a\\tb' contains a control character (U+0009): a name is printable text only"),
            ("\"del\\x7f\"", "agent.yaml:2: services[0].name: 'del\\u{7F}' contains a control character (U+007F): a name is printable text only"),
            ("\"esc\\e[31m\"", "agent.yaml:2: services[0].name: 'esc\\u{1B}[31m' contains a control character (U+001B): a name is printable text only"),
        ])
    func controlCharacterInName(name: String, expected: String) {
        let yaml = "services:\n  - name: \(name)\n    address: 10.0.0.1\n    port: 80\n    stable: [10.0.0.2:80]\n"
        let message = Self.refusal(yaml)
        #expect(message == expected)
        #expect(message?.contains("\n") == false && message?.contains("\r") == false)
    }

    @Test("printable names, with spaces and non-ASCII letters, are still accepted")
    func printableNames() throws {
        let yaml = "services:\n  - name: web-v2 (canary)\n    address: 10.0.0.1\n    port: 80\n    stable: [10.0.0.2:80]\n  - name: \"caf\u{e9}\"\n    address: 10.0.0.3\n    port: 80\n    stable: [10.0.0.2:80]\n"
        #expect(try StaticConfiguration(yaml: yaml, file: "agent.yaml").services.map(\.name) == ["web-v2 (canary)", "caf\u{e9}"])
    }

    @Test("a file written like systemd/config.example.yaml (comments, flow lists, quoted IPv6, decimal weights) still parses")
    func exampleStyleFile() throws {
        let yaml = """
            # comment
            scheduler: wrr                  # default
            services:
              - name: web
                address: 10.96.0.10         # the virtual address
                port: 80
                protocol: tcp
                stable: [10.9.1.2:80, 10.9.1.3:80, 10.9.1.4:80]
                canary:
                  weight: 10                # percent
                  endpoints: ["10.9.1.9:80"]

              - name: web-sticky
                address: 10.96.0.11
                port: 80
                scheduler: sh
                stable: [10.9.1.2:80, 10.9.1.3:80, 10.9.1.4:80]
                canary:
                  weight: 12.5
                  endpoints: ["10.9.1.9:80"]
              - name: api-v6
                address: "fd00:96::20"
                port: 8080
                persistence-timeout: 300
                stable: ["[fd00:9::2]:8080", "[fd00:9::3]:8080"]
                canary:
                  weight: 5
                  endpoints: ["[fd00:9::9]:8080"]
              - name: dns
                address: 10.96.0.53
                port: 53
                protocol: udp
                scheduler: rr
                stable: [10.9.2.2:53, 10.9.2.3:53]

            """
        let configuration = try StaticConfiguration(yaml: yaml, file: "config.yaml")
        #expect(configuration.services.map(\.name) == ["web", "web-sticky", "api-v6", "dns"])
        #expect(configuration.services[1].canaryShare == CanaryShare(basisPoints: 1_250))
        #expect(configuration.services[2].key == .inet(.tcp, SocketAddress("[fd00:96::20]:8080")!))
        #expect(configuration.services[2].persistence == Persistence(timeout: 300))
        #expect(configuration.services[3].key == .inet(.udp, SocketAddress("10.96.0.53:53")!))
    }
}
