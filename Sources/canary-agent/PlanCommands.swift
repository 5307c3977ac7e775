import ArgumentParser
import CanaryCore
import Foundation
import IPVS
import CanaryAgent
import StaticConfig

/// Where the desired state comes from, for the commands that read it: a static file, or the
/// running agent (Kubernetes mode too).
struct SourceOptions: ParsableArguments {
    @Option(name: .long, help: "The static configuration file (YAML); without it, the running agent's desired state.")
    var config: String?

    @OptionGroup var agent: AgentOptions

    /// For messages: the file, or the agent.
    var sourceName: String { config ?? "the agent at \(agent.agent)" }

    func load() async throws -> DesiredState {
        guard let config else { return try await agent.desiredState() }
        let text: String
        do {
            text = try String(contentsOfFile: config, encoding: .utf8)
        } catch {
            throw CommandError("\(config): cannot be read: \(error.localizedDescription)")
        }
        do {
            return try StaticConfiguration(yaml: text, file: config).desiredState
        } catch {
            throw CommandError(error.description)
        }
    }
}

/// `canary-agent explain SERVICE`: how the weights of one service were chosen for its scheduler.
struct ExplainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain", abstract: "Show how a service's weights were chosen for its scheduler.")

    @Argument(help: "The service's name (the file's name, or namespace/name:port in Kubernetes).")
    var service: String

    @OptionGroup var source: SourceOptions
    @OptionGroup var options: OutputOptions

    func run() async throws {
        let state = try await source.load()
        let services = state.services.values.sorted { $0.key < $1.key }
        let matches = services.filter { $0.name == service || $0.name.hasPrefix(service + ":") }
        guard let desired = matches.first else {
            throw CommandError(
                "no service '\(service)' in \(source.sourceName) (services: \(services.map(\.name).joined(separator: ", ")))")
        }
        // The kernel's current order matters for sh and mh: use it when the service is there.
        let current = (try? openKernel().service(desired.key)) ?? nil
        let realized = DesiredTable.realize(desired, kernelOrder: current?.destinations.map(\.address))
        let explanation = Explanation(desired, entry: realized.entry, assignment: realized.assignment)
        switch options.output {
        case .json: print(try explanation.json())
        case .table: print(explanation.text, terminator: "")
        }
    }
}

/// `canary-agent plan`: what a sync would change in the kernel now, without changing it.
struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan", abstract: "Show what a sync would change in the kernel now, without changing it.")

    @OptionGroup var source: SourceOptions
    @OptionGroup var options: OutputOptions
    @OptionGroup var node: InterfaceOptions

    func run() async throws {
        let state = try await source.load()
        let kernel = try openKernel()
        let dump = try kernel.dumpTable()
        let plan = Reconciler.previewPlan(desired: state, dump: dump, bound: try node.boundAddresses())
        switch options.output {
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let rows = plan.operations.map { ["kind": $0.kind, "service": "\($0.serviceKey)", "operation": "\($0)"] }
            print(String(decoding: try encoder.encode(rows), as: UTF8.self))
        case .table:
            if plan.operations.isEmpty { print("nothing to change: the kernel holds the desired table") }
            for operation in plan.operations { print(operation) }
            for key in plan.unownedDesiredServices { print("not owned, left alone: \(key)") }
        }
    }
}

/// What `explain` says of one service.
struct Explanation: Encodable {
    struct Row: Encodable {
        var address: String
        /// The group's name; names joined by `+` for an address in several groups.
        var group: String
        var state: String
        var weight: Int32
    }

    /// One backend group: its weight, target and effective share, and why they differ.
    struct Group: Encodable {
        var name: String
        var weight: Int
        var target: String
        var effective: String
        var liveEndpoints: Int
        var reason: String?
    }

    var service: String
    /// The Gateway API route whose backends the groups are, when one governs the service.
    var route: String?
    var key: String
    var scheduler: String
    var flags: String
    /// The stable/canary split's line, for two-group services.
    var targetCanaryShare: String?
    var effectiveCanaryShare: String?
    var groups: [Group]
    var refusesNewConnections: Bool
    var cycleLength: Int?
    var explanation: String?
    var warnings: [String]
    var destinations: [Row]

    init(_ desired: DesiredService, entry: ServiceEntry, assignment: WeightAssignment) {
        service = desired.name
        route = desired.origin.route?.description
        key = "\(desired.key)"
        scheduler = desired.scheduler.rawValue
        flags = entry.service.flags.description
        if desired.backends.count == 2 {
            targetCanaryShare = "\(desired.canaryShare)"
            effectiveCanaryShare = Explanation.percent(assignment.effectiveCanaryShare)
        }
        groups = assignment.groups.map {
            Group(
                name: $0.name, weight: $0.weight, target: Explanation.percent($0.target),
                effective: Explanation.percent($0.effective), liveEndpoints: $0.liveEndpoints, reason: $0.reason)
        }
        refusesNewConnections = assignment.refusesNewConnections
        cycleLength = assignment.cycleLength
        explanation = assignment.explanation
        warnings = assignment.warnings
        let groupsByAddress = desired.groupsByAddress
        var states: [SocketAddress: Endpoint.State] = [:]
        for group in desired.backends {
            for endpoint in group.endpoints where states[endpoint.address] != .live { states[endpoint.address] = endpoint.state }
        }
        destinations = entry.destinations.map { destination in
            Row(
                address: "\(destination.address)", group: desired.role(of: destination.address, groups: groupsByAddress) ?? "",
                state: states[destination.address] == .draining ? "draining" : "live", weight: destination.weight)
        }
    }

    static func percent(_ fraction: Double) -> String { percentText(fraction, decimals: 2...2) }

    var text: String {
        var lines = ["service \(service): \(key), scheduler \(scheduler)" + (flags.isEmpty ? "" : " (\(flags))")]
        if let route { lines.append("route: \(route) (its backendRefs are the groups)") }
        let cycle = cycleLength.map { ", wrr cycle \($0) connections" } ?? ""
        if let targetCanaryShare, let effectiveCanaryShare {
            lines.append("canary share: target \(targetCanaryShare), effective \(effectiveCanaryShare)" + cycle)
        } else {
            lines.append("\(groups.count) backend group\(groups.count == 1 ? "" : "s")" + cycle)
        }
        if refusesNewConnections { lines.append("new connections are refused") }
        let width = max(5, groups.map(\.name.count).max() ?? 0)
        lines.append("groups:")
        lines += groups.map { group in
            "  \(group.name.padding(toLength: width, withPad: " ", startingAt: 0)) weight \(group.weight), "
                + "target \(group.target), effective \(group.effective), \(group.liveEndpoints) live"
                + (group.reason.map { ": \($0)" } ?? "")
        }
        if let explanation { lines.append("why: \(explanation)") }
        lines += warnings.map { "warning: \($0)" }
        lines.append("destinations:")
        let rowWidth = max(7, destinations.map(\.group.count).max() ?? 0)
        lines += destinations.map {
            "  \($0.group.padding(toLength: rowWidth, withPad: " ", startingAt: 0)) \($0.address) weight \($0.weight)"
                + ($0.state == "live" ? "" : " (\($0.state))")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
