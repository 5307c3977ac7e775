import CLibmnl
import IPVS
import Synchronization

/// The node's interface plumbing over rtnetlink (libmnl): the agent's dummy interface and the
/// virtual addresses on it.
///
/// One NETLINK_ROUTE socket, opened by `init` in the network namespace of the calling thread,
/// serves every call; calls from several threads take it in turn. Every request asks for an ack
/// and a kernel error is a `NodeNetworkError.netlink` naming the operation and its subject,
/// except the outcomes the protocol documents as success (an interface or address already there
/// on add, already gone on remove).
public final class RouteNetlink: NodeNetworking {
    private let socket: Mutex<NetlinkRequestSocket>

    /// Opens the rtnetlink socket.
    public init() throws(NodeNetworkError) {
        do {
            socket = Mutex(try NetlinkRequestSocket())
        } catch {
            throw .netlink(operation: "open rtnetlink socket", subject: "NETLINK_ROUTE", errno: error.errno)
        }
    }

    public func ensureDummyInterface(named name: String) throws(NodeNetworkError) {
        try validate(name, operation: "create dummy interface")
        try socket.withLock { socket throws(NodeNetworkError) in
            if let existing = try Self.link(named: name, socket) {
                return try Self.adopt(existing, name, socket)
            }
            do throws(RouteNetlinkFailure) {
                // Created up: the kernel applies ifi_flags/ifi_change of a new link after registering it.
                _ = try socket.transact(type: Int(RTM_NEWLINK), flags: NLM_F_CREATE | NLM_F_EXCL) { message in
                    let link = message.fixedHeader(ifinfomsg.self)
                    link.pointee.ifi_family = UInt8(AF_UNSPEC)
                    link.pointee.ifi_flags = UInt32(IFF_UP)
                    link.pointee.ifi_change = UInt32(IFF_UP)
                    message.put(Int(IFLA_IFNAME), string: name)
                    message.nest(Int(IFLA_LINKINFO)) { $0.put(Int(IFLA_INFO_KIND), string: "dummy") }
                }
            } catch .kernel(EEXIST) {
                // Made by someone else between the look-up and the request: check it as above.
                guard let existing = try Self.link(named: name, socket) else {
                    throw .netlink(operation: "create dummy interface", subject: name, errno: EEXIST)
                }
                return try Self.adopt(existing, name, socket)
            } catch .kernel(let code) where code == EOPNOTSUPP || code == ENOENT {
                // rtnl_newlink: "Unknown device type" when no module provides the "dummy" link kind.
                throw .interfaceTypeUnsupported(name)
            } catch {
                throw .netlink(operation: "create dummy interface", subject: name, errno: error.errno)
            }
        }
    }

    /// Deletes the interface only when it is a dummy: an interface of another kind under that name
    /// (a mistyped `--interface eth0`) is never the agent's, and is reported, not deleted.
    public func deleteInterface(named name: String) throws(NodeNetworkError) {
        try validate(name, operation: "delete interface")
        try socket.withLock { socket throws(NodeNetworkError) in
            guard let existing = try Self.link(named: name, socket) else { return }
            guard existing.kind == "dummy" else { throw .interfaceKindMismatch(name: name, kind: existing.kind ?? "none") }
            do throws(RouteNetlinkFailure) {
                // By index: exactly the interface just checked.
                _ = try socket.transact(type: Int(RTM_DELLINK)) { message in
                    let link = message.fixedHeader(ifinfomsg.self)
                    link.pointee.ifi_family = UInt8(AF_UNSPEC)
                    link.pointee.ifi_index = existing.index
                }
            } catch .kernel(ENODEV) {
                return
            } catch {
                throw .netlink(operation: "delete interface", subject: name, errno: error.errno)
            }
        }
    }

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

    public func addAddress(_ address: IPAddress, to name: String) throws(NodeNetworkError) {
        try validate(name, operation: "add address \(address) to")
        try socket.withLock { socket throws(NodeNetworkError) in
            guard let link = try Self.dummyLink(named: name, socket) else {
                throw .netlink(operation: "add address \(address) to", subject: name, errno: ENODEV)
            }
            do throws(RouteNetlinkFailure) {
                _ = try socket.transact(type: Int(RTM_NEWADDR), flags: NLM_F_CREATE | NLM_F_EXCL) { message in
                    Self.putAddress(address, prefixLength: nil, index: link.index, into: message)
                }
            } catch .kernel(EEXIST) {
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
            let requests = addresses.map { address in
                NetlinkRequestSocket.BatchRequest(type: Int(RTM_NEWADDR), flags: NLM_F_CREATE | NLM_F_EXCL) { message in
                    Self.putAddress(address, prefixLength: nil, index: link.index, into: message)
                }
            }
            let outcomes: [RouteNetlinkFailure?]
            do throws(RouteNetlinkFailure) {
                outcomes = try socket.transactBatch(requests)
            } catch {
                throw .netlink(operation: "add addresses to", subject: name, errno: error.errno)
            }
            return zip(addresses, outcomes).map { address, failure in
                switch failure {
                case nil, .kernel(EEXIST)?: .success(())
                case let failure?: .failure(.netlink(operation: "add address \(address) to", subject: name, errno: failure.errno))
                }
            }
        }
    }

    public func removeAddress(_ address: IPAddress, from name: String) throws(NodeNetworkError) {
        try validate(name, operation: "remove address \(address) from")
        try socket.withLock { socket throws(NodeNetworkError) in
            guard let link = try Self.dummyLink(named: name, socket) else { return }
            do throws(RouteNetlinkFailure) {
                try Self.deleteAddress(address, prefixLength: nil, index: link.index, socket)
            } catch .kernel(EADDRNOTAVAIL) where address.family == .inet6 {
                // IPv6 deletes only on an exact prefix length: look for the address with another one
                // (put there by hand) before calling it absent.
                let other = try Self.addressMessages(socket, on: name).first {
                    $0.interfaceIndex == link.index && $0.address == address
                }
                guard let other else { return }
                do throws(RouteNetlinkFailure) {
                    try Self.deleteAddress(address, prefixLength: other.prefixLength, index: link.index, socket)
                } catch .kernel(let code) where code == EADDRNOTAVAIL || code == ENODEV {
                    return
                } catch {
                    throw .netlink(operation: "remove address \(address) from", subject: name, errno: error.errno)
                }
            } catch .kernel(let code) where code == EADDRNOTAVAIL || code == ENODEV {
                return
            } catch {
                throw .netlink(operation: "remove address \(address) from", subject: name, errno: error.errno)
            }
        }
    }

    // MARK: - Requests

    /// The link with this name when it is a dummy (nil when there is none). Any other kind is
    /// someone else's interface (eth0, a bridge, lo): its addresses are never listed as the agent's,
    /// added to or removed, whatever the caller asks.
    private static func dummyLink(named name: String, _ socket: NetlinkRequestSocket) throws(NodeNetworkError) -> LinkMessage? {
        guard let link = try link(named: name, socket) else { return nil }
        guard link.kind == "dummy" else { throw .interfaceKindMismatch(name: name, kind: link.kind ?? "none") }
        return link
    }

    /// Keeps an existing interface when it is a dummy, setting it up if it is down.
    private static func adopt(_ existing: LinkMessage, _ name: String, _ socket: NetlinkRequestSocket) throws(NodeNetworkError) {
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
    private static func link(named name: String, _ socket: NetlinkRequestSocket) throws(NodeNetworkError) -> LinkMessage? {
        do {
            let replies = try socket.transact(type: Int(RTM_GETLINK)) { message in
                message.fixedHeader(ifinfomsg.self).pointee.ifi_family = UInt8(AF_UNSPEC)
                message.put(Int(IFLA_IFNAME), string: name)
                // Only what is asked: no statistics, no VF information.
                message.put(Int(IFLA_EXT_MASK), bytes: withUnsafeBytes(of: UInt32(0)) { Array($0) })
            }
            for reply in replies where reply.type == UInt16(RTM_NEWLINK) {
                let link = try LinkMessage(reply)
                if link.name == nil || link.name == name { return link }
            }
            return nil
        } catch .kernel(ENODEV) {
            return nil
        } catch {
            throw .netlink(operation: "look up interface", subject: name, errno: error.errno)
        }
    }

    private static func setUp(index: Int32, name: String, _ socket: NetlinkRequestSocket) throws(NodeNetworkError) {
        do {
            _ = try socket.transact(type: Int(RTM_NEWLINK)) { message in
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
    private static func addressMessages(_ socket: NetlinkRequestSocket, on name: String) throws(NodeNetworkError) -> [AddressMessage] {
        do {
            let replies = try socket.transact(type: Int(RTM_GETADDR), dump: true) { message in
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
    private static func putAddress(_ address: IPAddress, prefixLength: UInt8?, index: Int32, into message: RouteMessageBuilder) {
        let header = message.fixedHeader(ifaddrmsg.self)
        header.pointee.ifa_family = UInt8(address.family == .inet ? AF_INET : AF_INET6)
        header.pointee.ifa_prefixlen = prefixLength ?? (address.family == .inet ? 32 : 128)
        header.pointee.ifa_scope = UInt8(RT_SCOPE_UNIVERSE.rawValue)
        header.pointee.ifa_index = UInt32(bitPattern: index)
        if address.family == .inet {
            message.put(Int(IFA_LOCAL), bytes: address.bytes)
            message.put(Int(IFA_ADDRESS), bytes: address.bytes)
        } else {
            header.pointee.ifa_flags = UInt8(IFA_F_NODAD)
            message.put(Int(IFA_ADDRESS), bytes: address.bytes)
        }
    }

    private static func deleteAddress(
        _ address: IPAddress, prefixLength: UInt8?, index: Int32, _ socket: NetlinkRequestSocket
    ) throws(RouteNetlinkFailure) {
        _ = try socket.transact(type: Int(RTM_DELADDR)) { message in
            let header = message.fixedHeader(ifaddrmsg.self)
            header.pointee.ifa_family = UInt8(address.family == .inet ? AF_INET : AF_INET6)
            header.pointee.ifa_prefixlen = prefixLength ?? (address.family == .inet ? 32 : 128)
            header.pointee.ifa_index = UInt32(bitPattern: index)
            // IPv4 matches IFA_LOCAL whatever the prefix length; IPv6 matches IFA_ADDRESS and the length.
            message.put(Int(address.family == .inet ? IFA_LOCAL : IFA_ADDRESS), bytes: address.bytes)
        }
    }
}
