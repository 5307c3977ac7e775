import CanaryCore
import Foundation
import IPVS
import StaticConfig
import Testing

/// Files built to be expensive: alias bombs, aliases repeated into millions of endpoints, huge
/// duplicate keys. Each parse runs under `parse(_:file:within:)`, so one that spins fails the test
/// instead of hanging the run.
@Suite("The static configuration file, bounded")
struct StaticConfigurationLimitsTests {
    /// Parses on a thread of its own and waits at most `seconds`: nil if it did not finish (the
    /// thread is left spinning, the test fails).
    static func parse(
        _ yaml: String, file: String = "agent.yaml", within seconds: Double = 60
    ) -> Result<StaticConfiguration, InputProblem>? {
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            outcome.set(Result { () throws(InputProblem) in try StaticConfiguration(yaml: yaml, file: file) })
            done.signal()
        }
        guard done.wait(timeout: .now() + seconds) == .success else {
            Issue.record("the parse of a \(yaml.utf8.count)-byte file did not finish within \(seconds) s")
            return nil
        }
        return outcome.value
    }

    final class Outcome: @unchecked Sendable {
        private let lock = NSLock()
        private var result: Result<StaticConfiguration, InputProblem>?
        func set(_ result: Result<StaticConfiguration, InputProblem>) { lock.withLock { self.result = result } }
        var value: Result<StaticConfiguration, InputProblem>? { lock.withLock { result } }
    }

    /// The error a refused file gives, or nil (and a recorded issue) if it was accepted or hung.
    static func refusal(_ yaml: String, file: String = "agent.yaml") -> InputProblem? {
        switch parse(yaml, file: file) {
        case .failure(let error)?: return error
        case .success?: Issue.record("accepted a file that should be refused"); return nil
        case nil: return nil
        }
    }

    /// "Billion laughs": nine levels of nine aliases (9⁹ nodes) in ~350 bytes, the last used as a key.
    /// Yams hashed the key to look for duplicates and never returned.
    static let billionLaughs: String = {
        var lines = [#"a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]"#]
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
        for (previous, name) in zip(names, names.dropFirst()) {
            lines.append("\(name): &\(name) [" + Array(repeating: "*\(previous)", count: 9).joined(separator: ",") + "]")
        }
        lines.append("? *i")
        lines.append(": lol")
        return lines.joined(separator: "\n") + "\n"
    }()

    @Test("an alias bomb used as a mapping key is refused at once, naming where the aliases pass the limit")
    func billionLaughsAsKey() {
        #expect(Self.billionLaughs.utf8.count < 400)
        let error = Self.refusal(Self.billionLaughs)
        // a..e repeat 74,718 nodes; f's first alias of e (66,430 nodes) passes 100,000.
        #expect(error?.description == "agent.yaml:6: f[0]: the aliases expand too far: *e takes what aliases repeat past 100000 nodes")
    }

    @Test("a key must be a single value: an alias, a list or a mapping as a key is refused before Yams hashes it")
    func complexKeys() {
        #expect(Self.refusal("scheduler: &a wrr\n*a : x\nservices: []\n")?.description
            == "agent.yaml:2: a key must be a single value, not an alias (*a)")
        #expect(Self.refusal("services:\n  - ? [a, b]\n    : x\n")?.description
            == "agent.yaml:2: services[0]: a key must be a single value, not a list")
        #expect(Self.refusal("? {a: b}\n: x\n")?.description == "agent.yaml:1: a key must be a single value, not a mapping")
    }

    /// 2,000 services whose `stable` is one anchored list of 2,000 endpoints: ~150 KB, 4 million endpoints.
    @Test("aliases repeating one list into 4 million endpoints are refused with one line naming file, line and field")
    func aliasAmplification() {
        func address(_ prefix: String, _ n: Int) -> String { "\(prefix).\(n / 256).\(n % 256)" }
        let endpoints = (0..<2_000).map { "\(address("10.1", $0)):80" }.joined(separator: ", ")
        var yaml = "services:\n  - {name: s0, address: 10.96.0.0, port: 80, stable: &eps [\(endpoints)]}\n"
        for k in 1..<2_000 {
            yaml += "  - {name: s\(k), address: \(address("10.96", k)), port: 80, stable: *eps}\n"
        }
        #expect((100_000...200_000).contains(yaml.utf8.count))
        let error = Self.refusal(yaml, file: "big.yaml")
        // Each alias repeats 2,001 nodes: the 50th (services[50], line 52) passes 100,000.
        #expect(error?.description
            == "big.yaml:52: services[50].stable: the aliases expand too far: *eps takes what aliases repeat past 100000 nodes")
    }

    @Test("anchors and aliases in reasonable use still read")
    func reasonableAliases() throws {
        let yaml = """
            services:
              - name: a
                address: 10.0.0.1
                port: 80
                stable: &pool [10.0.1.1:80, 10.0.1.2:80]
              - name: b
                address: 10.0.0.2
                port: 80
                stable: *pool
            """
        let configuration = try #require(try Self.parse(yaml)?.get())
        #expect(configuration.services.map(\.stable.count) == [2, 2])
        #expect(configuration.services[1].stable == configuration.services[0].stable)
    }

    @Test(
        "a duplicate key is one line naming the key and its line, not the whole file",
        arguments: [
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    port: 81\n    stable: []\n",
             "agent.yaml:5: services[0].port: given twice (first on line 4)"),
            ("services: []\nscheduler: wrr\nservices: []\n", "agent.yaml:3: services: given twice (first on line 1)"),
            ("services:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n    stable: []\n    canary: {weight: 1, weight: 2}\n",
             "agent.yaml:6: services[0].canary.weight: given twice (first on line 6)"),
            ("services: []\n\"x\\ny\": 1\n\"x\\ny\": 2\n", "agent.yaml:3: x\\ny: given twice (first on line 2)"),
        ])
    func duplicateKey(yaml: String, expected: String) {
        #expect(Self.refusal(yaml)?.description == expected)
    }

    @Test("a 10 MB file whose 5 MB key is given twice is a short one-line error")
    func hugeDuplicateKey() throws {
        let key = String(repeating: "k", count: 5_000_000)
        let yaml = "services: []\n? \(key)\n: 1\n? \(key)\n: 2\n"
        let description = try #require(Self.refusal(yaml)).description
        #expect(!description.contains("\n"))
        #expect(description.count < 200)
        #expect(description == "agent.yaml:4: \(String(repeating: "k", count: 64))…: given twice (first on line 2)")
    }

    @Test("a large legitimate file (2,000 services × 10 endpoints, no aliases) still reads")
    func largeFile() throws {
        var yaml = "scheduler: wrr\nservices:\n"
        for k in 0..<2_000 {
            let stable = (1...10).map { "10.\(100 + k / 256).\(k % 256).\($0):8080" }.joined(separator: ", ")
            yaml += """
                  - name: service-\(k)
                    address: 10.96.\(k / 256).\(k % 256)
                    port: 80
                    stable: [\(stable)]

                """
        }
        let configuration = try #require(try Self.parse(yaml)?.get())
        #expect(configuration.services.count == 2_000)
        #expect(configuration.services.allSatisfy { $0.stable.count == 10 })
        #expect(configuration.services.last?.name == "service-1999")
    }
}
