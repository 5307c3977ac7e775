import CLibmnl
import CLibnlGenl
import IPVS
import Netlink
import Synchronization

/// The kernel's IPVS over generic netlink: services, destinations, their stats, timeouts.
///
/// Calls block on the netlink socket and are serialised; one instance may be shared.
public final class NetlinkIPVS: IPVSKernel {
    private let family: UInt16
    private let connection: Mutex<NetlinkSocket>
    /// Requests per sendto in `apply`: a datagram of at most this many bytes.
    private let batchBytes: Int

    /// Connects to the kernel's IPVS family.
    /// - Throws: `IPVSError.notAvailable` when the kernel has no IPVS (module not loaded, or not built).
    public init(batchBytes: Int = 64 * 1024) throws(IPVSError) {
        guard let family = try Self.resolveFamily(named: "IPVS") else { throw .notAvailable }
        self.family = family
        self.batchBytes = batchBytes
        do throws(NetlinkError) {
            // Acks of a whole batch wait in the receive buffer until they are read: make room for them.
            self.connection = Mutex(
                try NetlinkSocket(
                    protocol: NETLINK_GENERIC, receiveBufferBytes: 8 << 20, receiveTimeoutMilliseconds: 15_000,
                    replyBufferBytes: 256 * 1024))
        } catch {
            throw Self.ipvsError(error) { Self.error($0, operation: "open netlink socket", subject: "") }
        }
    }

    /// Whether this kernel has IPVS now, and if not, why.
    public static func probe() -> Result<Void, IPVSError> {
        Result { () throws(IPVSError) in _ = try NetlinkIPVS() }
    }

    // MARK: Reading

    /// Every service, without destinations.
    public func services() throws(IPVSError) -> [VirtualService] {
        try connection.withLock { socket throws(IPVSError) in
            try Self.translate(kernelError: { .kernel(errno: $0.errorCode, operation: "dump services", subject: $0.message ?? "") }) {
                () throws(NetlinkError) in try dump(.getService, on: socket)
            }
        }.map { message throws(IPVSError) in
            try IPVSDecoder.service(fromMessagePayload: Self.attributes(of: message))
        }
    }

    /// The destinations of one service, in the kernel's list order (most recently added first).
    public func destinations(of key: ServiceKey) throws(IPVSError) -> [Destination] {
        try connection.withLock { socket throws(IPVSError) in try destinations(of: key, on: socket) }
    }

    /// One service with its destinations, or nil when the kernel has no such service.
    public func service(_ key: ServiceKey) throws(IPVSError) -> ServiceEntry? {
        try connection.withLock { socket throws(IPVSError) -> ServiceEntry? in
            let replies: [NetlinkSocket.Message]
            do throws(IPVSError) {
                replies = try Self.translate(kernelError: { Self.error($0, operation: "get service", key: key) }) {
                    () throws(NetlinkError) in
                    try socket.request(type: family) { writer in
                        writer.genericNetlinkHeader(command: IPVSCommand.getService.rawValue)
                        writer.nest(CommandAttribute.service) { IPVSEncoder.putServiceKey(key, into: $0) }
                    }
                }
            } catch {
                if case .serviceNotFound = error { return nil }
                throw error
            }
            guard let reply = replies.first else { return nil }
            let service = try IPVSDecoder.service(fromMessagePayload: Self.attributes(of: reply))
            return ServiceEntry(service: service, destinations: try destinations(of: key, on: socket))
        }
    }

    public func dumpTable() throws(IPVSError) -> [ServiceEntry] {
        let services = try services()
        return try connection.withLock { socket throws(IPVSError) in
            try services.map { service throws(IPVSError) in
                ServiceEntry(service: service, destinations: try destinations(of: service.key, on: socket))
            }
        }
    }

    /// The TCP, TCP FIN and UDP connection timeouts.
    public func timeouts() throws(IPVSError) -> IPVSTimeouts {
        guard let attributes = try request(.getConfig, "get timeouts") else {
            throw .malformedMessage("no reply to get timeouts")
        }
        return IPVSTimeouts(
            tcp: try attributes.requiredUInt32(CommandAttribute.timeoutTCP, "TCP timeout"),
            tcpFin: try attributes.requiredUInt32(CommandAttribute.timeoutTCPFin, "TCP FIN timeout"),
            udp: try attributes.requiredUInt32(CommandAttribute.timeoutUDP, "UDP timeout"))
    }

    /// Sets the timeouts; a value of 0 leaves that timeout as it is.
    public func setTimeouts(_ timeouts: IPVSTimeouts) throws(IPVSError) {
        _ = try request(.setConfig, "set timeouts") { writer in
            if timeouts.tcp != 0 { writer.put(CommandAttribute.timeoutTCP, uint32: timeouts.tcp) }
            if timeouts.tcpFin != 0 { writer.put(CommandAttribute.timeoutTCPFin, uint32: timeouts.tcpFin) }
            if timeouts.udp != 0 { writer.put(CommandAttribute.timeoutUDP, uint32: timeouts.udp) }
        }
    }

    /// The IPVS version and connection table size.
    public func info() throws(IPVSError) -> IPVSInfo {
        guard let attributes = try request(.getInfo, "get info") else { throw .malformedMessage("no reply to get info") }
        return IPVSInfo(
            versionCode: try attributes.requiredUInt32(InfoAttribute.version, "IPVS version"),
            connectionTableSize: try attributes.requiredUInt32(InfoAttribute.connectionTableSize, "table size"))
    }

    // MARK: Changing

    /// Removes every service and destination, including those the agent does not own.
    public func flush() throws(IPVSError) {
        _ = try request(.flush, "flush")
    }

    /// Zeroes the counters of every service.
    public func zeroCounters() throws(IPVSError) {
        _ = try request(.zero, "zero counters")
    }

    /// Applies one operation.
    public func apply(_ operation: IPVSOperation) throws(IPVSError) {
        try apply([operation])[0].get()
    }

    /// Applies the operations in order, many per datagram (as many as fit `batchBytes`), and
    /// collects every ack: one result per operation, so one failure hides none of the others.
    /// A socket failure is the result of every operation it left unanswered or unsent
    /// (`NetlinkSocket.acknowledgedBatch`).
    public func apply(_ operations: [IPVSOperation]) throws(IPVSError) -> [Result<Void, IPVSError>] {
        guard !operations.isEmpty else { return [] }
        let results = connection.withLock { socket in
            socket.acknowledgedBatch(count: operations.count, datagramBytes: batchBytes) { index, writer in
                writer.setType(family)
                writer.genericNetlinkHeader(command: IPVSEncoder.command(for: operations[index]).rawValue)
                IPVSEncoder.write(operations[index], into: writer)
            }
        }
        return zip(operations, results).map { operation, result in
            result.mapError { failure in Self.ipvsError(failure) { Self.error($0, for: operation) } }
        }
    }

    // MARK: Internals

    /// Sends one request that is not about a service; returns the attributes of its reply, if any.
    private func request(
        _ command: IPVSCommand, _ operation: String, _ body: @Sendable (NetlinkMessageWriter) -> Void = { _ in }
    ) throws(IPVSError) -> NetlinkAttributes? {
        let replies = try connection.withLock { socket throws(IPVSError) in
            try Self.translate(kernelError: { Self.error($0, operation: operation, subject: "") }) { () throws(NetlinkError) in
                try socket.request(type: family) { writer in
                    writer.genericNetlinkHeader(command: command.rawValue)
                    body(writer)
                }
            }
        }
        guard let reply = replies.first else { return nil }
        return try NetlinkAttributes(Self.attributes(of: reply))
    }

    private func destinations(of key: ServiceKey, on socket: NetlinkSocket) throws(IPVSError) -> [Destination] {
        try Self.translate(kernelError: { Self.error($0, operation: "dump destinations of", key: key) }) {
            () throws(NetlinkError) in
            try dump(.getDestination, on: socket) { writer in
                writer.nest(CommandAttribute.service) { IPVSEncoder.putServiceKey(key, into: $0) }
            }
        }.map { message throws(IPVSError) in
            try IPVSDecoder.destination(fromMessagePayload: Self.attributes(of: message), serviceFamily: key.family)
        }
    }

    /// A dump of one IPVS command.
    private func dump(
        _ command: IPVSCommand, on socket: NetlinkSocket, _ body: (NetlinkMessageWriter) -> Void = { _ in }
    ) throws(NetlinkError) -> [NetlinkSocket.Message] {
        try socket.dump(type: family) { writer in
            writer.genericNetlinkHeader(command: command.rawValue)
            body(writer)
        }
    }

    /// Runs `body`, mapping what the shared stack throws to an `IPVSError`.
    private static func translate<R>(
        kernelError: (NetlinkAcknowledgement) -> IPVSError, _ body: () throws(NetlinkError) -> R
    ) throws(IPVSError) -> R {
        do {
            return try body()
        } catch {
            throw Self.ipvsError(error, kernel: kernelError)
        }
    }

    /// What the shared stack reports, as an `IPVSError`; a kernel refusal through `kernel`, which
    /// names the operation and its subject.
    static func ipvsError(_ failure: NetlinkError, kernel: (NetlinkAcknowledgement) -> IPVSError) -> IPVSError {
        switch failure {
        case .kernel(let code, let message): kernel(NetlinkAcknowledgement(errorCode: code, message: message))
        case .system(let call, let code): .socket(call: call, errno: code)
        case .malformed(let reason): .malformedMessage(reason)
        case .overrun: .socket(call: "recv (NLMSG_OVERRUN: the kernel lost replies)", errno: ENOBUFS)
        case .dumpInterrupted(let attempts): .socket(call: "dump (interrupted \(attempts) times)", errno: EINTR)
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

    /// The generic netlink header (4 bytes) is skipped; what follows are the attributes.
    private static func attributes<Failure>(of message: ParsedNetlinkMessage<Failure>) throws(IPVSError) -> ArraySlice<UInt8> {
        guard message.payload.count >= 4 else { throw .malformedMessage("message shorter than its genl header") }
        return message.payload[4...]
    }

    /// Turns a kernel errno into an error about the operation's service or destination.
    static func error(_ ack: NetlinkAcknowledgement, for operation: IPVSOperation) -> IPVSError {
        let key = operation.serviceKey
        let code = ack.errorCode
        switch (operation, code) {
        case (.addService, EEXIST): return .serviceExists(key)
        case (.addService(let service), ENOENT), (.editService(let service), ENOENT):
            return .unknownScheduler(service.scheduler, key)
        case (.addDestination(_, let destination), EEXIST): return .destinationExists(key, destination.address)
        case (.editDestination(_, let destination), ENOENT): return .destinationNotFound(key, destination.address)
        case (.deleteDestination(_, let address), ENOENT): return .destinationNotFound(key, address)
        case (_, ESRCH): return .serviceNotFound(key)
        default:
            let subject = operation.destinationAddress.map { "destination \($0) of service \(key)" } ?? "service \(key)"
            return error(ack, operation: operation.kind, subject: subject)
        }
    }

    static func error(_ ack: NetlinkAcknowledgement, operation: String, key: ServiceKey) -> IPVSError {
        if ack.errorCode == ESRCH { return .serviceNotFound(key) }
        return error(ack, operation: operation, subject: "service \(key)")
    }

    static func error(_ ack: NetlinkAcknowledgement, operation: String, subject: String) -> IPVSError {
        let detail = ack.message.map { subject.isEmpty ? $0 : "\(subject) (\($0))" } ?? subject
        switch ack.errorCode {
        case EINVAL: return .invalidArgument(operation: operation, subject: detail)
        case EPERM, EACCES: return .permissionDenied(operation: operation)
        default: return .kernel(errno: ack.errorCode, operation: operation, subject: detail)
        }
    }
}
