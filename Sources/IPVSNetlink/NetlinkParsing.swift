import IPVS
import Netlink

// The IPVS decoders read what the shared socket (`Netlink.NetlinkSocket`) copied out, with the
// checked parser of `Netlink`: a short or malformed message is an `IPVSError.malformedMessage`,
// never a crash or a read past the end. These names are also the ones the fuzz target
// (Tests/fuzz/Sources/FuzzNetlink) reaches through `@testable import IPVSNetlink`.

/// One netlink message of the IPVS family's socket; parsing it throws `IPVSError.malformedMessage`.
typealias NetlinkMessage = ParsedNetlinkMessage<IPVSError>

/// One level of attributes of an IPVS message.
typealias NetlinkAttributes = NetlinkAttributeSet<IPVSError>

/// The payload of an NLMSG_ERROR message (the shared stack's type).
typealias NetlinkAcknowledgement = Netlink.NetlinkAcknowledgement

/// The socket `NetlinkIPVS` talks through: the shared stack's, opened on NETLINK_GENERIC. Its
/// in-place ack loop is `GenericNetlinkSocket.acknowledgements(in:portID:_:)`.
typealias GenericNetlinkSocket = NetlinkSocket

extension IPVSError: NetlinkParseFailure {
    public static func malformed(_ reason: String) -> IPVSError { .malformedMessage(reason) }
}
