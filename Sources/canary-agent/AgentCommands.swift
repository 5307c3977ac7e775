import ArgumentParser
import CanaryAgent
import CanaryCore
import Foundation
import IPVS
import IPVSNetlink
import NodeNetwork

/// The agent's interface, for the commands that need to know which services are the agent's.
struct InterfaceOptions: ParsableArguments {
    @Option(name: .long, help: "The agent's dummy interface (its --interface).")
    var interface: String = "canary0"

    func boundAddresses() throws -> Set<IPAddress> {
        do {
            return try RouteNetlink().addresses(on: interface)
        } catch {
            throw CommandError("\(error)")
        }
    }
}

/// `canary-agent status`: the running agent's health, last sync and errors per service.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show the running agent's health, last sync and errors per service.")

    @OptionGroup var agent: AgentOptions
    @OptionGroup var options: OutputOptions

    func run() async throws {
        let status = try await agent.status()
        switch options.output {
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.dateEncodingStrategy = .iso8601
            print(String(decoding: try encoder.encode(status), as: UTF8.self))
        case .table:
            print(Self.text(status), terminator: "")
        }
        if status.errorCount > 0 || !status.ready { throw ExitCode(2) }
    }

    /// ", for 3m 20s" since a time, or nothing without one.
    static func age(since: Date?) -> String {
        guard let since else { return "" }
        let seconds = max(0, Int(Date().timeIntervalSince(since)))
        return seconds < 60 ? ", for \(seconds)s" : ", for \(seconds / 60)m \(seconds % 60)s"
    }

    static func text(_ status: AgentStatus) -> String {
        var lines = [
            "source:  \(status.source)",
            "ready:   \(status.ready ? "yes" : "no (the first full sync is not done)")",
        ]
        func describe(_ sync: SyncReport?) -> String {
            guard let sync else { return "none yet" }
            let age = Int(Date().timeIntervalSince(sync.at))
            return "\(sync.kind.rawValue), \(age)s ago, \(String(format: "%.1f", sync.durationSeconds * 1000)) ms, "
                + "\(sync.operations) operations, \(sync.failed) failed"
        }
        lines.append("last sync:       \(describe(status.lastSync))")
        lines.append("last full sync:  \(describe(status.lastFullSync))")
        lines.append("addresses:       \(status.addresses.isEmpty ? "none" : status.addresses.joined(separator: " "))")
        if status.drainingDestinations > 0 { lines.append("draining:        \(status.drainingDestinations) destinations") }
        if let error = status.sourceError {
            lines.append("SOURCE REJECTED: \(error) (the running table is kept)\(Self.age(since: status.sourceErrorSince))")
        }
        if let error = status.sourceUnavailable {
            lines.append("SOURCE UNAVAILABLE: \(error.message)\(Self.age(since: error.since)) (the running table is kept)")
        }
        if let error = status.kernelError { lines.append("KERNEL ERROR:    \(error)\(Self.age(since: status.kernelErrorSince))") }
        if let error = status.masqueradeError {
            lines.append("MASQUERADE:      \(error.message)\(Self.age(since: error.since)) (node-local and hairpin clients fail)")
        }
        lines.append("services: \(status.services.count)")
        for service in status.services {
            let effective = service.effectiveCanaryShare.map { Explanation.percent($0) } ?? "?"
            var line = "  \(service.programmed ? "ok " : "-- ") \(service.name)  \(service.service)  \(service.scheduler)  "
            if let groups = service.groups, groups.count != 2 {
                line += groups.map { "\($0.name) \(Explanation.percent($0.target)) (effective \(Explanation.percent($0.effective)))" }
                    .joined(separator: ", ")
            } else {
                line += "canary \(Explanation.percent(service.targetCanaryShare)) (effective \(effective))"
            }
            if let route = service.origin.route { line += "\n        route: \(route)" }
            if service.refusesNewConnections == true { line += "\n        refuses new connections" }
            for group in service.groups ?? [] {
                if let reason = group.reason { line += "\n        \(group.name): \(reason)" }
            }
            if let error = service.error { line += "\n        error: \(error)" }
            for problem in service.problems { line += "\n        problem: \(problem.field): \(problem.message)" }
            lines.append(line)
        }
        let attached = Set(status.services.flatMap(\.problems))
        for problem in status.problems where !attached.contains(problem) { lines.append("problem: \(problem)") }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// `canary-agent cleanup`: removes everything the agent owns, and nothing else.
struct CleanupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleanup",
        abstract: "Remove everything the agent owns: its services, its interface and addresses, its iptables rules.",
        discussion: """
            The agent's services are those on the addresses of its interface. Services of anyone else \
            (kube-proxy, a person with ipvsadm) are left alone. Established connections of the removed \
            services are cut: stop the agent first.
            """)

    @OptionGroup var node: InterfaceOptions
    @OptionGroup var options: OutputOptions

    func run() throws {
        let kernel = try openKernel()
        let ownership = Ownership(boundAddresses: try node.boundAddresses())
        let owned = try kernel.dumpTable().map(\.service.key).filter(ownership.owns).sorted()
        let results = try kernel.apply(owned.map { .deleteService($0) })
        var failures: [String] = []
        for (key, result) in zip(owned, results) {
            if case .failure(let error) = result, !error.isNotFound { failures.append("\(key): \(error)") }
        }
        do {
            let plumbing = try LinuxNodePlumbing(interface: node.interface, masqueradeAll: false)
            try plumbing.removeAll()
        } catch {
            failures.append("\(error)")
        }
        switch options.output {
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            struct Output: Encodable { var removedServices: [String]; var interface: String; var failures: [String] }
            let output = Output(removedServices: owned.map(\.description), interface: node.interface, failures: failures)
            print(String(decoding: try encoder.encode(output), as: UTF8.self))
        case .table:
            print("removed \(owned.count) services, the interface \(node.interface) and the agent's iptables chains")
        }
        if let failure = failures.first { throw CommandError("cleanup incomplete: \(failure)") }
    }
}

extension IPVSError {
    var isNotFound: Bool {
        switch self {
        case .serviceNotFound, .destinationNotFound: true
        default: false
        }
    }
}
