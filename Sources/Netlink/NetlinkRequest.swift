import CLibmnl

/// Writes one netlink request that libmnl lays out in a buffer a `NetlinkBatch` owns: the fixed
/// header after `nlmsghdr` and the attributes. Every attribute is checked against the room left in
/// the buffer (an attribute that does not fit is left out); the pointers never leave the closure
/// that gets the writer.
public struct NetlinkMessageWriter {
    let header: UnsafeMutablePointer<nlmsghdr>
    /// Bytes from `header` to the end of the buffer.
    let capacity: Int

    /// Sets the message type and adds flags to the ones the socket set (NLM_F_REQUEST, NLM_F_ACK or
    /// NLM_F_DUMP). Requests of a batch set their type here; `request` and `dump` take it as an argument.
    public func setType(_ type: UInt16, addingFlags flags: UInt16 = 0) {
        header.pointee.nlmsg_type = type
        header.pointee.nlmsg_flags |= flags
    }

    /// The fixed header after nlmsghdr (genlmsghdr, ifinfomsg, ifaddrmsg, nfgenmsg), zeroed.
    public func fixedHeader<Header>(_ type: Header.Type) -> UnsafeMutablePointer<Header> {
        mnl_nlmsg_put_extra_header(header, MemoryLayout<Header>.size)!.bindMemory(to: Header.self, capacity: 1)
    }

    /// The generic netlink header of a request to a family (whose id is the message type).
    public func genericNetlinkHeader(command: UInt8, version: UInt8 = 1) {
        let genl = fixedHeader(genlmsghdr.self)
        genl.pointee.cmd = command
        genl.pointee.version = version
    }

    public func put(_ type: UInt16, uint16 value: UInt16) { _ = mnl_attr_put_u16_check(header, capacity, type, value) }
    public func put(_ type: UInt16, uint32 value: UInt32) { _ = mnl_attr_put_u32_check(header, capacity, type, value) }

    public func put(_ type: UInt16, bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { raw in mnl_attr_put_check(header, capacity, type, raw.count, raw.baseAddress) }
    }

    /// A NUL-terminated string.
    public func put(_ type: UInt16, string: String) {
        _ = string.withCString { mnl_attr_put_strz_check(header, capacity, type, $0) }
    }

    public func nest(_ type: UInt16, _ body: (NetlinkMessageWriter) -> Void) {
        guard let start = mnl_attr_nest_start_check(header, capacity, type) else { return }
        body(self)
        mnl_attr_nest_end(header, start)
    }
}

/// Netlink requests laid out back to back (libmnl's batch), to be sent with one sendto.
public final class NetlinkBatch {
    /// Largest datagram sent at once; the kernel takes one up to the socket's send buffer.
    public let limit: Int
    private let buffer: UnsafeMutableRawPointer
    private let batch: OpaquePointer
    private var pending: UInt32?

    /// The sequence numbers of the messages in the batch, in order.
    public private(set) var sequences: [UInt32] = []

    public init(limit: Int = 64 * 1024) {
        self.limit = limit
        // libmnl wants twice the limit: the message that overflows is written past it, then moved.
        buffer = UnsafeMutableRawPointer.allocate(byteCount: 2 * limit, alignment: 8)
        batch = mnl_nlmsg_batch_start(buffer, limit)
    }

    deinit {
        mnl_nlmsg_batch_stop(batch)
        buffer.deallocate()
    }

    public var isEmpty: Bool { sequences.isEmpty }

    /// Appends one request. Returns false when the batch is full: the message is then held back,
    /// and after `reset` it is the first one of the next batch.
    @discardableResult
    public func append(type: UInt16, flags: UInt16, sequence: UInt32, _ body: (NetlinkMessageWriter) -> Void) -> Bool {
        let current = mnl_nlmsg_batch_current(batch)!
        let header = mnl_nlmsg_put_header(current)!
        header.pointee.nlmsg_type = type
        header.pointee.nlmsg_flags = flags
        header.pointee.nlmsg_seq = sequence
        body(NetlinkMessageWriter(header: header, capacity: 2 * limit - buffer.distance(to: current)))
        if mnl_nlmsg_batch_next(batch) {
            sequences.append(sequence)
            return true
        }
        pending = sequence
        return false
    }

    /// The bytes to send: every message appended and accepted since the last reset.
    public func withBytes<R, Failure: Error>(_ body: (UnsafeRawBufferPointer) throws(Failure) -> R) throws(Failure) -> R {
        try body(UnsafeRawBufferPointer(start: mnl_nlmsg_batch_head(batch), count: mnl_nlmsg_batch_size(batch)))
    }

    /// Empties the batch, keeping a held-back message as its first one.
    public func reset() {
        mnl_nlmsg_batch_reset(batch)
        sequences.removeAll(keepingCapacity: true)
        if let pending {
            sequences.append(pending)
            self.pending = nil
        }
    }
}
