import CLibmnl
import IPVS
import Netlink
import Synchronization

/// The node's interface plumbing over rtnetlink: the agent's dummy interface, holding every virtual
/// address it serves, so that the kernel accepts packets to them locally and IPVS sees them.
///
/// One NETLINK_ROUTE socket (`Netlink.NetlinkSocket`), opened by `init` in the network namespace of
/// the calling thread, serves every call; calls from several threads take it in turn. Every
/// request asks for an ack and a kernel error is a `NodeNetworkError.netlink` naming the operation
/// and its subject, except the outcomes documented below as success (an interface or address
/// already there on add, already gone on remove).
public final class RouteNetlink: Sendable {
    private let socket: Mutex<NetlinkSocket>

    /// Opens the rtnetlink socket.
    public init() throws(NodeNetworkError) {
        do throws(NetlinkError) {
            socket = Mutex(try NetlinkSocket(protocol: NETLINK_ROUTE))
        } catch {
            throw .netlink(operation: "open rtnetlink socket", subject: "NETLINK_ROUTE", errno: error.errno)
        }
    }

    /// Creates the dummy interface when it is missing and sets it up; an existing dummy is kept
    /// (and set up); an interface of another kind under that name is `.interfaceKindMismatch`.
    public func ensureDummyInterface(named name: String) throws(NodeNetworkError) {
        try validate(name, operation: "create dummy interface")
        try socket.withLock { socket throws(NodeNetworkError) in
            if let existing = try Self.link(named: name, socket) {
                return try Self.adopt(existing, name, socket)
            }
            do throws(NetlinkError) {
                // Created up: the kernel applies ifi_flags/ifi_change of a new link after registering it.
                _ = try socket.request(type: UInt16(RTM_NEWLINK), flags: UInt16(NLM_F_CREATE | NLM_F_EXCL)) { message in
                    let link = message.fixedHeader(ifinfomsg.self)
                    link.pointee.ifi_family = UInt8(AF_UNSPEC)
                    link.pointee.ifi_flags = UInt32(IFF_UP)
                    link.pointee.ifi_change = UInt32(IFF_UP)
                    message.put(UInt16(IFLA_IFNAME), string: name)
                    message.nest(UInt16(IFLA_LINKINFO)) { $0.put(UInt16(IFLA_INFO_KIND), string: "dummy") }
                }
            } catch .kernel(EEXIST, _) {
                // Made by someone else between the look-up and the request: check it as above.
                guard let existing = try Self.link(named: name, socket) else {
                    throw .netlink(operation: "create dummy interface", subject: name, errno: EEXIST)
                }
                return try Self.adopt(existing, name, socket)
            } catch .kernel(let code, _) where code == EOPNOTSUPP || code == ENOENT {
                // rtnl_newlink: "Unknown device type" when no module provides the "dummy" link kind.
                throw .interfaceTypeUnsupported(name)
            } catch {
                throw .netlink(operation: "create dummy interface", subject: name, errno: error.errno)
            }
        }
    }

    /// Deletes the interface, and with it its addresses, only when it is a dummy: an interface of
    /// another kind under that name (a mistyped `--interface eth0`) is never the agent's, and is
    /// reported (`.interfaceKindMismatch`), not deleted. A missing interface is not an error.
    public func deleteInterface(named name: String) throws(NodeNetworkError) {
        try validate(name, operation: "delete interface")
        try socket.withLock { socket throws(NodeNetworkError) in
            guard let existing = try Self.link(named: name, socket) else { return }
            guard existing.kind == "dummy" else { throw .interfaceKindMismatch(name: name, kind: existing.kind ?? "none") }
            do throws(NetlinkError) {
                // By index: exactly the interface just checked.
                _ = try socket.request(type: UInt16(RTM_DELLINK)) { message in
                    let link = message.fixedHeader(ifinfomsg.self)
                    link.pointee.ifi_family = UInt8(AF_UNSPEC)
                    link.pointee.ifi_index = existing.index
                }
            } catch .kernel(ENODEV, _) {
                return
            } catch {
                throw .netlink(operation: "delete interface", subject: name, errno: error.errno)
            }
        }
    }

    /// The addresses on the dummy interface (IPv4 and IPv6, link-local excluded); empty when it is missing.
    public func addresses(on name: String) throws(NodeNetworkError) -> Set<IPAddress> {
        try validate(name, operation: "list addresses")
        return try socket.withLock { socket throws(NodeNetworkError) in
            guard let link = try Self.dummyLink(named: name, socket) else { return [] }
            return Set(try Self.addressMessages(socket, on: name).lazy
                .filter { $0.interfaceIndex == link.index }
                .compactMap(\.address)
                .filter { !$0.isIPv6LinkLocal })
        }
    }

    /// Adds a host address (/32 or /128) to the dummy interface; an address already there is not an error.
    public func addAddress(_ address: IPAddress, to name: String) throws(NodeNetworkError) {
        try validate(name, operation: "add address \(address) to")
        try socket.withLock { socket throws(NodeNetworkError) in
            guard let link = try Self.dummyLink(named: name, socket) else {
                throw .netlink(operation: "add address \(address) to", subject: name, errno: ENODEV)
            }
            do throws(NetlinkError) {
                _ = try socket.request(type: UInt16(RTM_NEWADDR), flags: UInt16(NLM_F_CREATE | NLM_F_EXCL)) { message in
                    Self.putAddress(address, prefixLength: nil, index: link.index, into: message)
                }
            } catch .kernel(EEXIST, _) {
                return
            } catch {
                throw .netlink(operation: "add address \(address) to", subject: name, errno: error.errno)
            }
        }
    }

    /// Adds many addresses: one interface look-up, then the requests many per datagram. One
    /// result per address, in order; an address already there is a success.
    public func addAddresses(_ addresses: [IPAddress], to name: String) throws(NodeNetworkError) -> [Result<Void, NodeNetworkError>] {
        guard !addresses.isEmpty else { return [] }
        try validate(name, operation: "add addresses to")
        return try socket.withLock { socket throws(NodeNetworkError) in
            guard let link = try Self.dummyLink(named: name, socket) else {
                throw .netlink(operation: "add addresses to", subject: name, errno: ENODEV)
            }
            let outcomes = socket.acknowledgedBatch(count: addresses.count, datagramBytes: Self.batchBytes) { index, message in
                message.setType(UInt16(RTM_NEWADDR), addingFlags: UInt16(NLM_F_CREATE | NLM_F_EXCL))
                Self.putAddress(addresses[index], prefixLength: nil, index: link.index, into: message)
            }
            if let failure = outcomes.socketFailure {
                throw .netlink(operation: "add addresses to", subject: name, errno: failure.errno)
            }
            return zip(addresses, outcomes).map { address, outcome in
                switch outcome {
                case .success, .failure(.kernel(EEXIST, _)): .success(())
                case .failure(let failure):
                    .failure(.netlink(operation: "add address \(address) to", subject: name, errno: failure.errno))
                }
            }
        }
    }

    /// Removes an address from the dummy interface; an address not there is not an error.
    public func removeAddress(_ address: IPAddress, from name: String) throws(NodeNetworkError) {
        try validate(name, operation: "remove address \(address) from")
        try socket.withLock { socket throws(NodeNetworkError) in
            guard let link = try Self.dummyLink(named: name, socket) else { return }
            do throws(NetlinkError) {
                try Self.deleteAddress(address, prefixLength: nil, index: link.index, socket)
            } catch .kernel(EADDRNOTAVAIL, _) where address.family == .inet6 {
                // IPv6 deletes only on an exact prefix length: look for the address with another one
                // (put there by hand) before calling it absent.
                let other = try Self.addressMessages(socket, on: name).first {
                    $0.interfaceIndex == link.index && $0.address == address
                }
                guard let other else { return }
                do throws(NetlinkError) {
                    try Self.deleteAddress(address, prefixLength: other.prefixLength, index: link.index, socket)
                } catch .kernel(let code, _) where code == EADDRNOTAVAIL || code == ENODEV {
                    return
                } catch {
                    throw .netlink(operation: "remove address \(address) from", subject: name, errno: error.errno)
                }
            } catch .kernel(let code, _) where code == EADDRNOTAVAIL || code == ENODEV {
                return
            } catch {
                throw .netlink(operation: "remove address \(address) from", subject: name, errno: error.errno)
            }
        }
    }

    // MARK: - Requests

    /// Requests per datagram of `addAddresses`, in bytes.
    static let batchBytes = 8 * 1024

    /// The link with this name when it is a dummy (nil when there is none). Any other kind is
    /// someone else's interface (eth0, a bridge, lo): its addresses are never listed as the agent's,
    /// added to or removed, whatever the caller asks.
    private static func dummyLink(named name: String, _ socket: NetlinkSocket) throws(NodeNetworkError) -> LinkMessage? {
        guard let link = try link(named: name, socket) else { return nil }
        guard link.kind == "dummy" else { throw .interfaceKindMismatch(name: name, kind: link.kind ?? "none") }
        return link
    }

    /// Keeps an existing interface when it is a dummy, setting it up if it is down.
    private static func adopt(_ existing: LinkMessage, _ name: String, _ socket: NetlinkSocket) throws(NodeNetworkError) {
        guard existing.kind == "dummy" else { throw .interfaceKindMismatch(name: name, kind: existing.kind ?? "none") }
        if existing.flags & UInt32(IFF_UP) == 0 { try setUp(index: existing.index, name: name, socket) }
    }

    /// An interface name the kernel takes: 1 to 15 bytes, no '/', ':' or white space.
    private func validate(_ name: String, operation: String) throws(NodeNetworkError) {
        let bytes = Array(name.utf8)
        let forbidden: Set<UInt8> = [UInt8(ascii: "/"), UInt8(ascii: ":"), 0, 0x20, 0x09, 0x0A, 0x0D]
        guard !bytes.isEmpty, bytes.count < Int(IF_NAMESIZE), !bytes.contains(where: forbidden.contains),
            name != ".", name != ".."
        else { throw .netlink(operation: operation, subject: "interface name \"\(name)\"", errno: EINVAL) }
    }

    /// The link with this name (RTM_GETLINK by IFLA_IFNAME), nil when there is none.
    private static func link(named name: String, _ socket: NetlinkSocket) throws(NodeNetworkError) -> LinkMessage? {
        do {
            let replies = try socket.request(type: UInt16(RTM_GETLINK)) { message in
                message.fixedHeader(ifinfomsg.self).pointee.ifi_family = UInt8(AF_UNSPEC)
                message.put(UInt16(IFLA_IFNAME), string: name)
                // Only what is asked: no statistics, no VF information.
                message.put(UInt16(IFLA_EXT_MASK), uint32: 0)
            }
            for reply in replies where reply.type == UInt16(RTM_NEWLINK) {
                let link = try LinkMessage(reply)
                if link.name == nil || link.name == name { return link }
            }
            return nil
        } catch .kernel(ENODEV, _) {
            return nil
        } catch {
            throw .netlink(operation: "look up interface", subject: name, errno: error.errno)
        }
    }

    private static func setUp(index: Int32, name: String, _ socket: NetlinkSocket) throws(NodeNetworkError) {
        do {
            _ = try socket.request(type: UInt16(RTM_NEWLINK)) { message in
                let link = message.fixedHeader(ifinfomsg.self)
                link.pointee.ifi_family = UInt8(AF_UNSPEC)
                link.pointee.ifi_index = index
                link.pointee.ifi_flags = UInt32(IFF_UP)
                link.pointee.ifi_change = UInt32(IFF_UP)
            }
        } catch {
            throw .netlink(operation: "set interface up", subject: name, errno: error.errno)
        }
    }

    /// Every address of the node (RTM_GETADDR dump, both families); callers filter by interface.
    private static func addressMessages(_ socket: NetlinkSocket, on name: String) throws(NodeNetworkError) -> [AddressMessage] {
        do {
            let replies = try socket.dump(type: UInt16(RTM_GETADDR)) { message in
                message.fixedHeader(ifaddrmsg.self).pointee.ifa_family = UInt8(AF_UNSPEC)
            }
            var addresses: [AddressMessage] = []
            for reply in replies where reply.type == UInt16(RTM_NEWADDR) {
                addresses.append(try AddressMessage(reply))
            }
            return addresses
        } catch {
            throw .netlink(operation: "list addresses of", subject: name, errno: error.errno)
        }
    }

    /// A host address (/32, /128 unless told otherwise). IPv4 gives IFA_LOCAL (the interface's
    /// own address) and IFA_ADDRESS (the same: no peer); IPv6 gives IFA_ADDRESS and IFA_F_NODAD,
    /// so the address is usable at once instead of tentative during duplicate address detection.
    private static func putAddress(_ address: IPAddress, prefixLength: UInt8?, index: Int32, into message: NetlinkMessageWriter) {
        let header = message.fixedHeader(ifaddrmsg.self)
        header.pointee.ifa_family = UInt8(address.family == .inet ? AF_INET : AF_INET6)
        header.pointee.ifa_prefixlen = prefixLength ?? (address.family == .inet ? 32 : 128)
        header.pointee.ifa_scope = UInt8(RT_SCOPE_UNIVERSE.rawValue)
        header.pointee.ifa_index = UInt32(bitPattern: index)
        if address.family == .inet {
            message.put(UInt16(IFA_LOCAL), bytes: address.bytes)
            message.put(UInt16(IFA_ADDRESS), bytes: address.bytes)
        } else {
            header.pointee.ifa_flags = UInt8(IFA_F_NODAD)
            message.put(UInt16(IFA_ADDRESS), bytes: address.bytes)
        }
    }

    private static func deleteAddress(
        _ address: IPAddress, prefixLength: UInt8?, index: Int32, _ socket: NetlinkSocket
    ) throws(NetlinkError) {
        _ = try socket.request(type: UInt16(RTM_DELADDR)) { message in
            let header = message.fixedHeader(ifaddrmsg.self)
            header.pointee.ifa_family = UInt8(address.family == .inet ? AF_INET : AF_INET6)
            header.pointee.ifa_prefixlen = prefixLength ?? (address.family == .inet ? 32 : 128)
            header.pointee.ifa_index = UInt32(bitPattern: index)
            // IPv4 matches IFA_LOCAL whatever the prefix length; IPv6 matches IFA_ADDRESS and the length.
            message.put(UInt16(address.family == .inet ? IFA_LOCAL : IFA_ADDRESS), bytes: address.bytes)
        }
    }
}
