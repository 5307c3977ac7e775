import ArgumentParser
import IPVS
import IPVSNetlink

/// `canary-agent`: the node agent and the CLI to debug it.
@main
struct CanaryAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "canary-agent",
        abstract: "Splits each Service's new connections between stable and canary endpoints with the kernel's IPVS.",
        // `canary-agent --version`: the version and the source revision the image's labels carry.
        version: BuildInfo.versionLine,
        subcommands: [
            RunCommand.self, StatusCommand.self, ListCommand.self, PlanCommand.self, ExplainCommand.self,
            CleanupCommand.self, InfoCommand.self,
        ]
    )
}

/// Options every debugging command shares.
struct OutputOptions: ParsableArguments {
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case table, json
    }

    @Option(name: .long, help: "Output format: table for people, json for scripts.")
    var output: Format = .table
}

/// Fails with one clear line (no usage text) and exit status 1.
struct CommandError: Error, CustomStringConvertible {
    var description: String
    init(_ message: String) { description = message }
}

func openKernel() throws -> NetlinkIPVS {
    do { return try NetlinkIPVS() } catch { throw CommandError("\(error)") }
}
