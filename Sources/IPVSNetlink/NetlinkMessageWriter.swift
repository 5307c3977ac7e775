import CLibmnl
import IPVS

/// Writes attributes into one netlink message that libmnl lays out in a caller-owned buffer.
/// The buffer must have room for the whole message (the batch keeps a full page spare).
struct NetlinkMessageWriter {
    let header: UnsafeMutablePointer<nlmsghdr>

    func put(_ type: UInt16, uint16 value: UInt16) { mnl_attr_put_u16(header, type, value) }
    func put(_ type: UInt16, uint32 value: UInt32) { mnl_attr_put_u32(header, type, value) }

    func put(_ type: UInt16, bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in mnl_attr_put(header, type, raw.count, raw.baseAddress) }
    }

    /// A NUL-terminated string.
    func put(_ type: UInt16, string: String) {
        string.withCString { mnl_attr_put_strz(header, type, $0) }
    }

    func nest(_ type: UInt16, _ body: (NetlinkMessageWriter) -> Void) {
        let start = mnl_attr_nest_start(header, type)
        body(self)
        mnl_attr_nest_end(header, start)
    }
}

/// Many netlink messages laid out back to back (libmnl's batch), to be sent with one sendto.
final class NetlinkBatch {
    /// Largest datagram sent at once; the kernel takes one up to the socket's send buffer.
    let limit: Int
    private let buffer: UnsafeMutableRawPointer
    private let batch: OpaquePointer

    /// Messages in the batch, in order.
    private(set) var sequences: [UInt32] = []

    init(limit: Int = 64 * 1024) {
        self.limit = limit
        // libmnl wants twice the limit: the message that overflows is written past it, then moved.
        buffer = UnsafeMutableRawPointer.allocate(byteCount: 2 * limit, alignment: 8)
        batch = mnl_nlmsg_batch_start(buffer, limit)
    }

    deinit {
        mnl_nlmsg_batch_stop(batch)
        buffer.deallocate()
    }

    var isEmpty: Bool { sequences.isEmpty }

    /// Appends one generic netlink request. Returns false when the batch is full: the message
    /// is then held back, and after `send` and `reset` it is the first one of the next batch.
    @discardableResult
    func append(
        family: UInt16, flags: UInt16, sequence: UInt32, command: UInt8, version: UInt8 = 1,
        _ body: (NetlinkMessageWriter) -> Void
    ) -> Bool {
        let header = mnl_nlmsg_put_header(mnl_nlmsg_batch_current(batch))!
        header.pointee.nlmsg_type = family
        header.pointee.nlmsg_flags = flags
        header.pointee.nlmsg_seq = sequence
        let genl = mnl_nlmsg_put_extra_header(header, MemoryLayout<genlmsghdr>.size)!
            .assumingMemoryBound(to: genlmsghdr.self)
        genl.pointee.cmd = command
        genl.pointee.version = version
        body(NetlinkMessageWriter(header: header))
        if mnl_nlmsg_batch_next(batch) {
            sequences.append(sequence)
            return true
        }
        pending = sequence
        return false
    }

    private var pending: UInt32?

    /// The bytes to send: every message appended and accepted since the last reset.
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(IPVSError) -> R) throws(IPVSError) -> R {
        try body(UnsafeRawBufferPointer(start: mnl_nlmsg_batch_head(batch), count: mnl_nlmsg_batch_size(batch)))
    }

    /// Empties the batch, keeping a held-back message as its first one.
    func reset() {
        mnl_nlmsg_batch_reset(batch)
        sequences.removeAll(keepingCapacity: true)
        if let pending {
            sequences.append(pending)
            self.pending = nil
        }
    }
}

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
