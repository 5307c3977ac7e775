import IPVS
import NetlinkMessages

// Everything the kernel sends is copied into Swift byte arrays at the socket and read here,
// with every length checked before it is used. A short or malformed message is an
// `IPVSError.malformedMessage`, never a crash or a read past the end.

/// One netlink message of the IPVS family's socket; parsing it throws `IPVSError.malformedMessage`.
typealias NetlinkMessage = ParsedNetlinkMessage<IPVSError>

/// One level of attributes of an IPVS message.
typealias NetlinkAttributes = NetlinkAttributeSet<IPVSError>

extension IPVSError: NetlinkParseFailure {
    public static func malformed(_ reason: String) -> IPVSError { .malformedMessage(reason) }
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
            let text = attributes.string(1)  // NLMSGERR_ATTR_MSG
        else { return }
        self.message = text
    }
}
