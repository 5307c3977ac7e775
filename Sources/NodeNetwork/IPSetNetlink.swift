import CLibmnl
import IPVS
import Synchronization

/// Adds and deletes entries of a `hash:net,net` ipset over netlink (NETLINK_NETFILTER, the ip_set
/// subsystem), many requests per datagram with one ack each: 100,000 entries take a fraction of
/// what `ipset restore` needs, which sends and waits for one request per line. The set's life
/// (create, swap, destroy) stays with the `ipset` program: a few lines, rarely.
///
/// An entry is a pair of host addresses, `address,address` (an endpoint to itself); the prefix
/// lengths are the host's, the kernel's default when none is given. Requests carry no NLM_F_EXCL,
/// so adding an entry that is there and deleting one that is not are successes (`ipset -exist`).
public final class IPSetNetlink: Sendable {
    private let socket: Mutex<NetlinkRequestSocket>

    /// Opens the socket, in the network namespace of the calling thread.
    public init() throws(NodeNetworkError) {
        do {
            socket = Mutex(try NetlinkRequestSocket(protocol: NETLINK_NETFILTER))
        } catch {
            throw .netlink(operation: "open netfilter socket", subject: "NETLINK_NETFILTER", errno: error.errno)
        }
    }

    /// Deletes then adds the entries (each address paired with itself) in `set`, which must exist
    /// and be of the addresses' family. The first refusal is thrown, naming the set and the entry;
    /// the other requests were still sent.
    public func update(set: String, adding: [IPAddress], removing: [IPAddress]) throws(NodeNetworkError) {
        guard !adding.isEmpty || !removing.isEmpty else { return }
        let outcomes: [RouteNetlinkFailure?]
        do {
            outcomes = try socket.withLock { socket throws(RouteNetlinkFailure) in
                let requests = removing.map { Self.request(IPSET_CMD_DEL, set: set, address: $0) }
                    + adding.map { Self.request(IPSET_CMD_ADD, set: set, address: $0) }
                return try socket.transactBatch(requests)
            }
        } catch {
            throw .netlink(operation: "update ipset", subject: set, errno: error.errno)
        }
        let addresses = removing + adding
        for (index, outcome) in outcomes.enumerated() {
            guard let outcome else { continue }
            let verb = index < removing.count ? "delete" : "add"
            let address = addresses[index]
            throw .netlink(
                operation: "ipset \(verb) \(address),\(address) in", subject: set, errno: Self.errno(of: outcome))
        }
    }

    /// An ipset error (4096 and above: the ip_set subsystem's own codes) as an errno a person can
    /// read: a missing set is ENOENT, a full one ENOSPC, a wrong family EAFNOSUPPORT.
    static func errno(of failure: RouteNetlinkFailure) -> Int32 {
        let code = failure.errno
        guard code >= Int32(IPSET_ERR_PRIVATE.rawValue) else { return code }
        switch code {
        case Int32(IPSET_ERR_PROTOCOL.rawValue): return EPROTO
        case Int32(IPSET_ERR_FIND_TYPE.rawValue), Int32(IPSET_ERR_INVALID_FAMILY.rawValue): return EAFNOSUPPORT
        default: return EINVAL
        }
    }

    private static func request(_ command: ipset_cmd, set: String, address: IPAddress) -> NetlinkRequestSocket.BatchRequest {
        NetlinkRequestSocket.BatchRequest(type: Int(NFNL_SUBSYS_IPSET) << 8 | Int(command.rawValue), flags: 0) { message in
            let header = message.fixedHeader(nfgenmsg.self)
            header.pointee.nfgen_family = UInt8(address.family == .inet ? NFPROTO_IPV4 : NFPROTO_IPV6)
            header.pointee.version = UInt8(NFNETLINK_V0)
            header.pointee.res_id = 0
            message.put(Int(IPSET_ATTR_PROTOCOL), bytes: [UInt8(IPSET_PROTOCOL_MIN)])
            message.put(Int(IPSET_ATTR_SETNAME), string: set)
            message.nest(Int(IPSET_ATTR_DATA)) { data in
                for attribute in [Int(IPSET_ATTR_IP), Int(IPSET_ATTR_IP2)] {
                    data.nest(attribute) { ip in
                        let kind = address.family == .inet ? Int(IPSET_ATTR_IPADDR_IPV4) : Int(IPSET_ATTR_IPADDR_IPV6)
                        // Addresses in network order, flagged as such, as the kernel insists.
                        ip.put(kind | Int(NLA_F_NET_BYTEORDER), bytes: address.bytes)
                    }
                }
            }
        }
    }
}
