import CLibmnl
import IPVS

// Everything the kernel sends over rtnetlink is copied into Swift byte arrays at the socket and
// read here, with every length checked before it is used: a short or malformed message is an
// error (EBADMSG), never a crash or a read past the end.

/// One netlink message copied out of a receive buffer.
struct RouteMessage: Equatable {
    static let headerLength = 16

    var type: UInt16
    var flags: UInt16
    var sequence: UInt32
    var portID: UInt32
    /// The bytes after the 16-byte header.
    var payload: [UInt8]

    /// Splits a datagram into its messages, checking each header's length.
    static func split(_ datagram: ArraySlice<UInt8>) throws(RouteNetlinkFailure) -> [RouteMessage] {
        var messages: [RouteMessage] = []
        var offset = datagram.startIndex
        while datagram.endIndex - offset >= headerLength {
            let length = Int(readUInt32(datagram, at: offset))
            guard length >= headerLength, length <= datagram.endIndex - offset else {
                throw .malformed("message length \(length) with \(datagram.endIndex - offset) bytes left")
            }
            messages.append(
                RouteMessage(
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

    /// The errno of an NLMSG_ERROR message: 0 for an ack.
    func acknowledgedError() throws(RouteNetlinkFailure) -> Int32 {
        guard payload.count >= 4 else { throw .malformed("error message of \(payload.count) bytes") }
        let raw = Int32(bitPattern: readUInt32(payload[...], at: 0))
        return raw == Int32.min ? Int32.max : -raw
    }
}

/// One level of netlink attributes, by type, values copied out. The last of a type wins.
struct RouteAttributes {
    static let typeMask: UInt16 = 0x3FFF

    private var values: [UInt16: [UInt8]] = [:]

    init(_ bytes: ArraySlice<UInt8>) throws(RouteNetlinkFailure) {
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
        guard offset >= bytes.endIndex else {
            throw .malformed("\(bytes.endIndex - offset) trailing bytes after attributes")
        }
    }

    func bytes(_ type: UInt16) -> [UInt8]? { values[type] }

    func nested(_ type: UInt16) throws(RouteNetlinkFailure) -> RouteAttributes? {
        guard let value = values[type] else { return nil }
        return try RouteAttributes(value[...])
    }

    /// A NUL-terminated string: the text before the first NUL.
    func string(_ type: UInt16) -> String? {
        guard let value = values[type] else { return nil }
        return String(decoding: value.prefix { $0 != 0 }, as: UTF8.self)
    }
}

/// The fixed header of an RTM_*LINK message (struct ifinfomsg, 16 bytes) and its attributes.
struct LinkMessage: Equatable {
    static let fixedLength = 16

    var index: Int32
    var flags: UInt32
    var name: String?
    /// IFLA_LINKINFO / IFLA_INFO_KIND: "dummy", "veth", …; nil for a plain device.
    var kind: String?

    init(_ message: RouteMessage) throws(RouteNetlinkFailure) {
        let payload = message.payload
        guard payload.count >= Self.fixedLength else {
            throw .malformed("link message of \(payload.count) bytes, \(Self.fixedLength) needed")
        }
        index = Int32(bitPattern: readUInt32(payload[...], at: 4))
        flags = readUInt32(payload[...], at: 8)
        let attributes = try RouteAttributes(payload[Self.fixedLength...])
        name = attributes.string(UInt16(IFLA_IFNAME))
        kind = try attributes.nested(UInt16(IFLA_LINKINFO))?.string(UInt16(IFLA_INFO_KIND))
    }
}

/// The fixed header of an RTM_*ADDR message (struct ifaddrmsg, 8 bytes) and the address in it.
struct AddressMessage: Equatable {
    static let fixedLength = 8

    var family: UInt8
    var prefixLength: UInt8
    var interfaceIndex: Int32
    /// IFA_LOCAL when there is one (the interface's own IPv4 address; IFA_ADDRESS is then the
    /// peer on point-to-point links), else IFA_ADDRESS.
    var address: IPAddress?

    init(_ message: RouteMessage) throws(RouteNetlinkFailure) {
        let payload = message.payload
        guard payload.count >= Self.fixedLength else {
            throw .malformed("address message of \(payload.count) bytes, \(Self.fixedLength) needed")
        }
        family = payload[0]
        prefixLength = payload[1]
        interfaceIndex = Int32(bitPattern: readUInt32(payload[...], at: 4))
        let attributes = try RouteAttributes(payload[Self.fixedLength...])
        let raw = attributes.bytes(UInt16(IFA_LOCAL)) ?? attributes.bytes(UInt16(IFA_ADDRESS))
        let expected = Int32(family) == AF_INET ? 4 : Int32(family) == AF_INET6 ? 16 : nil
        if let raw, let expected {
            guard raw.count == expected else {
                throw .malformed("address of \(raw.count) bytes in family \(family)")
            }
            address = IPAddress(bytes: raw)
        } else {
            address = nil
        }
    }
}

extension IPAddress {
    /// fe80::/10: the kernel's own per-link IPv6 addresses, never the agent's.
    var isIPv6LinkLocal: Bool {
        family == .inet6 && bytes[0] == 0xFE && bytes[1] & 0xC0 == 0x80
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
