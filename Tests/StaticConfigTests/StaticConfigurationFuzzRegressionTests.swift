import StaticConfig
import Testing

/// Inputs from the hunt for the static-YAML fuzz target's lost crash (Tests/fuzz/regressions/static-yaml):
/// refused files whose one-line error was not bounded, because `excerpt` counted characters (one
/// character can hold any number of Unicode scalars: a letter and 3,000 combining accents is one) and
/// a field path took one key per level of a file nested up to a thousand levels deep. Every error must
/// stay one line of at most 4 KiB, whatever the file.
@Suite("The static configuration file's errors, bounded in bytes")
struct StaticConfigurationFuzzRegressionTests {
    /// The error a refused file gives, as the agent prints it.
    static func refusal(_ yaml: String) -> String? {
        do {
            _ = try StaticConfiguration(yaml: yaml, file: "agent.yaml")
            Issue.record("accepted: \(yaml.prefix(80))")
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// One character: "w" and 3,000 combining acute accents, 6,001 bytes.
    static let hugeCharacter = "w" + String(repeating: "\u{301}", count: 3_000)

    static let files: [(String, String)] = [
        // A service name given twice, echoed in the error.
        (
            "a duplicate name of one 6 KB character",
            """
            services:
              - {name: \(hugeCharacter), address: 10.96.0.10, port: 80, stable: [10.0.0.1:80]}
              - {name: \(hugeCharacter), address: 10.96.0.11, port: 80, stable: [10.0.0.1:80]}

            """
        ),
        // The field path of a duplicate key 70 levels deep under 64-character keys (4.6 KB of path).
        (
            "a duplicate key 70 levels deep",
            (0..<70).map { "{\(String(repeating: "k", count: 62))\($0 < 10 ? "0" : "")\($0): " }.joined()
                + "{x: 1, x: 2}" + String(repeating: "}", count: 70) + "\n"
        ),
        // A control character on a line of large characters: the parser's error quotes the line.
        (
            "a control character after 150 characters of 51 scalars each",
            "services: " + String(repeating: "e" + String(repeating: "\u{301}", count: 50), count: 150) + "\u{1}\n"
        ),
    ]

    @Test("a refused file's error is one line of at most 4 KiB", arguments: 0..<files.count)
    func boundedError(index: Int) throws {
        let (what, yaml) = Self.files[index]
        let error = try #require(Self.refusal(yaml), "\(what)")
        #expect(!error.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D }), "\(what): \(error.prefix(200))")
        #expect(error.utf8.count <= 4096, "\(what): an error of \(error.utf8.count) bytes")
        #expect(error.hasPrefix("agent.yaml:"), "\(what): \(error.prefix(200))")
    }

    @Test("the excerpt of a huge character ends with an ellipsis after 64 scalars")
    func excerptCountsScalars() throws {
        // An explicit key (`? `): a plain key is at most 1,024 scalars long.
        let yaml = "services: []\n? \(Self.hugeCharacter)\n: 1\n"
        let error = try #require(Self.refusal(yaml))
        #expect(error.hasPrefix("agent.yaml:2: w" + String(repeating: "\u{301}", count: 63) + "…: unknown field"))
    }
}
