import IPVS

// Everything the kernel sends is copied into Swift byte arrays at the socket and read here,
// with every length checked before it is used. A short or malformed message is an
// `IPVSError.malformedMessage`, never a crash or a read past the end.

/// One netlink message copied out of a receive buffer.
struct NetlinkMessage: Equatable {
    static let headerLength = 16

    var type: UInt16
    var flags: UInt16
    var sequence: UInt32
    var portID: UInt32
    /// The bytes after the 16-byte header.
    var payload: [UInt8]

    /// Splits a datagram into its messages, checking each header's length.
    static func split(_ datagram: ArraySlice<UInt8>) throws(IPVSError) -> [NetlinkMessage] {
        var messages: [NetlinkMessage] = []
        var offset = datagram.startIndex
        while datagram.endIndex - offset >= headerLength {
            let length = Int(readUInt32(datagram, at: offset))
            guard length >= headerLength, length <= datagram.endIndex - offset else {
                throw .malformedMessage("message length \(length) with \(datagram.endIndex - offset) bytes left")
            }
            messages.append(
                NetlinkMessage(
                    type: readUInt16(datagram, at: offset + 4),
                    flags: readUInt16(datagram, at: offset + 6),
                    sequence: readUInt32(datagram, at: offset + 8),
                    portID: readUInt32(datagram, at: offset + 12),
                    payload: Array(datagram[(offset + headerLength)..<(offset + length)])
                ))
            offset += align4(length)
        }
        guard offset >= datagram.endIndex else {
            throw .malformedMessage("\(datagram.endIndex - offset) trailing bytes after the last message")
        }
        return messages
    }
}

/// The payload of an NLMSG_ERROR message: an errno (0 for an ack) and, with extended acks, a text.
struct NetlinkAcknowledgement: Equatable {
    /// 0 for success, otherwise a positive errno.
    var errorCode: Int32
    /// The kernel's extended-ack message, if it sent one.
    var message: String?

    static let ackTLVsFlag: UInt16 = 0x200  // NLM_F_ACK_TLVS
    static let cappedFlag: UInt16 = 0x100  // NLM_F_CAPPED

    init(errorCode: Int32, message: String? = nil) {
        self.errorCode = errorCode
        self.message = message
    }

    init(_ message: NetlinkMessage) throws(IPVSError) {
        let payload = message.payload
        // int error; struct nlmsghdr original (16 bytes), then the original payload unless capped.
        guard payload.count >= 4 + NetlinkMessage.headerLength else {
            throw .malformedMessage("error message of \(payload.count) bytes, 20 needed")
        }
        let raw = Int32(bitPattern: readUInt32(payload[...], at: 0))
        errorCode = raw == Int32.min ? Int32.max : -raw
        self.message = nil
        guard message.flags & Self.ackTLVsFlag != 0 else { return }
        var tlvStart = 4 + NetlinkMessage.headerLength
        if message.flags & Self.cappedFlag == 0 {
            // The original message is echoed in full; skip it by its own length.
            let originalLength = Int(readUInt32(payload[...], at: 4))
            guard originalLength >= NetlinkMessage.headerLength, 4 + originalLength <= payload.count else { return }
            tlvStart = 4 + align4(originalLength)
        }
        guard tlvStart <= payload.count,
            let attributes = try? NetlinkAttributes(payload[tlvStart...]),
            let text = try? attributes.string(1)  // NLMSGERR_ATTR_MSG
        else { return }
        self.message = text
    }
}

/// The attributes of one level of a netlink message, by type. Values are copied out.
struct NetlinkAttributes {
    static let nestedFlag: UInt16 = 0x8000
    static let byteOrderFlag: UInt16 = 0x4000
    static let typeMask: UInt16 = 0x3FFF

    private var values: [UInt16: [UInt8]] = [:]

    /// Parses a run of attributes; the last one of a type wins, as in the kernel's nla_parse.
    init(_ bytes: ArraySlice<UInt8>) throws(IPVSError) {
        var offset = bytes.startIndex
        while bytes.endIndex - offset >= 4 {
            let length = Int(readUInt16(bytes, at: offset))
            let type = readUInt16(bytes, at: offset + 2) & Self.typeMask
            guard length >= 4, length <= bytes.endIndex - offset else {
                throw .malformedMessage("attribute \(type) of length \(length) with \(bytes.endIndex - offset) bytes left")
            }
            values[type] = Array(bytes[(offset + 4)..<(offset + length)])
            offset += align4(length)
        }
        // Only the last attribute's padding may be missing; 1 to 3 stray bytes are not an attribute.
        guard offset >= bytes.endIndex else {
            throw .malformedMessage("\(bytes.endIndex - offset) trailing bytes after attributes")
        }
    }

    init(_ bytes: [UInt8]) throws(IPVSError) { try self.init(bytes[...]) }

    func contains(_ type: UInt16) -> Bool { values[type] != nil }

    func bytes(_ type: UInt16) -> [UInt8]? { values[type] }

    func nested(_ type: UInt16) throws(IPVSError) -> NetlinkAttributes? {
        guard let value = values[type] else { return nil }
        return try NetlinkAttributes(value)
    }

    func uint16(_ type: UInt16) throws(IPVSError) -> UInt16? {
        guard let value = values[type] else { return nil }
        guard value.count == 2 else { throw .malformedMessage("attribute \(type): \(value.count) bytes, u16 expected") }
        return readUInt16(value[...], at: 0)
    }

    func uint32(_ type: UInt16) throws(IPVSError) -> UInt32? {
        guard let value = values[type] else { return nil }
        guard value.count == 4 else { throw .malformedMessage("attribute \(type): \(value.count) bytes, u32 expected") }
        return readUInt32(value[...], at: 0)
    }

    func uint64(_ type: UInt16) throws(IPVSError) -> UInt64? {
        guard let value = values[type] else { return nil }
        guard value.count == 8 else { throw .malformedMessage("attribute \(type): \(value.count) bytes, u64 expected") }
        return value.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    }

    /// A NUL-terminated string; the text before the first NUL (or all of it, if none).
    func string(_ type: UInt16) throws(IPVSError) -> String? {
        guard let value = values[type] else { return nil }
        return String(decoding: value.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Like `uint16` but the attribute must be there.
    func requiredUInt16(_ type: UInt16, _ what: String) throws(IPVSError) -> UInt16 {
        guard let value = try uint16(type) else { throw .malformedMessage("\(what) missing") }
        return value
    }

    func requiredUInt32(_ type: UInt16, _ what: String) throws(IPVSError) -> UInt32 {
        guard let value = try uint32(type) else { throw .malformedMessage("\(what) missing") }
        return value
    }
}

/// Netlink's 4-byte alignment.
@inline(__always) func align4(_ length: Int) -> Int { (length + 3) & ~3 }

/// Host-order reads (netlink's byte order); callers check bounds first.
@inline(__always) func readUInt16(_ bytes: ArraySlice<UInt8>, at offset: Int) -> UInt16 {
    bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset - bytes.startIndex, as: UInt16.self) }
}

@inline(__always) func readUInt32(_ bytes: ArraySlice<UInt8>, at offset: Int) -> UInt32 {
    bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset - bytes.startIndex, as: UInt32.self) }
}
