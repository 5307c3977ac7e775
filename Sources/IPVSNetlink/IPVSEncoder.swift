import IPVS
import Netlink

/// IPVS requests in netlink attributes.
enum IPVSEncoder {
    /// The command and the attributes of one operation.
    static func command(for operation: IPVSOperation) -> IPVSCommand {
        switch operation {
        case .addService: .newService
        case .editService: .setService
        case .deleteService: .deleteService
        case .addDestination: .newDestination
        case .editDestination: .setDestination
        case .deleteDestination: .deleteDestination
        }
    }

    static func write(_ operation: IPVSOperation, into writer: NetlinkMessageWriter) {
        switch operation {
        case .addService(let service), .editService(let service):
            writer.nest(CommandAttribute.service) { putService(service, into: $0) }
        case .deleteService(let key):
            writer.nest(CommandAttribute.service) { putServiceKey(key, into: $0) }
        case .addDestination(let key, let destination), .editDestination(let key, let destination):
            writer.nest(CommandAttribute.service) { putServiceKey(key, into: $0) }
            writer.nest(CommandAttribute.destination) { putDestination(destination, into: $0) }
        case .deleteDestination(let key, let address):
            writer.nest(CommandAttribute.service) { putServiceKey(key, into: $0) }
            writer.nest(CommandAttribute.destination) { putDestinationAddress(address, into: $0) }
        }
    }

    static func putServiceKey(_ key: ServiceKey, into writer: NetlinkMessageWriter) {
        writer.put(ServiceAttribute.family, uint16: key.family.kernelValue)
        switch key {
        case .inet(let proto, let socket):
            writer.put(ServiceAttribute.protocol, uint16: proto.rawValue)
            writer.put(ServiceAttribute.address, bytes: inetAddressUnion(socket.address))
            writer.put(ServiceAttribute.port, uint16: socket.port.bigEndian)
        case .firewallMark(let mark, _):
            writer.put(ServiceAttribute.firewallMark, uint32: mark)
        }
    }

    static func putService(_ service: VirtualService, into writer: NetlinkMessageWriter) {
        putServiceKey(service.key, into: writer)
        writer.put(ServiceAttribute.schedulerName, string: service.scheduler.rawValue)
        // struct ip_vs_flags { flags; mask }: the mask says which flags we set; all of them.
        let flags = service.flags.intersection(.configurable).rawValue
        writer.put(ServiceAttribute.flags, bytes: bytes(of: flags) + bytes(of: UInt32.max))
        writer.put(ServiceAttribute.timeout, uint32: service.timeout)
        // The kernel keeps an IPv4 netmask in network order and an IPv6 prefix length as is.
        let netmask = service.key.family == .inet ? service.netmask.bigEndian : service.netmask
        writer.put(ServiceAttribute.netmask, uint32: netmask)
    }

    static func putDestination(_ destination: Destination, into writer: NetlinkMessageWriter) {
        putDestinationAddress(destination.address, into: writer)
        writer.put(DestinationAttribute.forwardingMethod, uint32: destination.forwarding.rawValue)
        writer.put(DestinationAttribute.weight, uint32: UInt32(bitPattern: destination.weight))
        writer.put(DestinationAttribute.upperThreshold, uint32: destination.upperThreshold)
        writer.put(DestinationAttribute.lowerThreshold, uint32: destination.lowerThreshold)
    }

    static func putDestinationAddress(_ address: SocketAddress, into writer: NetlinkMessageWriter) {
        writer.put(DestinationAttribute.address, bytes: inetAddressUnion(address.address))
        writer.put(DestinationAttribute.port, uint16: address.port.bigEndian)
        writer.put(DestinationAttribute.addressFamily, uint16: address.address.family.kernelValue)
    }

    /// union nf_inet_addr: 16 bytes, IPv4 in the first four.
    static func inetAddressUnion(_ address: IPAddress) -> [UInt8] {
        let raw = address.bytes
        return raw + [UInt8](repeating: 0, count: 16 - raw.count)
    }

    static func bytes(of value: UInt32) -> [UInt8] {
        withUnsafeBytes(of: value) { Array($0) }
    }
}
