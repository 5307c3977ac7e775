import NetlinkMessages
import CLibmnl
import IPVS
import Synchronization

/// The kernel's IPVS over generic netlink: services, destinations, their stats, timeouts.
///
/// Calls block on the netlink socket and are serialised; one instance may be shared.
public final class NetlinkIPVS: IPVSKernel {
    private let family: UInt16
    private let connection: Mutex<GenericNetlinkSocket>
    /// Requests per sendto in `apply`: a datagram of at most this many bytes.
    private let batchBytes: Int

    /// Connects to the kernel's IPVS family.
    /// - Throws: `IPVSError.notAvailable` when the kernel has no IPVS (module not loaded, or not built).
    public init(batchBytes: Int = 64 * 1024) throws(IPVSError) {
        guard let family = try GenericNetlinkSocket.resolveFamily(named: "IPVS") else { throw .notAvailable }
        self.family = family
        self.batchBytes = batchBytes
        self.connection = Mutex(try GenericNetlinkSocket())
    }

    /// Whether this kernel has IPVS now, and if not, why.
    public static func probe() -> Result<Void, IPVSError> {
        Result { () throws(IPVSError) in _ = try NetlinkIPVS() }
    }

    // MARK: Reading

    /// Every service, without destinations.
    public func services() throws(IPVSError) -> [VirtualService] {
        try connection.withLock { socket throws(IPVSError) in
            try socket.transact(
                family: family, command: IPVSCommand.getService.rawValue, dump: true,
                error: { .kernel(errno: $0.errorCode, operation: "dump services", subject: $0.message ?? "") }
            ).map { message throws(IPVSError) in
                try IPVSDecoder.service(fromMessagePayload: Self.attributes(of: message))
            }
        }
    }

    /// The destinations of one service, in the kernel's list order (most recently added first).
    public func destinations(of key: ServiceKey) throws(IPVSError) -> [Destination] {
        try connection.withLock { socket throws(IPVSError) in try destinations(of: key, on: socket) }
    }

    /// One service with its destinations, or nil when the kernel has no such service.
    public func service(_ key: ServiceKey) throws(IPVSError) -> ServiceEntry? {
        try connection.withLock { socket throws(IPVSError) -> ServiceEntry? in
            let replies: [NetlinkMessage]
            do throws(IPVSError) {
                replies = try socket.transact(
                    family: family, command: IPVSCommand.getService.rawValue, dump: false,
                    error: { Self.error($0, operation: "get service", key: key) }
                ) { writer in writer.nest(CommandAttribute.service) { IPVSEncoder.putServiceKey(key, into: $0) } }
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
    /// Throws only when the socket itself fails before any request was sent.
    public func apply(_ operations: [IPVSOperation]) throws(IPVSError) -> [Result<Void, IPVSError>] {
        guard !operations.isEmpty else { return [] }
        return try connection.withLock { socket throws(IPVSError) in
            var results = [Result<Void, IPVSError>?](repeating: nil, count: operations.count)
            let firstSequence = socket.reserveSequences(operations.count)
            let batch = NetlinkBatch(limit: batchBytes)
            let flags = UInt16(NLM_F_REQUEST | NLM_F_ACK)

            func sendAndCollect() {
                let sequences = batch.sequences
                do {
                    try batch.withBytes { bytes throws(IPVSError) in try socket.send(bytes) }
                    try collectAcks(for: sequences, on: socket, firstSequence: firstSequence, operations, into: &results)
                } catch {
                    for sequence in sequences {
                        let index = Int(sequence &- firstSequence)
                        if results[index] == nil { results[index] = .failure(error) }
                    }
                }
                batch.reset()
            }

            for (index, operation) in operations.enumerated() {
                let sequence = firstSequence &+ UInt32(index)
                let command = IPVSEncoder.command(for: operation).rawValue
                if !batch.append(family: family, flags: flags, sequence: sequence, command: command, {
                    IPVSEncoder.write(operation, into: $0)
                }) {
                    sendAndCollect()  // sends the full batch; the held-back request starts the next one
                }
            }
            while !batch.isEmpty { sendAndCollect() }
            return results.map { $0 ?? .failure(.socket(call: "recv (ack missing)", errno: EPROTO)) }
        }
    }

    // MARK: Internals

    /// Sends one request that is not about a service; returns the attributes of its reply, if any.
    private func request(
        _ command: IPVSCommand, _ operation: String, _ body: @Sendable (NetlinkMessageWriter) -> Void = { _ in }
    ) throws(IPVSError) -> NetlinkAttributes? {
        let replies = try connection.withLock { socket throws(IPVSError) in
            try socket.transact(
                family: family, command: command.rawValue, dump: false,
                error: { Self.error($0, operation: operation, subject: "") }, body)
        }
        guard let reply = replies.first else { return nil }
        return try NetlinkAttributes(Self.attributes(of: reply))
    }

    private func destinations(of key: ServiceKey, on socket: GenericNetlinkSocket) throws(IPVSError) -> [Destination] {
        try socket.transact(
            family: family, command: IPVSCommand.getDestination.rawValue, dump: true,
            error: { Self.error($0, operation: "dump destinations of", key: key) }
        ) { writer in
            writer.nest(CommandAttribute.service) { IPVSEncoder.putServiceKey(key, into: $0) }
        }.map { message throws(IPVSError) in
            try IPVSDecoder.destination(fromMessagePayload: Self.attributes(of: message), serviceFamily: key.family)
        }
    }

    private func collectAcks(
        for sequences: [UInt32], on socket: GenericNetlinkSocket, firstSequence: UInt32,
        _ operations: [IPVSOperation], into results: inout [Result<Void, IPVSError>?]
    ) throws(IPVSError) {
        // The batch's sequences are consecutive: an ack is the batch's when its offset from the
        // batch's first falls inside it, and has not been seen.
        guard let batchFirst = sequences.first else { return }
        var waiting = sequences.count
        while waiting > 0 {
            try socket.receiveAcknowledgements { sequence, ack throws(IPVSError) in
                let offset = Int(sequence &- batchFirst)
                guard offset >= 0, offset < sequences.count else { return }
                let index = Int(sequence &- firstSequence)
                guard results[index] == nil else { return }
                waiting -= 1
                if let ack, ack.errorCode != 0 {
                    results[index] = .failure(Self.error(ack, for: operations[index]))
                } else {
                    results[index] = .success(())
                }
            }
        }
    }

    /// The generic netlink header (4 bytes) is skipped; what follows are the attributes.
    private static func attributes(of message: NetlinkMessage) throws(IPVSError) -> ArraySlice<UInt8> {
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
