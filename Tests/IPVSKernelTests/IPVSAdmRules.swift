import Foundation
import IPVS

/// Runs a command and returns its standard output; throws with its stderr when it fails.
func run(_ executable: String, _ arguments: [String], input: String? = nil) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let output = Pipe(), errors = Pipe(), stdin = Pipe()
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = stdin
    try process.run()
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try stdin.fileHandleForWriting.close()
    let out = output.fileHandleForReading.readDataToEndOfFile()
    let err = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw CommandFailure(command: ([executable] + arguments).joined(separator: " "), status: process.terminationStatus,
                             stderr: String(decoding: err, as: UTF8.self), stdout: String(decoding: out, as: UTF8.self))
    }
    return String(decoding: out, as: UTF8.self)
}

struct CommandFailure: Error, CustomStringConvertible {
    var command: String
    var status: Int32
    var stderr: String
    var stdout = ""
    var description: String { "\(command) exited \(status): \(stderr)" }
}

/// The ipvsadm binary: /usr/sbin/ipvsadm on Debian.
let ipvsadmPath = ["/usr/sbin/ipvsadm", "/sbin/ipvsadm", "/usr/bin/ipvsadm"].first { FileManager.default.fileExists(atPath: $0) } ?? "ipvsadm"

/// The rules format of `ipvsadm -Sn` / `ipvsadm -R`, read into the model and written from it,
/// so the two programs can be compared table for table.
enum IPVSAdmRules {
    struct ParseError: Error, CustomStringConvertible {
        var line: String
        var reason: String
        var description: String { "cannot read ipvsadm rule '\(line)': \(reason)" }
    }

    /// Reads `ipvsadm -Sn` output into entries, keyed by service.
    static func parse(_ text: String) throws -> [ServiceKey: ServiceEntry] {
        var table: [ServiceKey: ServiceEntry] = [:]
        for line in text.split(separator: "\n").map({ String($0).trimmingCharacters(in: .whitespaces) }) where !line.isEmpty {
            var tokens = line.split(separator: " ").map(String.init)[...]
            let command = tokens.popFirst()
            var family: IPAddress.Family = .inet
            var key: ServiceKey?
            var service = (scheduler: Scheduler("wlc"), flags: ServiceFlags(), timeout: UInt32(0), netmask: UInt32?.none)
            var destination: (address: SocketAddress?, method: ForwardingMethod, weight: Int32, upper: UInt32, lower: UInt32) =
                (nil, .directRoute, 1, 0, 0)
            var mark: UInt32?
            func next() throws -> String {
                guard let token = tokens.popFirst() else { throw ParseError(line: line, reason: "value missing") }
                return token
            }
            func socket(_ text: String) throws -> SocketAddress {
                guard let value = SocketAddress(text) else { throw ParseError(line: line, reason: "address \(text)") }
                return value
            }
            while let token = tokens.popFirst() {
                switch token {
                case "-t", "--tcp-service": key = .inet(.tcp, try socket(next()))
                case "-u", "--udp-service": key = .inet(.udp, try socket(next()))
                case "--sctp-service": key = .inet(.sctp, try socket(next()))
                case "-f", "--fwmark-service": mark = UInt32(try next())
                case "-6", "--ipv6": family = .inet6
                case "-s", "--scheduler": service.scheduler = Scheduler(rawValue: try next())
                case "-p", "--persistent":
                    service.flags.insert(.persistent)
                    // ipvsadm prints the timeout right after -p.
                    service.timeout = UInt32(try next()) ?? 0
                case "-M", "--netmask":
                    let value = try next()
                    if let prefix = UInt32(value) { service.netmask = prefix }
                    else if let mask = IPAddress(value)?.ipv4Value { service.netmask = mask }
                    else { throw ParseError(line: line, reason: "netmask \(value)") }
                case "-o", "--ops": service.flags.insert(.onePacket)
                case "-b", "--sched-flags":
                    for flag in try next().split(separator: ",") {
                        switch flag {
                        case "flag-1", "sh-fallback", "mh-fallback": service.flags.insert(.shFallback)
                        case "flag-2", "sh-port", "mh-port": service.flags.insert(.shPort)
                        case "flag-3": service.flags.insert(.schedulerFlag3)
                        default: throw ParseError(line: line, reason: "scheduler flag \(flag)")
                        }
                    }
                case "-r", "--real-server": destination.address = try socket(next())
                case "-g", "--gatewaying": destination.method = .directRoute
                case "-i", "--ipip": destination.method = .tunnel
                case "-m", "--masquerading": destination.method = .masquerade
                case "-w", "--weight": destination.weight = Int32(try next()) ?? -1
                case "-x", "--u-threshold": destination.upper = UInt32(try next()) ?? 0
                case "-y", "--l-threshold": destination.lower = UInt32(try next()) ?? 0
                case "--tun-type":
                    guard try next() == "ipip" else { throw ParseError(line: line, reason: "tunnel type") }
                default: throw ParseError(line: line, reason: "unknown option \(token)")
                }
            }
            if let mark { key = .firewallMark(mark, family) }
            guard let key else { throw ParseError(line: line, reason: "no service") }
            switch command {
            case "-A":
                let virtual = VirtualService(
                    key: key, scheduler: service.scheduler, flags: service.flags, timeout: service.timeout,
                    netmask: service.netmask)
                table[key] = ServiceEntry(service: virtual)
            case "-a":
                guard let address = destination.address else { throw ParseError(line: line, reason: "no real server") }
                guard table[key] != nil else { throw ParseError(line: line, reason: "destination before its service") }
                table[key]!.destinations.append(
                    Destination(
                        address: address, forwarding: destination.method, weight: destination.weight,
                        upperThreshold: destination.upper, lowerThreshold: destination.lower))
            default: throw ParseError(line: line, reason: "unknown command \(command ?? "")")
            }
        }
        return table
    }

    /// Writes entries as `ipvsadm -R` input.
    static func render(_ entries: [ServiceEntry]) -> String {
        var lines: [String] = []
        for entry in entries {
            let service = entry.service
            let selector: String
            switch service.key {
            case .inet(.tcp, let socket): selector = "-t \(socket)"
            case .inet(.udp, let socket): selector = "-u \(socket)"
            case .inet(.sctp, let socket): selector = "--sctp-service \(socket)"
            case .firewallMark(let mark, let family): selector = "-f \(mark)" + (family == .inet6 ? " -6" : "")
            }
            var line = "-A \(selector) -s \(service.scheduler)"
            if service.flags.contains(.persistent) {
                line += " -p \(service.timeout)"
                let mask = service.key.family == .inet ? (IPAddress(bytes: IPVSAdmRules.bytes(service.netmask))?.description ?? "") : "\(service.netmask)"
                line += " -M \(mask)"
            }
            if service.flags.contains(.onePacket) { line += " -o" }
            var schedulerFlags: [String] = []
            if service.flags.contains(.shFallback) { schedulerFlags.append("flag-1") }
            if service.flags.contains(.shPort) { schedulerFlags.append("flag-2") }
            if service.flags.contains(.schedulerFlag3) { schedulerFlags.append("flag-3") }
            if !schedulerFlags.isEmpty { line += " -b " + schedulerFlags.joined(separator: ",") }
            lines.append(line)
            for destination in entry.destinations {
                let method = switch destination.forwarding {
                case .masquerade: "-m"
                case .tunnel: "-i"
                case .directRoute, .local: "-g"
                }
                var line = "-a \(selector) -r \(destination.address) \(method) -w \(destination.weight)"
                if destination.upperThreshold != 0 { line += " -x \(destination.upperThreshold)" }
                if destination.lowerThreshold != 0 { line += " -y \(destination.lowerThreshold)" }
                lines.append(line)
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func bytes(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }
}

/// An entry as far as configuration goes (no stats), with destinations sorted, for comparisons.
struct ComparableEntry: Hashable, CustomStringConvertible {
    var key: ServiceKey
    var scheduler: Scheduler
    var flags: ServiceFlags
    var timeout: UInt32
    var netmask: UInt32
    var destinations: [String]

    init(_ entry: ServiceEntry) {
        key = entry.service.key
        scheduler = entry.service.scheduler
        flags = entry.service.flags.intersection(.configurable)
        let persistent = flags.contains(.persistent)
        timeout = persistent ? entry.service.timeout : 0
        netmask = persistent ? entry.service.netmask : 0
        destinations = entry.destinations.map {
            "\($0.address) \($0.forwarding) w=\($0.weight) x=\($0.upperThreshold) y=\($0.lowerThreshold)"
        }.sorted()
    }

    var description: String {
        "\(key) \(scheduler) [\(flags)] p=\(timeout)/\(netmask) \(destinations)"
    }
}

func comparable(_ entries: some Sequence<ServiceEntry>) -> [ServiceKey: ComparableEntry] {
    Dictionary(uniqueKeysWithValues: entries.map { ($0.service.key, ComparableEntry($0)) })
}
