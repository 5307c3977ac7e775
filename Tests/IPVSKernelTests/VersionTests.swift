import Foundation
import Testing

/// `canary-agent --version`: the version in Sources/canary-agent/BuildInfo.swift and the source revision
/// deploy/build-image.sh stamps into the linked binary (deploy/stamp-revision.py), the same two values
/// the container image's labels carry. Runs the built binary, on any host (no IPVS needed).
@Suite("canary-agent --version names the version and the source revision")
struct VersionTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// The `static let version = "…"` of BuildInfo.swift, read from the source as the build script reads it.
    static func sourceVersion() throws -> String {
        let source = try String(
            contentsOf: repository.appendingPathComponent("Sources/canary-agent/BuildInfo.swift"), encoding: .utf8)
        let line = try #require(source.split(separator: "\n").first { $0.contains("static let version = \"") })
        return String(try #require(line.split(separator: "\"").dropFirst().first))
    }

    /// A private copy of the agent, so stamping it leaves the built one as it is.
    static func copyOfAgent() throws -> String {
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("canary-agent-version-\(getpid())-\(UUID())").path
        try FileManager.default.copyItem(atPath: agentPath, toPath: copy)
        return copy
    }

    static func stamp(_ binary: String, _ revision: String) throws -> String {
        try run("/usr/bin/python3", [Self.repository.appendingPathComponent("deploy/stamp-revision.py").path, binary, revision])
    }

    @Test("an unstamped build says its version and revision unknown, on one line, exit 0")
    func unstamped() throws {
        let version = try Self.sourceVersion()
        let output = try run(agentPath, ["--version"])
        #expect(output == "\(version) (revision unknown)\n", "\(output)")
    }

    @Test("the revision stamped into the binary is the one --version prints; a second stamp is refused")
    func stamped() throws {
        let binary = try Self.copyOfAgent()
        defer { try? FileManager.default.removeItem(atPath: binary) }
        let version = try Self.sourceVersion()
        let revision = "0123456789abcdef0123456789abcdef01234567"
        _ = try Self.stamp(binary, revision)
        let output = try run(binary, ["--version"])
        #expect(output == "\(version) (revision \(revision))\n", "\(output)")
        // The rest of the binary is intact: it still parses its commands.
        #expect(try run(binary, ["run", "--help"]).contains("USAGE: canary-agent run"))
        #expect(throws: CommandFailure.self) { try Self.stamp(binary, "fedcba9876543210fedcba9876543210fedcba98") }
        #expect(try run(binary, ["--version"]) == output)
    }

    @Test("a revision that is not one is refused, the binary left unchanged", arguments: ["", "a b", String(repeating: "f", count: 64), "../etc"])
    func badRevision(_ revision: String) throws {
        let binary = try Self.copyOfAgent()
        defer { try? FileManager.default.removeItem(atPath: binary) }
        let before = try Data(contentsOf: URL(fileURLWithPath: binary))
        #expect(throws: CommandFailure.self) { try Self.stamp(binary, revision) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: binary)) == before)
    }
}
