import ArgumentParser
import CanaryCore
import Foundation
import IPVS
import IPVSNetlink

/// `canary-agent list`: the kernel's IPVS table, like `ipvsadm -Ln --stats`, each destination
/// marked with its backend group (stable, canary, or a route's backend), each service with its
/// target, effective and observed share per group.
struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Show the kernel's IPVS table: each destination's group, shares per group, live connection counts.",
        discussion: "Roles and shares come from --config FILE, else from the running agent; without either the table is shown unmarked.")

    @OptionGroup var source: SourceOptions
    @OptionGroup var options: OutputOptions

    func run() async throws {
        // The roles first: a bad --config file is one line, before the kernel is opened at all.
        var desired = DesiredState()
        do {
            desired = try await source.load()
        } catch {
            if source.config != nil { throw error }
            FileHandle.standardError.write(Data("note: no roles shown: \(error)\n".utf8))
        }
        let table = try openKernel().dumpTable().sorted { $0.service.key < $1.service.key }
        let roles = Roles(desired: desired, table: table)
        switch options.output {
        case .json:
            print(try TableJSON.encode(table, roles: roles))
        case .table:
            print(TableText.render(table, roles: roles), terminator: "")
        }
    }
}

/// What each destination is to its service (its group), and each service's shares per group.
struct Roles {
    struct Service {
        var desired: DesiredService
        var groupsByAddress: [SocketAddress: [Int]]
        var groups: [WeightAssignment.GroupShare]
        var name: String { desired.name }
        /// The stable/canary split's canary share, for two-group services.
        var target: Double? { desired.isStableAndCanary ? desired.canaryShare.fraction : nil }
        var effective: Double? { desired.isStableAndCanary ? groups.dropFirst().reduce(0) { $0 + $1.effective } : nil }
    }

    var services: [ServiceKey: Service] = [:]

    init(desired: DesiredState, table: [ServiceEntry]) {
        let kernel = Planner.index(table)
        for (key, service) in desired.services {
            let realized = DesiredTable.realize(service, kernelOrder: kernel[key]?.destinations.map(\.address))
            services[key] = Service(desired: service, groupsByAddress: service.groupsByAddress, groups: realized.assignment.groups)
        }
    }

    func role(of address: SocketAddress, in key: ServiceKey) -> String {
        guard let service = services[key] else { return "" }
        return service.desired.role(of: address, groups: service.groupsByAddress) ?? "leaving"
    }

    /// Each group's share of the connections the kernel counted so far, when it counted any.
    static func observed(_ entry: ServiceEntry, _ service: Service) -> [Double]? {
        var connections: [SocketAddress: UInt64] = [:]
        for destination in entry.destinations { connections[destination.address] = destination.stats?.traffic.connections ?? 0 }
        return service.desired.observedShares(connections: connections)
    }

    /// `[web: canary target 20.00%, effective 20.00%, observed -]` for a two-group service,
    /// `[checkout: blue target 70.00% effective 69.92% observed -; green …]` otherwise.
    static func summary(_ entry: ServiceEntry, _ service: Service) -> String {
        let observed = observed(entry, service)
        if let target = service.target, let effective = service.effective {
            let canary = observed.map { Explanation.percent($0.dropFirst().reduce(0, +)) } ?? "-"
            return "[\(service.name): canary target \(Explanation.percent(target)), "
                + "effective \(Explanation.percent(effective)), observed \(canary)]"
        }
        let name = service.desired.origin.route.map { "\(service.name) by \($0)" } ?? service.name
        let groups = service.groups.enumerated().map { index, group in
            "\(group.name) target \(Explanation.percent(group.target)) effective \(Explanation.percent(group.effective)) "
                + "observed \(observed.map { Explanation.percent($0[index]) } ?? "-")"
        }
        return "[\(name): " + groups.joined(separator: "; ") + "]"
    }
}

/// `canary-agent info`: the kernel's IPVS version and timeouts.
struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Show the kernel's IPVS version, table size and timeouts.")

    @OptionGroup var options: OutputOptions

    func run() throws {
        let ipvs = try openKernel()
        let info = try ipvs.info()
        let timeouts = try ipvs.timeouts()
        switch options.output {
        case .json:
            struct Output: Encodable { var version: String; var connectionTableSize: UInt32; var timeouts: IPVSTimeouts }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(Output(version: info.version, connectionTableSize: info.connectionTableSize, timeouts: timeouts))
            print(String(decoding: data, as: UTF8.self))
        case .table:
            print("IPVS \(info.version), connection table size \(info.connectionTableSize)")
            print("timeouts: tcp \(timeouts.tcp)s, tcp-fin \(timeouts.tcpFin)s, udp \(timeouts.udp)s")
        }
    }
}

enum TableText {
    static func render(_ table: [ServiceEntry], roles: Roles = Roles(desired: DesiredState(), table: [])) -> String {
        var text = "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn      Conns Role\n"
        for entry in table {
            let service = entry.service
            var flags = service.flags.subtracting(.hashed).description
            if service.flags.contains(.persistent) { flags += " \(service.timeout)s" }
            text += "\(service.key) \(service.scheduler) \(flags)"
            if let described = roles.services[service.key] { text += "  " + Roles.summary(entry, described) }
            text += "\n"
            for destination in entry.destinations {
                let stats = destination.stats ?? DestinationStats()
                text += "  -> " + pad("\(destination.address)", 28) + pad(destination.forwarding.description, 8)
                    + pad("\(destination.weight)", 7, right: true) + pad("\(stats.activeConnections)", 11, right: true)
                    + pad("\(stats.inactiveConnections)", 10, right: true) + pad("\(stats.traffic.connections)", 11, right: true)
                    + " " + roles.role(of: destination.address, in: service.key) + "\n"
            }
        }
        return text
    }

    static func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
        let padding = String(repeating: " ", count: max(0, width - text.count))
        return right ? padding + text : text + padding
    }
}

enum TableJSON {
    struct Service: Encodable {
        var service: String
        var scheduler: String
        var flags: String
        var persistenceTimeout: UInt32?
        var name: String?
        /// The Gateway API route behind the service, when one governs it.
        var route: String?
        var targetCanaryShare: Double?
        var effectiveCanaryShare: Double?
        var observedCanaryShare: Double?
        var groups: [GroupRow]?
        var destinations: [DestinationRow]
    }

    struct GroupRow: Encodable {
        var name: String
        var weight: Int
        var target: Double
        var effective: Double
        var observed: Double?
    }

    struct DestinationRow: Encodable {
        var address: String
        var forwarding: String
        var weight: Int32
        var activeConnections: UInt32
        var inactiveConnections: UInt32
        var connections: UInt64
        var inBytes: UInt64
        var outBytes: UInt64
        var role: String?
    }

    static func encode(_ table: [ServiceEntry], roles: Roles = Roles(desired: DesiredState(), table: [])) throws -> String {
        let rows = table.map { entry in
            let described = roles.services[entry.service.key]
            let observed = described.flatMap { Roles.observed(entry, $0) }
            return Service(
                service: "\(entry.service.key)", scheduler: entry.service.scheduler.rawValue,
                flags: entry.service.flags.subtracting(.hashed).description,
                persistenceTimeout: entry.service.flags.contains(.persistent) ? entry.service.timeout : nil,
                name: described?.name, route: described?.desired.origin.route?.description, targetCanaryShare: described?.target, effectiveCanaryShare: described?.effective,
                observedCanaryShare: described?.target == nil ? nil : observed.map { $0.dropFirst().reduce(0, +) },
                groups: described?.groups.enumerated().map { index, group in
                    GroupRow(
                        name: group.name, weight: group.weight, target: group.target, effective: group.effective,
                        observed: observed?[index])
                },
                destinations: entry.destinations.map { destination in
                    let stats = destination.stats ?? DestinationStats()
                    return DestinationRow(
                        address: "\(destination.address)", forwarding: destination.forwarding.description,
                        weight: destination.weight, activeConnections: stats.activeConnections,
                        inactiveConnections: stats.inactiveConnections, connections: stats.traffic.connections,
                        inBytes: stats.traffic.inBytes, outBytes: stats.traffic.outBytes,
                        role: described == nil ? nil : roles.role(of: destination.address, in: entry.service.key))
                })
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(rows), as: UTF8.self)
    }
}
