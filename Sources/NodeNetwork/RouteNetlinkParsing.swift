import CLibmnl
import IPVS
import Netlink

// Everything the kernel sends over rtnetlink is copied into Swift byte arrays at the socket
// (`Netlink.NetlinkSocket`) and read here, with every length checked before it is used: a short or
// malformed message is `NetlinkError.malformed` (EBADMSG), never a crash or a read past the end.

/// One rtnetlink message; parsing it throws `NetlinkError.malformed`.
typealias RouteMessage = NetlinkSocket.Message

/// One level of attributes of an rtnetlink message.
typealias RouteAttributes = NetlinkAttributeSet<NetlinkError>

/// The fixed header of an RTM_*LINK message (struct ifinfomsg, 16 bytes) and its attributes.
struct LinkMessage: Equatable {
    static let fixedLength = 16

    var index: Int32
    var flags: UInt32
    var name: String?
    /// IFLA_LINKINFO / IFLA_INFO_KIND: "dummy", "veth", …; nil for a plain device.
    var kind: String?

    init(_ message: RouteMessage) throws(NetlinkError) {
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

    init(_ message: RouteMessage) throws(NetlinkError) {
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
