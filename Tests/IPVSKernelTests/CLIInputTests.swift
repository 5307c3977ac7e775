import Foundation
import Testing

/// The CLI's checks of its input, which come before any kernel work: they run on any host (no IPVS
/// needed) and in the VM alike. Each bad input is one line naming the flag or the file, exit 1.
@Suite("canary-agent refuses bad input before touching the kernel")
struct CLIInputTests {
    /// Runs the agent and returns its exit status and standard error.
    static func agent(_ arguments: [String]) throws -> (status: Int32, stderr: String) {
        do {
            _ = try run("/usr/bin/timeout", ["60", agentPath] + arguments)
            return (0, "")
        } catch let failure as CommandFailure {
            return (failure.status, failure.stderr)
        }
    }

    @Test(
        "durations out of range are one line naming the flag, never a crash",
        arguments: [
            (["--drift-check-interval", "inf"], "--drift-check-interval"),
            (["--drift-check-interval", "1e300"], "--drift-check-interval"),
            (["--drift-check-interval", "0.0000001"], "--drift-check-interval"),
            (["--drain-timeout", "1e19"], "--drain-timeout"),
            (["--sync-window-ms", "20000"], "--sync-window-ms"),
        ])
    func durations(_ arguments: [String], _ flag: String) throws {
        let result = try Self.agent(["run", "--config", "/nonexistent/canary.yaml", "--listen", "127.0.0.1:19199"] + arguments)
        #expect(result.status == 1, "exit \(result.status): \(result.stderr)")
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains("\(flag): "), "\(result.stderr)")
    }

    @Test("list --config with a bad file names the file and line, before opening the kernel")
    func listChecksTheFileFirst() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("canary-cli-\(getpid()).yaml").path
        try "services:\n  - name: web\n    port: 99999\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try Self.agent(["list", "--config", path])
        #expect(result.status == 1, "exit \(result.status): \(result.stderr)")
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains("\(path):"), "\(result.stderr)")
    }
}
