// Reading what the kernel sends over netlink: messages and attributes copied out of a receive
// buffer into Swift byte arrays, every length checked before it is used. A short or malformed
// message is an error of the caller's own type (`NetlinkParseFailure`), never a crash or a read
// past the end. No pointer into a receive buffer outlives the call that reads it.

/// An error type that can say a netlink message did not parse. The socket's own `NetlinkError`
/// conforms, and so does `IPVSError`, so that the IPVS decoders throw what their callers throw.
public protocol NetlinkParseFailure: Error {
    static func malformed(_ reason: String) -> Self
}

/// One netlink message copied out of a receive buffer. `Failure` is the error its parsing throws.
public struct ParsedNetlinkMessage<Failure: NetlinkParseFailure>: Equatable, Sendable {
    public static var headerLength: Int { 16 }

    public var type: UInt16
    public var flags: UInt16
    public var sequence: UInt32
    public var portID: UInt32
    /// The bytes after the 16-byte header.
    public var payload: [UInt8]

    public init(type: UInt16, flags: UInt16, sequence: UInt32, portID: UInt32, payload: [UInt8]) {
        self.type = type
        self.flags = flags
        self.sequence = sequence
        self.portID = portID
        self.payload = payload
    }

    /// Splits a datagram into its messages, checking each header's length.
    public static func split(_ datagram: ArraySlice<UInt8>) throws(Failure) -> [Self] {
        var messages: [Self] = []
        var offset = datagram.startIndex
        while datagram.endIndex - offset >= headerLength {
            let length = Int(readUInt32(datagram, at: offset))
            guard length >= headerLength, length <= datagram.endIndex - offset else {
                throw .malformed("message length \(length) with \(datagram.endIndex - offset) bytes left")
            }
            messages.append(
                Self(
                    type: readUInt16(datagram, at: offset + 4),
                    flags: readUInt16(datagram, at: offset + 6),
                    sequence: readUInt32(datagram, at: offset + 8),
                    portID: readUInt32(datagram, at: offset + 12),
                    payload: Array(datagram[(offset + headerLength)..<(offset + length)])
                ))
            offset += align4(length)
        }
        guard offset >= datagram.endIndex else {
            throw .malformed("\(datagram.endIndex - offset) trailing bytes after the last message")
        }
        return messages
    }

    /// The errno of an NLMSG_ERROR message: 0 for an ack, otherwise positive.
    public func acknowledgedError() throws(Failure) -> Int32 {
        guard payload.count >= 4 else { throw .malformed("error message of \(payload.count) bytes") }
        let raw = Int32(bitPattern: readUInt32(payload[...], at: 0))
        return raw == Int32.min ? Int32.max : -raw
    }
}

/// The attributes of one level of a netlink message, by type, values copied out. The last
/// attribute of a type wins, as in the kernel's nla_parse.
public struct NetlinkAttributeSet<Failure: NetlinkParseFailure>: Sendable {
    public static var nestedFlag: UInt16 { 0x8000 }
    public static var byteOrderFlag: UInt16 { 0x4000 }
    public static var typeMask: UInt16 { 0x3FFF }

    private var values: [UInt16: [UInt8]] = [:]

    /// Parses a run of attributes.
    public init(_ bytes: ArraySlice<UInt8>) throws(Failure) {
        var offset = bytes.startIndex
        while bytes.endIndex - offset >= 4 {
            let length = Int(readUInt16(bytes, at: offset))
            let type = readUInt16(bytes, at: offset + 2) & Self.typeMask
            guard length >= 4, length <= bytes.endIndex - offset else {
                throw .malformed("attribute \(type) of length \(length) with \(bytes.endIndex - offset) bytes left")
            }
            values[type] = Array(bytes[(offset + 4)..<(offset + length)])
            offset += align4(length)
        }
        // Only the last attribute's padding may be missing; 1 to 3 stray bytes are not an attribute.
        guard offset >= bytes.endIndex else {
            throw .malformed("\(bytes.endIndex - offset) trailing bytes after attributes")
        }
    }

    public init(_ bytes: [UInt8]) throws(Failure) { try self.init(bytes[...]) }

    public func contains(_ type: UInt16) -> Bool { values[type] != nil }

    public func bytes(_ type: UInt16) -> [UInt8]? { values[type] }

    public func nested(_ type: UInt16) throws(Failure) -> Self? {
        guard let value = values[type] else { return nil }
        return try Self(value)
    }

    public func uint16(_ type: UInt16) throws(Failure) -> UInt16? {
        guard let value = values[type] else { return nil }
        guard value.count == 2 else { throw .malformed("attribute \(type): \(value.count) bytes, u16 expected") }
        return readUInt16(value[...], at: 0)
    }

    public func uint32(_ type: UInt16) throws(Failure) -> UInt32? {
        guard let value = values[type] else { return nil }
        guard value.count == 4 else { throw .malformed("attribute \(type): \(value.count) bytes, u32 expected") }
        return readUInt32(value[...], at: 0)
    }

    public func uint64(_ type: UInt16) throws(Failure) -> UInt64? {
        guard let value = values[type] else { return nil }
        guard value.count == 8 else { throw .malformed("attribute \(type): \(value.count) bytes, u64 expected") }
        return value.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    }

    /// A NUL-terminated string: the text before the first NUL (or all of it, if none).
    public func string(_ type: UInt16) -> String? {
        guard let value = values[type] else { return nil }
        return String(decoding: value.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Like `uint16`, but the attribute must be there.
    public func requiredUInt16(_ type: UInt16, _ what: String) throws(Failure) -> UInt16 {
        guard let value = try uint16(type) else { throw .malformed("\(what) missing") }
        return value
    }

    /// Like `uint32`, but the attribute must be there.
    public func requiredUInt32(_ type: UInt16, _ what: String) throws(Failure) -> UInt32 {
        guard let value = try uint32(type) else { throw .malformed("\(what) missing") }
        return value
    }
}

/// The payload of an NLMSG_ERROR message: an errno (0 for an ack) and, with extended acks
/// (NETLINK_EXT_ACK), the kernel's text.
public struct NetlinkAcknowledgement: Equatable, Sendable {
    /// 0 for success, otherwise a positive errno.
    public var errorCode: Int32
    /// The kernel's extended-ack message, if it sent one.
    public var message: String?

    public static var ackTLVsFlag: UInt16 { 0x200 }  // NLM_F_ACK_TLVS
    public static var cappedFlag: UInt16 { 0x100 }  // NLM_F_CAPPED

    public init(errorCode: Int32, message: String? = nil) {
        self.errorCode = errorCode
        self.message = message
    }

    /// Reads an NLMSG_ERROR message: its errno, then the extended-ack text when the kernel sent one.
    public init<Failure: NetlinkParseFailure>(_ message: ParsedNetlinkMessage<Failure>) throws(Failure) {
        let payload = message.payload
        // int error; struct nlmsghdr original (16 bytes), then the original payload unless capped.
        guard payload.count >= 4 + ParsedNetlinkMessage<Failure>.headerLength else {
            throw .malformed("error message of \(payload.count) bytes, 20 needed")
        }
        errorCode = try message.acknowledgedError()
        self.message = nil
        guard message.flags & Self.ackTLVsFlag != 0 else { return }
        var tlvStart = 4 + ParsedNetlinkMessage<Failure>.headerLength
        if message.flags & Self.cappedFlag == 0 {
            // The original message is echoed in full; skip it by its own length.
            let originalLength = Int(readUInt32(payload[...], at: 4))
            guard originalLength >= ParsedNetlinkMessage<Failure>.headerLength, 4 + originalLength <= payload.count else { return }
            tlvStart = 4 + align4(originalLength)
        }
        guard tlvStart <= payload.count,
            let attributes = try? NetlinkAttributeSet<Failure>(payload[tlvStart...]),
            let text = attributes.string(1)  // NLMSGERR_ATTR_MSG
        else { return }
        self.message = text
    }
}

/// Netlink's 4-byte alignment.
@inlinable public func align4(_ length: Int) -> Int { (length + 3) & ~3 }

/// Host-order reads (netlink's byte order); callers check bounds first.
@inlinable public func readUInt16(_ bytes: ArraySlice<UInt8>, at offset: Int) -> UInt16 {
    bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset - bytes.startIndex, as: UInt16.self) }
}

@inlinable public func readUInt32(_ bytes: ArraySlice<UInt8>, at offset: Int) -> UInt32 {
    bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset - bytes.startIndex, as: UInt32.self) }
}
