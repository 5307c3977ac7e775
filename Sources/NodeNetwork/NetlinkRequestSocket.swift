import NetlinkMessages
import CLibmnl

/// Why an rtnetlink request failed, before it is given an operation and a subject.
enum RouteNetlinkFailure: Error, Equatable {
    /// The kernel answered with this errno.
    case kernel(Int32)
    /// A socket call failed.
    case system(call: String, errno: Int32)
    /// The kernel's answer did not parse.
    case malformed(String)

    /// The errno to report.
    var errno: Int32 {
        switch self {
        case .kernel(let code), .system(_, let code): code
        case .malformed: EBADMSG
        }
    }
}

/// Lays out one request with libmnl in a buffer this type owns; the pointers never leave `build`.
struct RouteMessageBuilder {
    let header: UnsafeMutablePointer<nlmsghdr>
    let capacity: Int

    /// The fixed header after nlmsghdr (ifinfomsg, ifaddrmsg), zeroed.
    func fixedHeader<Header>(_ type: Header.Type) -> UnsafeMutablePointer<Header> {
        mnl_nlmsg_put_extra_header(header, MemoryLayout<Header>.size)!.bindMemory(to: Header.self, capacity: 1)
    }

    /// Returns false when the attribute does not fit.
    @discardableResult
    func put(_ type: Int, bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in mnl_attr_put_check(header, capacity, UInt16(type), raw.count, raw.baseAddress) }
    }

    /// A NUL-terminated string; returns false when it does not fit.
    @discardableResult
    func put(_ type: Int, string: String) -> Bool {
        string.withCString { mnl_attr_put_strz_check(header, capacity, UInt16(type), $0) }
    }

    func nest(_ type: Int, _ body: (RouteMessageBuilder) -> Void) {
        guard let start = mnl_attr_nest_start_check(header, capacity, UInt16(type)) else { return }
        body(self)
        mnl_attr_nest_end(header, start)
    }
}

/// A netlink socket (libmnl) of the node's plumbing: NETLINK_ROUTE for the interface and its
/// addresses, NETLINK_NETFILTER for the hairpin ipset; in the network namespace of the thread that
/// opened it. It
/// sends one request at a time and copies every datagram it reads into Swift values.
final class NetlinkRequestSocket {
    private static let requestCapacity = 1024
    private let socket: OpaquePointer
    private let portID: UInt32
    private var receiveBuffer: [UInt8]
    private var nextSequence: UInt32

    init(protocol netlinkProtocol: Int32 = NETLINK_ROUTE, receiveTimeoutMilliseconds: Int32 = 10_000) throws(RouteNetlinkFailure) {
        guard let socket = mnl_socket_open(netlinkProtocol) else {
            throw .system(call: "socket(\(netlinkProtocol == NETLINK_ROUTE ? "NETLINK_ROUTE" : "NETLINK_NETFILTER"))", errno: canary_errno())
        }
        guard mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let code = canary_errno()
            mnl_socket_close(socket)
            throw .system(call: "bind", errno: code)
        }
        self.socket = socket
        portID = mnl_socket_get_portid(socket)
        let fd = mnl_socket_get_fd(socket)
        // The acks of a batch wait in the receive buffer until they are read: make room for them
        // (each takes an skb of about 1 KiB however small).
        _ = canary_set_rcvbuf(fd, 1 << 20)
        // Acks without the echoed request; a lost reply never hangs the caller.
        _ = canary_set_netlink_opt(fd, NETLINK_CAP_ACK, 1)
        _ = canary_set_receive_timeout(fd, receiveTimeoutMilliseconds)
        // Large enough for any datagram of a dump (the kernel fills at most 32 KiB per skb).
        receiveBuffer = [UInt8](repeating: 0, count: 64 * 1024)
        nextSequence = UInt32(truncatingIfNeeded: UInt64(portID) &* 2_654_435_761)
    }

    deinit { mnl_socket_close(socket) }

    /// Sends one request and reads what answers it. A plain request is sent with NLM_F_ACK and
    /// returns the replies before the ack (RTM_GETLINK's one link); an error ack throws. A dump
    /// returns every message until NLMSG_DONE, and is repeated (up to 4 times) when the kernel
    /// marks it interrupted by a concurrent change.
    func transact(
        type: Int, flags: Int32 = 0, dump: Bool = false, _ build: (RouteMessageBuilder) -> Void
    ) throws(RouteNetlinkFailure) -> [RouteMessage] {
        var attempt = 0
        while true {
            attempt += 1
            let (replies, interrupted) = try transactOnce(type: type, flags: flags, dump: dump, build)
            if !interrupted || attempt >= 4 { return replies }
        }
    }

    /// One request of a batch: its type, flags and body.
    struct BatchRequest {
        var type: Int
        var flags: Int32
        var build: (RouteMessageBuilder) -> Void
    }

    /// Sends many requests with NLM_F_ACK, as many per datagram as fit (`batchBytes`), and reads
    /// every ack: one outcome per request (nil: done), so one refusal hides none of the others.
    /// A datagram's acks are read before the next datagram is sent, so they always fit the socket's
    /// receive buffer.
    func transactBatch(_ requests: [BatchRequest], batchBytes: Int = 8 * 1024) throws(RouteNetlinkFailure) -> [RouteNetlinkFailure?] {
        var outcomes = [RouteNetlinkFailure?](repeating: nil, count: requests.count)
        var buffer = [UInt8](repeating: 0, count: batchBytes + Self.requestCapacity)
        var start = 0
        while start < requests.count {
            let firstSequence = nextSequence
            var end = start
            let length = buffer.withUnsafeMutableBytes { raw -> Int in
                var offset = 0
                while end < requests.count, offset < batchBytes {
                    let header = mnl_nlmsg_put_header(raw.baseAddress! + offset)!
                    header.pointee.nlmsg_type = UInt16(requests[end].type)
                    header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_ACK | requests[end].flags)
                    header.pointee.nlmsg_seq = firstSequence &+ UInt32(end - start)
                    requests[end].build(RouteMessageBuilder(header: header, capacity: Self.requestCapacity))
                    offset += (Int(header.pointee.nlmsg_len) + 3) & ~3
                    end += 1
                }
                return offset
            }
            nextSequence &+= UInt32(end - start)
            let sent = buffer.withUnsafeBytes { raw in mnl_socket_sendto(socket, raw.baseAddress, length) }
            guard sent == length else { throw .system(call: "sendto", errno: sent < 0 ? canary_errno() : EMSGSIZE) }
            var pending = end - start
            while pending > 0 {
                for message in try receive() where Int32(message.type) == NLMSG_ERROR {
                    let index = Int(message.sequence &- firstSequence)
                    guard index >= 0, index < end - start else { continue }
                    let code = try message.acknowledgedError()
                    if code != 0 { outcomes[start + index] = .kernel(code) }
                    pending -= 1
                }
            }
            start = end
        }
        return outcomes
    }

    private func transactOnce(
        type: Int, flags: Int32, dump: Bool, _ build: (RouteMessageBuilder) -> Void
    ) throws(RouteNetlinkFailure) -> (replies: [RouteMessage], interrupted: Bool) {
        let sequence = nextSequence
        nextSequence &+= 1
        var request = [UInt8](repeating: 0, count: Self.requestCapacity)
        let length = request.withUnsafeMutableBytes { raw -> Int in
            let header = mnl_nlmsg_put_header(raw.baseAddress)!
            header.pointee.nlmsg_type = UInt16(type)
            header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | flags | (dump ? NLM_F_DUMP : NLM_F_ACK))
            header.pointee.nlmsg_seq = sequence
            build(RouteMessageBuilder(header: header, capacity: raw.count))
            return Int(header.pointee.nlmsg_len)
        }
        let sent = request.withUnsafeBytes { raw in mnl_socket_sendto(socket, raw.baseAddress, length) }
        guard sent == length else { throw .system(call: "sendto", errno: sent < 0 ? canary_errno() : EMSGSIZE) }

        var replies: [RouteMessage] = []
        var interrupted = false
        while true {
            for message in try receive() where message.sequence == sequence {
                switch Int32(message.type) {
                case NLMSG_ERROR:
                    let code = try message.acknowledgedError()
                    if code != 0 { throw .kernel(code) }
                    if !dump { return (replies, interrupted) }
                case NLMSG_DONE:
                    // A dump ends with DONE carrying an int error (0 when it went well).
                    if message.payload.count >= 4 {
                        let code = -Int32(bitPattern: readUInt32(message.payload[...], at: 0))
                        if code > 0 { throw .kernel(code) }
                    }
                    return (replies, interrupted)
                case NLMSG_NOOP:
                    continue
                case NLMSG_OVERRUN:
                    throw .system(call: "recv (overrun)", errno: ENOBUFS)
                default:
                    if message.flags & UInt16(NLM_F_DUMP_INTR) != 0 { interrupted = true }
                    replies.append(message)
                }
            }
        }
    }

    /// Reads one datagram and splits it into the messages addressed to this socket.
    private func receive() throws(RouteNetlinkFailure) -> [RouteMessage] {
        let count = receiveBuffer.withUnsafeMutableBytes { raw in
            mnl_socket_recvfrom(socket, raw.baseAddress, raw.count)
        }
        guard count >= 0 else {
            let code = canary_errno()
            throw .system(call: code == EAGAIN || code == EWOULDBLOCK ? "recv (timed out)" : "recv", errno: code)
        }
        return try RouteMessage.split(receiveBuffer[0..<count]).filter { $0.portID == portID || $0.portID == 0 }
    }
}
