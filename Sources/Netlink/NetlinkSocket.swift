import CLibmnl

/// A netlink socket (libmnl) and the three exchanges every client of the agent needs: one request
/// and its ack, a dump, and a batch of requests with one ack each. Generic netlink (IPVS), rtnetlink
/// (the node's interface) and nfnetlink (the hairpin ipset) all go through it, with the same rules:
///
/// - Every reply is copied into Swift values and read by the checked parser; a datagram that does
///   not parse is `NetlinkError.malformed`, never a read past its end.
/// - Only messages for this socket (or from the kernel's port 0) and the request's sequence count.
/// - NLMSG_OVERRUN (the kernel lost messages for this socket) is `NetlinkError.overrun`.
/// - A dump whose messages carry NLM_F_DUMP_INTR (the table changed while the kernel walked it) is
///   read to its end and asked again, up to `dumpAttempts` times in all, then
///   `NetlinkError.dumpInterrupted`: a caller never gets an inconsistent dump.
/// - A receive waits at most the socket's timeout: a lost reply is an error (EAGAIN), never a hang.
///
/// The socket lives in the network namespace of the thread that opened it. Not thread-safe: a
/// client keeps it behind a lock.
public final class NetlinkSocket {
    /// Dumps read in all before an inconsistent one is an error.
    public static let dumpAttempts = 4
    /// Largest request `request` and `dump` send.
    static let requestLimit = 16 * 1024

    /// One message the kernel sent; parsing it throws `NetlinkError.malformed`.
    public typealias Message = ParsedNetlinkMessage<NetlinkError>

    public let portID: UInt32
    private let socket: OpaquePointer
    private var receiveBuffer: [UInt8]
    private var ackBuffer: [UInt8] = []
    private var ackLengths: [Int32] = []
    private var nextSequence: UInt32

    /// Opens and binds the socket (`NETLINK_GENERIC`, `NETLINK_ROUTE`, `NETLINK_NETFILTER`).
    /// - Parameters:
    ///   - receiveBufferBytes: the kernel's receive buffer: the acks of a whole datagram of requests
    ///     wait there until they are read (each takes an skb of about 1 KiB however small).
    ///   - receiveTimeoutMilliseconds: how long a receive waits for a reply.
    ///   - replyBufferBytes: the largest datagram of replies read (the kernel fills at most 32 KiB
    ///     per dump skb).
    public init(
        protocol netlinkProtocol: Int32, receiveBufferBytes: Int32 = 1 << 20, receiveTimeoutMilliseconds: Int32 = 10_000,
        replyBufferBytes: Int = 64 * 1024
    ) throws(NetlinkError) {
        guard let socket = mnl_socket_open(netlinkProtocol) else {
            throw .system(call: "socket(\(Self.name(of: netlinkProtocol)))", errno: canary_errno())
        }
        guard mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let code = canary_errno()
            mnl_socket_close(socket)
            throw .system(call: "bind", errno: code)
        }
        self.socket = socket
        portID = mnl_socket_get_portid(socket)
        let fd = mnl_socket_get_fd(socket)
        _ = canary_set_rcvbuf(fd, receiveBufferBytes)
        // Acks without the echoed request, and with the kernel's error text where it has one.
        _ = canary_set_netlink_opt(fd, NETLINK_CAP_ACK, 1)
        _ = canary_set_netlink_opt(fd, NETLINK_EXT_ACK, 1)
        _ = canary_set_receive_timeout(fd, receiveTimeoutMilliseconds)
        receiveBuffer = [UInt8](repeating: 0, count: replyBufferBytes)
        nextSequence = UInt32(truncatingIfNeeded: UInt64(portID) &* 2_654_435_761)
    }

    deinit { mnl_socket_close(socket) }

    private static func name(of netlinkProtocol: Int32) -> String {
        switch netlinkProtocol {
        case NETLINK_ROUTE: "NETLINK_ROUTE"
        case NETLINK_GENERIC: "NETLINK_GENERIC"
        case NETLINK_NETFILTER: "NETLINK_NETFILTER"
        default: "netlink protocol \(netlinkProtocol)"
        }
    }

    // MARK: - Exchanges

    /// Sends one request with NLM_F_ACK and returns the replies that come before its ack (a GET's
    /// one object); an error ack throws `.kernel`.
    public func request(type: UInt16, flags: UInt16 = 0, _ build: (NetlinkMessageWriter) -> Void = { _ in }) throws(NetlinkError) -> [Message] {
        try exchange(type: type, flags: UInt16(NLM_F_REQUEST | NLM_F_ACK) | flags, dump: false, build).replies
    }

    /// Sends a dump request and returns every message before NLMSG_DONE; an error (in an ack or in
    /// DONE) throws `.kernel`. An inconsistent dump is asked again (see the type's rules).
    public func dump(type: UInt16, flags: UInt16 = 0, _ build: (NetlinkMessageWriter) -> Void = { _ in }) throws(NetlinkError) -> [Message] {
        for _ in 1...Self.dumpAttempts {
            let (replies, interrupted) = try exchange(type: type, flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP) | flags, dump: true, build)
            if !interrupted { return replies }
        }
        throw .dumpInterrupted(attempts: Self.dumpAttempts)
    }

    /// Sends `count` requests with NLM_F_ACK, as many per datagram as fit `datagramBytes`, and reads
    /// every ack (many datagrams per recvmmsg, a success parsed in place): one result per request, in
    /// order, so one refusal (`.kernel`) hides none of the others. `write` lays out request `index`
    /// and sets its type (`NetlinkMessageWriter.setType`). A datagram's acks are all read before the
    /// next one is sent, so they always fit the receive buffer. A socket failure ends the batch: the
    /// requests of that datagram still unanswered and every one not yet sent fail with it.
    public func acknowledgedBatch(
        count: Int, datagramBytes: Int, _ write: (_ index: Int, _ message: NetlinkMessageWriter) -> Void
    ) -> [Result<Void, NetlinkError>] {
        guard count > 0 else { return [] }
        var results = [Result<Void, NetlinkError>?](repeating: nil, count: count)
        let first = reserveSequences(count)
        let batch = NetlinkBatch(limit: datagramBytes)
        let flags = UInt16(NLM_F_REQUEST | NLM_F_ACK)
        var next = 0
        var failure: NetlinkError?
        while failure == nil, next < count || !batch.isEmpty {
            while next < count {
                let index = next
                next += 1
                // A request that does not fit is held back: it starts the next datagram.
                guard batch.append(type: 0, flags: flags, sequence: first &+ UInt32(index), { write(index, $0) }) else { break }
            }
            do throws(NetlinkError) {
                if let batchFirst = batch.sequences.first {
                    try batch.withBytes { bytes throws(NetlinkError) in try send(bytes) }
                    try collectAcknowledgements(first: first, batchFirst: batchFirst, batchCount: batch.sequences.count, into: &results)
                }
            } catch {
                failure = error
            }
            batch.reset()
        }
        let missing = failure ?? .system(call: "recv (ack missing)", errno: EPROTO)
        return results.map { $0 ?? .failure(missing) }
    }

    // MARK: - Internals

    /// Sequence numbers for `count` requests.
    private func reserveSequences(_ count: Int) -> UInt32 {
        let first = nextSequence
        nextSequence &+= UInt32(count)
        return first
    }

    /// One request and what answers it: the replies, and whether any was marked NLM_F_DUMP_INTR.
    private func exchange(
        type: UInt16, flags: UInt16, dump: Bool, _ build: (NetlinkMessageWriter) -> Void
    ) throws(NetlinkError) -> (replies: [Message], interrupted: Bool) {
        let sequence = reserveSequences(1)
        let batch = NetlinkBatch(limit: Self.requestLimit)
        batch.append(type: type, flags: flags, sequence: sequence, build)
        try batch.withBytes { bytes throws(NetlinkError) in try send(bytes) }
        var replies: [Message] = []
        var interrupted = false
        while true {
            for message in try receive() where message.sequence == sequence {
                if message.flags & UInt16(NLM_F_DUMP_INTR) != 0 { interrupted = true }
                switch Int32(message.type) {
                case NLMSG_ERROR:
                    let ack = try NetlinkAcknowledgement(message)
                    if ack.errorCode != 0 { throw .kernel(errno: ack.errorCode, message: ack.message) }
                    if !dump { return (replies, interrupted) }
                case NLMSG_DONE:
                    // A dump ends with DONE carrying an int error (0 when it went well).
                    if message.payload.count >= 4 {
                        let code = -Int32(bitPattern: readUInt32(message.payload[...], at: 0))
                        if code > 0 { throw .kernel(errno: code, message: nil) }
                    }
                    return (replies, interrupted)
                case NLMSG_NOOP:
                    continue
                case NLMSG_OVERRUN:
                    throw .overrun
                default:
                    replies.append(message)
                }
            }
        }
    }

    private func send(_ bytes: UnsafeRawBufferPointer) throws(NetlinkError) {
        let sent = mnl_socket_sendto(socket, bytes.baseAddress, bytes.count)
        guard sent == bytes.count else { throw .system(call: "sendto", errno: sent < 0 ? canary_errno() : EMSGSIZE) }
    }

    /// Reads one datagram and splits it into the messages addressed to this socket.
    private func receive() throws(NetlinkError) -> [Message] {
        let count = receiveBuffer.withUnsafeMutableBytes { raw in
            mnl_socket_recvfrom(socket, raw.baseAddress, raw.count)
        }
        guard count >= 0 else {
            let code = canary_errno()
            throw .system(call: code == EAGAIN || code == EWOULDBLOCK ? "recv (timed out)" : "recv", errno: code)
        }
        return try Message.split(receiveBuffer[0..<count]).filter { $0.portID == portID || $0.portID == 0 }
    }

    /// Reads acks until every request of one datagram (`batchCount` consecutive sequences from
    /// `batchFirst`) has its result; acks of other sequences, or seen already, are skipped.
    private func collectAcknowledgements(
        first: UInt32, batchFirst: UInt32, batchCount: Int, into results: inout [Result<Void, NetlinkError>?]
    ) throws(NetlinkError) {
        var waiting = batchCount
        while waiting > 0 {
            try receiveAcknowledgements { sequence, ack in
                guard Int(sequence &- batchFirst) < batchCount else { return }
                let index = Int(sequence &- first)
                guard results[index] == nil else { return }
                waiting -= 1
                if let ack, ack.errorCode != 0 {
                    results[index] = .failure(.kernel(errno: ack.errorCode, message: ack.message))
                } else {
                    results[index] = .success(())
                }
            }
        }
    }

    /// Reads acks many datagrams per system call (recvmmsg) and parses them in place (see
    /// `acknowledgements(in:portID:_:)`). Returns after one call's datagrams.
    private func receiveAcknowledgements(_ handle: (UInt32, NetlinkAcknowledgement?) throws(NetlinkError) -> Void) throws(NetlinkError) {
        let slotSize = Self.acknowledgementSlotSize
        if ackBuffer.isEmpty {
            ackBuffer = [UInt8](repeating: 0, count: Self.acknowledgementSlots * slotSize)
            ackLengths = [Int32](repeating: 0, count: Self.acknowledgementSlots)
        }
        let count = ackBuffer.withUnsafeMutableBytes { raw in
            ackLengths.withUnsafeMutableBufferPointer { lengths in
                canary_receive_many(
                    mnl_socket_get_fd(socket), raw.baseAddress, Int32(slotSize), Int32(lengths.count), lengths.baseAddress)
            }
        }
        guard count >= 0 else {
            let code = -count
            throw .system(call: code == EAGAIN || code == EWOULDBLOCK ? "recvmmsg (timed out)" : "recvmmsg", errno: code)
        }
        for slot in 0..<Int(count) {
            let length = Int(ackLengths[slot])
            guard length >= 0 else { throw .malformed("a datagram larger than \(slotSize) bytes among acks") }
            let start = slot * slotSize
            try Self.acknowledgements(in: ackBuffer[start..<(start + length)], portID: portID, handle)
        }
    }

    /// The NLMSG_ERROR messages of one datagram addressed to `portID` (or the kernel's 0), parsed in
    /// place: `handle` gets each one's sequence, with nil for a success (no copy, no allocation) and
    /// the parsed error otherwise. Every length is checked against the datagram first. The fuzz
    /// target (Tests/fuzz) calls this on arbitrary bytes.
    public static func acknowledgements(
        in datagram: ArraySlice<UInt8>, portID: UInt32, _ handle: (UInt32, NetlinkAcknowledgement?) throws(NetlinkError) -> Void
    ) throws(NetlinkError) {
        var offset = datagram.startIndex
        while datagram.endIndex - offset >= Message.headerLength {
            let messageLength = Int(readUInt32(datagram, at: offset))
            guard messageLength >= Message.headerLength, messageLength <= datagram.endIndex - offset else {
                throw .malformed("message length \(messageLength) with \(datagram.endIndex - offset) bytes left")
            }
            let type = readUInt16(datagram, at: offset + 4)
            let port = readUInt32(datagram, at: offset + 12)
            if Int32(type) == NLMSG_ERROR, port == portID || port == 0 {
                guard messageLength >= Message.headerLength + 4 else {
                    throw .malformed("error message of \(messageLength) bytes")
                }
                let sequence = readUInt32(datagram, at: offset + 8)
                if readUInt32(datagram, at: offset + Message.headerLength) == 0 {
                    try handle(sequence, nil)
                } else {
                    let message = try Message.split(datagram[offset..<(offset + messageLength)])[0]
                    try handle(sequence, try NetlinkAcknowledgement(message))
                }
            }
            offset += align4(messageLength)
        }
    }

    /// Room for one ack datagram (36 bytes with NETLINK_CAP_ACK; an extended ack's text is short).
    static let acknowledgementSlotSize = 4096
    /// Ack datagrams read per recvmmsg.
    static let acknowledgementSlots = 64
}

extension Array where Element == Result<Void, NetlinkError> {
    /// The first failure of a batch that is not the kernel's answer to its request (the socket
    /// failed, so the requests after it were not sent): for callers that report the whole batch
    /// as failed then.
    public var socketFailure: NetlinkError? {
        for case .failure(let failure) in self {
            if case .kernel = failure { continue }
            return failure
        }
        return nil
    }
}
