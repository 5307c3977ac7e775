import ArgumentParser
import Foundation
import IPVS
import IPVSNetlink

/// `canary-agent list`: the kernel's IPVS table, like `ipvsadm -Ln --stats`.
struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "Show the kernel's IPVS table with live connection counts.")

    @OptionGroup var options: OutputOptions

    func run() throws {
        let table = try openKernel().dumpTable().sorted { $0.service.key < $1.service.key }
        switch options.output {
        case .json:
            print(try TableJSON.encode(table))
        case .table:
            print(TableText.render(table), terminator: "")
        }
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
    static func render(_ table: [ServiceEntry]) -> String {
        var text = "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn      Conns\n"
        for entry in table {
            let service = entry.service
            var flags = service.flags.subtracting(.hashed).description
            if service.flags.contains(.persistent) { flags += " \(service.timeout)s" }
            text += "\(service.key) \(service.scheduler) \(flags)\n"
            for destination in entry.destinations {
                let stats = destination.stats ?? DestinationStats()
                text += "  -> " + pad("\(destination.address)", 28) + pad(destination.forwarding.description, 8)
                    + pad("\(destination.weight)", 7, right: true) + pad("\(stats.activeConnections)", 11, right: true)
                    + pad("\(stats.inactiveConnections)", 10, right: true) + pad("\(stats.traffic.connections)", 11, right: true) + "\n"
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
        var destinations: [DestinationRow]
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
    }

    static func encode(_ table: [ServiceEntry]) throws -> String {
        let rows = table.map { entry in
            Service(
                service: "\(entry.service.key)", scheduler: entry.service.scheduler.rawValue,
                flags: entry.service.flags.subtracting(.hashed).description,
                persistenceTimeout: entry.service.flags.contains(.persistent) ? entry.service.timeout : nil,
                destinations: entry.destinations.map { destination in
                    let stats = destination.stats ?? DestinationStats()
                    return DestinationRow(
                        address: "\(destination.address)", forwarding: destination.forwarding.description,
                        weight: destination.weight, activeConnections: stats.activeConnections,
                        inactiveConnections: stats.inactiveConnections, connections: stats.traffic.connections,
                        inBytes: stats.traffic.inBytes, outBytes: stats.traffic.outBytes)
                })
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(rows), as: UTF8.self)
    }
}
