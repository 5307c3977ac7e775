import NetlinkMessages
import CLibmnl
import CLibnlGenl
import IPVS

/// A generic netlink socket (libmnl) that sends requests and reads what comes back,
/// copying every datagram into Swift arrays before it is parsed.
final class GenericNetlinkSocket {
    private let socket: OpaquePointer
    let portID: UInt32
    private var receiveBuffer: [UInt8]
    private var ackBuffer: [UInt8]
    private var ackLengths: [Int32]
    private var nextSequence: UInt32

    /// Opens and binds the socket. Replies are read with a timeout so that a lost one never hangs the caller.
    init(receiveBufferBytes: Int32 = 8 << 20, receiveTimeoutMilliseconds: Int32 = 15_000) throws(IPVSError) {
        guard let socket = mnl_socket_open(NETLINK_GENERIC) else {
            throw .socket(call: "socket", errno: canary_errno())
        }
        guard mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let code = canary_errno()
            mnl_socket_close(socket)
            throw .socket(call: "bind", errno: code)
        }
        self.socket = socket
        portID = mnl_socket_get_portid(socket)
        let fd = mnl_socket_get_fd(socket)
        // Acks of a whole batch wait in the receive buffer until they are read: make room for them.
        _ = canary_set_rcvbuf(fd, receiveBufferBytes)
        // Acks without the echoed request, and with the kernel's error text where it has one.
        _ = canary_set_netlink_opt(fd, NETLINK_CAP_ACK, 1)
        _ = canary_set_netlink_opt(fd, NETLINK_EXT_ACK, 1)
        _ = canary_set_receive_timeout(fd, receiveTimeoutMilliseconds)
        receiveBuffer = [UInt8](repeating: 0, count: 256 * 1024)
        ackBuffer = [UInt8](repeating: 0, count: 64 * Self.acknowledgementSlotSize)
        ackLengths = [Int32](repeating: 0, count: 64)
        nextSequence = UInt32(truncatingIfNeeded: UInt64(portID) &* 2_654_435_761)
    }

    deinit { mnl_socket_close(socket) }

    /// Sequence numbers for `count` requests.
    func reserveSequences(_ count: Int) -> UInt32 {
        let first = nextSequence
        nextSequence &+= UInt32(count)
        return first
    }

    func send(_ bytes: UnsafeRawBufferPointer) throws(IPVSError) {
        let sent = mnl_socket_sendto(socket, bytes.baseAddress, bytes.count)
        guard sent == bytes.count else { throw .socket(call: "sendto", errno: sent < 0 ? canary_errno() : EMSGSIZE) }
    }

    /// Reads one datagram and splits it into messages addressed to this socket.
    func receive() throws(IPVSError) -> [NetlinkMessage] {
        let count = receiveBuffer.withUnsafeMutableBytes { raw in
            mnl_socket_recvfrom(socket, raw.baseAddress, raw.count)
        }
        guard count >= 0 else {
            let code = canary_errno()
            throw .socket(call: code == EAGAIN || code == EWOULDBLOCK ? "recv (timed out)" : "recv", errno: code)
        }
        return try NetlinkMessage.split(receiveBuffer[0..<count]).filter { $0.portID == portID || $0.portID == 0 }
    }

    /// Reads acks many datagrams per system call (recvmmsg) and parses them in place: a success
    /// costs no copy and no allocation; an error is copied out and parsed whole (its extended-ack
    /// text). `handle` gets the sequence of each NLMSG_ERROR message addressed to this socket, with
    /// nil for a success. Returns after one call's datagrams; callers loop until they have theirs.
    func receiveAcknowledgements(_ handle: (UInt32, NetlinkAcknowledgement?) throws(IPVSError) -> Void) throws(IPVSError) {
        let slotSize = Self.acknowledgementSlotSize
        let count = ackBuffer.withUnsafeMutableBytes { raw in
            ackLengths.withUnsafeMutableBufferPointer { lengths in
                canary_receive_many(
                    mnl_socket_get_fd(socket), raw.baseAddress, Int32(slotSize), Int32(lengths.count), lengths.baseAddress)
            }
        }
        guard count >= 0 else {
            let code = -count
            throw .socket(call: code == EAGAIN || code == EWOULDBLOCK ? "recvmmsg (timed out)" : "recvmmsg", errno: code)
        }
        for slot in 0..<Int(count) {
            let length = Int(ackLengths[slot])
            guard length >= 0 else { throw .malformedMessage("a datagram larger than \(slotSize) bytes among acks") }
            let start = slot * slotSize
            try Self.acknowledgements(in: ackBuffer[start..<(start + length)], portID: portID, handle)
        }
    }

    /// The NLMSG_ERROR messages of one datagram addressed to `portID` (or the kernel's 0), parsed in
    /// place: `handle` gets each one's sequence, with nil for a success (no copy, no allocation) and
    /// the parsed error otherwise. Every length is checked against the datagram first.
    static func acknowledgements(
        in datagram: ArraySlice<UInt8>, portID: UInt32, _ handle: (UInt32, NetlinkAcknowledgement?) throws(IPVSError) -> Void
    ) throws(IPVSError) {
        var offset = datagram.startIndex
        while datagram.endIndex - offset >= NetlinkMessage.headerLength {
            let messageLength = Int(readUInt32(datagram, at: offset))
            guard messageLength >= NetlinkMessage.headerLength, messageLength <= datagram.endIndex - offset else {
                throw .malformedMessage("message length \(messageLength) with \(datagram.endIndex - offset) bytes left")
            }
            let type = readUInt16(datagram, at: offset + 4)
            let port = readUInt32(datagram, at: offset + 12)
            if Int32(type) == NLMSG_ERROR, port == portID || port == 0 {
                guard messageLength >= NetlinkMessage.headerLength + 4 else {
                    throw .malformedMessage("error message of \(messageLength) bytes")
                }
                let sequence = readUInt32(datagram, at: offset + 8)
                if readUInt32(datagram, at: offset + NetlinkMessage.headerLength) == 0 {
                    try handle(sequence, nil)
                } else {
                    let message = try NetlinkMessage.split(datagram[offset..<(offset + messageLength)])[0]
                    try handle(sequence, try NetlinkAcknowledgement(message))
                }
            }
            offset += align4(messageLength)
        }
    }

    /// Room for one ack datagram (36 bytes with NETLINK_CAP_ACK; an extended ack's text is short).
    static let acknowledgementSlotSize = 4096

    /// Sends one request and reads its replies until the ack (or NLMSG_DONE for a dump).
    /// The replies' payloads are returned; an error ack throws through `error`.
    func transact(
        family: UInt16, command: UInt8, dump: Bool,
        error: (NetlinkAcknowledgement) -> IPVSError,
        _ body: (NetlinkMessageWriter) -> Void = { _ in }
    ) throws(IPVSError) -> [NetlinkMessage] {
        let sequence = reserveSequences(1)
        let batch = NetlinkBatch(limit: 16 * 1024)
        let flags = UInt16(NLM_F_REQUEST | NLM_F_ACK) | (dump ? UInt16(NLM_F_DUMP) : 0)
        batch.append(family: family, flags: flags, sequence: sequence, command: command, body)
        try batch.withBytes { bytes throws(IPVSError) in try send(bytes) }
        var replies: [NetlinkMessage] = []
        while true {
            for message in try receive() where message.sequence == sequence {
                switch Int32(message.type) {
                case NLMSG_ERROR:
                    let ack = try NetlinkAcknowledgement(message)
                    if ack.errorCode != 0 { throw error(ack) }
                    if !dump { return replies }
                case NLMSG_DONE:
                    // A dump ends with DONE carrying an int error.
                    if message.payload.count >= 4 {
                        let code = -Int32(bitPattern: readUInt32(message.payload[...], at: 0))
                        if code > 0 { throw error(NetlinkAcknowledgement(errorCode: code)) }
                    }
                    return replies
                case NLMSG_NOOP, NLMSG_OVERRUN:
                    continue
                default:
                    if message.flags & UInt16(NLM_F_DUMP_INTR) != 0 { throw .socket(call: "dump (interrupted)", errno: EINTR) }
                    replies.append(message)
                }
            }
        }
    }

    /// Resolves a generic netlink family's id by name with libnl-genl; nil when the kernel has no such family.
    static func resolveFamily(named name: String) throws(IPVSError) -> UInt16? {
        guard let socket = nl_socket_alloc() else { throw .socket(call: "nl_socket_alloc", errno: ENOMEM) }
        defer { nl_socket_free(socket) }
        let connected = genl_connect(socket)
        guard connected == 0 else {
            throw .netlinkLibrary(call: "genl_connect", message: String(cString: nl_geterror(connected)))
        }
        let id = genl_ctrl_resolve(socket, name)
        if id == -NLE_OBJ_NOTFOUND { return nil }
        guard id > 0, id <= Int32(UInt16.max) else {
            throw .netlinkLibrary(call: "genl_ctrl_resolve(\(name))", message: String(cString: nl_geterror(id)))
        }
        return UInt16(id)
    }
}
