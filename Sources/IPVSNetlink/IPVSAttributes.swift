import Netlink
import CLibmnl
import IPVS

/// IPVS generic netlink numbers, from <linux/ip_vs.h>.
enum IPVSCommand: UInt8 {
    case newService = 1, setService, deleteService, getService
    case newDestination, setDestination, deleteDestination, getDestination
    case setConfig = 12, getConfig, setInfo, getInfo, zero, flush
}

enum CommandAttribute {
    static let service: UInt16 = 1
    static let destination: UInt16 = 2
    static let timeoutTCP: UInt16 = 4
    static let timeoutTCPFin: UInt16 = 5
    static let timeoutUDP: UInt16 = 6
}

enum ServiceAttribute {
    static let family: UInt16 = 1
    static let `protocol`: UInt16 = 2
    static let address: UInt16 = 3
    static let port: UInt16 = 4
    static let firewallMark: UInt16 = 5
    static let schedulerName: UInt16 = 6
    static let flags: UInt16 = 7
    static let timeout: UInt16 = 8
    static let netmask: UInt16 = 9
    static let stats: UInt16 = 10
    static let persistenceEngine: UInt16 = 11
    static let stats64: UInt16 = 12
}

enum DestinationAttribute {
    static let address: UInt16 = 1
    static let port: UInt16 = 2
    static let forwardingMethod: UInt16 = 3
    static let weight: UInt16 = 4
    static let upperThreshold: UInt16 = 5
    static let lowerThreshold: UInt16 = 6
    static let activeConnections: UInt16 = 7
    static let inactiveConnections: UInt16 = 8
    static let persistentConnections: UInt16 = 9
    static let stats: UInt16 = 10
    static let addressFamily: UInt16 = 11
    static let stats64: UInt16 = 12
}

enum StatsAttribute {
    static let connections: UInt16 = 1
    static let inPackets: UInt16 = 2
    static let outPackets: UInt16 = 3
    static let inBytes: UInt16 = 4
    static let outBytes: UInt16 = 5
    static let connectionsPerSecond: UInt16 = 6
    static let inPacketsPerSecond: UInt16 = 7
    static let outPacketsPerSecond: UInt16 = 8
    static let inBytesPerSecond: UInt16 = 9
    static let outBytesPerSecond: UInt16 = 10
}

enum InfoAttribute {
    static let version: UInt16 = 1
    static let connectionTableSize: UInt16 = 2
}

// MARK: - Decoding: kernel attributes → Swift values

enum IPVSDecoder {
    /// A service from the payload of an IPVS_CMD_NEW_SERVICE dump message (after the genl header).
    static func service(fromMessagePayload payload: ArraySlice<UInt8>) throws(IPVSError) -> VirtualService {
        let top = try NetlinkAttributes(payload)
        guard let attributes = try top.nested(CommandAttribute.service) else {
            throw .malformedMessage("service message without IPVS_CMD_ATTR_SERVICE")
        }
        return try service(from: attributes)
    }

    static func service(from attributes: NetlinkAttributes) throws(IPVSError) -> VirtualService {
        let familyValue = try attributes.requiredUInt16(ServiceAttribute.family, "service address family")
        guard let family = IPAddress.Family(kernelValue: familyValue) else {
            throw .malformedMessage("service address family \(familyValue)")
        }
        let key: ServiceKey
        if let mark = try attributes.uint32(ServiceAttribute.firewallMark), mark != 0 {
            key = .firewallMark(mark, family)
        } else {
            let protocolValue = try attributes.requiredUInt16(ServiceAttribute.protocol, "service protocol")
            guard let proto = IPProtocol(rawValue: protocolValue) else {
                throw .malformedMessage("service protocol \(protocolValue)")
            }
            let address = try self.address(attributes.bytes(ServiceAttribute.address), family: family, "service address")
            let port = try attributes.requiredUInt16(ServiceAttribute.port, "service port")
            key = .inet(proto, SocketAddress(address: address, port: UInt16(bigEndian: port)))
        }
        guard let scheduler = attributes.string(ServiceAttribute.schedulerName) else {
            throw .malformedMessage("service \(key) without scheduler")
        }
        guard let flagBytes = attributes.bytes(ServiceAttribute.flags), flagBytes.count == 8 else {
            throw .malformedMessage("service \(key): flags are not 8 bytes")
        }
        let flags = ServiceFlags(rawValue: readUInt32(flagBytes[...], at: 0))
        let timeout = try attributes.requiredUInt32(ServiceAttribute.timeout, "service timeout")
        let rawNetmask = try attributes.requiredUInt32(ServiceAttribute.netmask, "service netmask")
        let netmask = family == .inet ? UInt32(bigEndian: rawNetmask) : rawNetmask
        return VirtualService(
            key: key, scheduler: Scheduler(rawValue: scheduler), flags: flags, timeout: timeout, netmask: netmask,
            stats: try stats(attributes, stats64: ServiceAttribute.stats64, stats32: ServiceAttribute.stats))
    }

    /// A destination from the payload of an IPVS_CMD_NEW_DEST dump message.
    static func destination(
        fromMessagePayload payload: ArraySlice<UInt8>, serviceFamily: IPAddress.Family
    ) throws(IPVSError) -> Destination {
        let top = try NetlinkAttributes(payload)
        guard let attributes = try top.nested(CommandAttribute.destination) else {
            throw .malformedMessage("destination message without IPVS_CMD_ATTR_DEST")
        }
        var family = serviceFamily
        if let value = try attributes.uint16(DestinationAttribute.addressFamily) {
            guard let parsed = IPAddress.Family(kernelValue: value) else {
                throw .malformedMessage("destination address family \(value)")
            }
            family = parsed
        }
        let address = try self.address(attributes.bytes(DestinationAttribute.address), family: family, "destination address")
        let port = UInt16(bigEndian: try attributes.requiredUInt16(DestinationAttribute.port, "destination port"))
        let methodValue = try attributes.requiredUInt32(DestinationAttribute.forwardingMethod, "forwarding method") & 0x7
        guard let method = ForwardingMethod(rawValue: methodValue) else {
            throw .malformedMessage("destination forwarding method \(methodValue)")
        }
        var stats = DestinationStats()
        stats.activeConnections = try attributes.uint32(DestinationAttribute.activeConnections) ?? 0
        stats.inactiveConnections = try attributes.uint32(DestinationAttribute.inactiveConnections) ?? 0
        stats.persistentConnections = try attributes.uint32(DestinationAttribute.persistentConnections) ?? 0
        stats.traffic =
            try self.stats(attributes, stats64: DestinationAttribute.stats64, stats32: DestinationAttribute.stats)
            ?? TrafficStats()
        return Destination(
            address: SocketAddress(address: address, port: port), forwarding: method,
            weight: Int32(bitPattern: try attributes.requiredUInt32(DestinationAttribute.weight, "weight")),
            upperThreshold: try attributes.uint32(DestinationAttribute.upperThreshold) ?? 0,
            lowerThreshold: try attributes.uint32(DestinationAttribute.lowerThreshold) ?? 0,
            stats: stats)
    }

    /// The kernel sends a 16-byte union nf_inet_addr; IPv4 is its first four bytes.
    static func address(_ bytes: [UInt8]?, family: IPAddress.Family, _ what: String) throws(IPVSError) -> IPAddress {
        guard let bytes else { throw .malformedMessage("\(what) missing") }
        let needed = family == .inet ? 4 : 16
        guard bytes.count >= needed, let address = IPAddress(bytes: bytes.prefix(needed)) else {
            throw .malformedMessage("\(what): \(bytes.count) bytes for \(family)")
        }
        return address
    }

    /// Prefers the 64-bit counters (kernel 4.x+), falls back to the 32-bit set.
    static func stats(_ attributes: NetlinkAttributes, stats64: UInt16, stats32: UInt16) throws(IPVSError) -> TrafficStats? {
        if let nested = try attributes.nested(stats64) {
            func value(_ type: UInt16) throws(IPVSError) -> UInt64 { try nested.uint64(type) ?? 0 }
            return try trafficStats(value)
        }
        if let nested = try attributes.nested(stats32) {
            // In the 32-bit set the byte counters are u64 and the rest u32.
            func value(_ type: UInt16) throws(IPVSError) -> UInt64 {
                if type == StatsAttribute.inBytes || type == StatsAttribute.outBytes { return try nested.uint64(type) ?? 0 }
                return UInt64(try nested.uint32(type) ?? 0)
            }
            return try trafficStats(value)
        }
        return nil
    }

    private static func trafficStats(_ value: (UInt16) throws(IPVSError) -> UInt64) throws(IPVSError) -> TrafficStats {
        var stats = TrafficStats()
        stats.connections = try value(StatsAttribute.connections)
        stats.inPackets = try value(StatsAttribute.inPackets)
        stats.outPackets = try value(StatsAttribute.outPackets)
        stats.inBytes = try value(StatsAttribute.inBytes)
        stats.outBytes = try value(StatsAttribute.outBytes)
        stats.connectionsPerSecond = try value(StatsAttribute.connectionsPerSecond)
        stats.inPacketsPerSecond = try value(StatsAttribute.inPacketsPerSecond)
        stats.outPacketsPerSecond = try value(StatsAttribute.outPacketsPerSecond)
        stats.inBytesPerSecond = try value(StatsAttribute.inBytesPerSecond)
        stats.outBytesPerSecond = try value(StatsAttribute.outBytesPerSecond)
        return stats
    }
}
