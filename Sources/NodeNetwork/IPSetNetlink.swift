import CLibmnl
import IPVS
import Netlink
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
    private let socket: Mutex<NetlinkSocket>

    /// Requests per datagram, in bytes.
    static let batchBytes = 8 * 1024

    /// Opens the socket, in the network namespace of the calling thread.
    public init() throws(NodeNetworkError) {
        do throws(NetlinkError) {
            socket = Mutex(try NetlinkSocket(protocol: NETLINK_NETFILTER))
        } catch {
            throw .netlink(operation: "open netfilter socket", subject: "NETLINK_NETFILTER", errno: error.errno)
        }
    }

    /// Deletes then adds the entries (each address paired with itself) in `set`, which must exist
    /// and be of the addresses' family. The first refusal is thrown, naming the set and the entry;
    /// the other requests were still sent.
    public func update(set: String, adding: [IPAddress], removing: [IPAddress]) throws(NodeNetworkError) {
        guard !adding.isEmpty || !removing.isEmpty else { return }
        let addresses = removing + adding
        let outcomes = socket.withLock { socket in
            socket.acknowledgedBatch(count: addresses.count, datagramBytes: Self.batchBytes) { index, message in
                Self.write(index < removing.count ? IPSET_CMD_DEL : IPSET_CMD_ADD, set: set, address: addresses[index], into: message)
            }
        }
        if let failure = outcomes.socketFailure {
            throw .netlink(operation: "update ipset", subject: set, errno: failure.errno)
        }
        for (index, outcome) in outcomes.enumerated() {
            guard case .failure(let failure) = outcome else { continue }
            let verb = index < removing.count ? "delete" : "add"
            let address = addresses[index]
            throw .netlink(
                operation: "ipset \(verb) \(address),\(address) in", subject: set, errno: Self.errno(of: failure.errno))
        }
    }

    /// An ipset error (4096 and above: the ip_set subsystem's own codes) as an errno a person can
    /// read: a missing set is ENOENT, a full one ENOSPC, a wrong family EAFNOSUPPORT.
    static func errno(of code: Int32) -> Int32 {
        guard code >= Int32(IPSET_ERR_PRIVATE.rawValue) else { return code }
        switch code {
        case Int32(IPSET_ERR_PROTOCOL.rawValue): return EPROTO
        case Int32(IPSET_ERR_FIND_TYPE.rawValue), Int32(IPSET_ERR_INVALID_FAMILY.rawValue): return EAFNOSUPPORT
        default: return EINVAL
        }
    }

    /// One request: the nfnetlink header, the protocol version, the set and the entry.
    private static func write(_ command: ipset_cmd, set: String, address: IPAddress, into message: NetlinkMessageWriter) {
        message.setType(UInt16(NFNL_SUBSYS_IPSET) << 8 | UInt16(command.rawValue))
        let header = message.fixedHeader(nfgenmsg.self)
        header.pointee.nfgen_family = UInt8(address.family == .inet ? NFPROTO_IPV4 : NFPROTO_IPV6)
        header.pointee.version = UInt8(NFNETLINK_V0)
        header.pointee.res_id = 0
        message.put(UInt16(IPSET_ATTR_PROTOCOL), bytes: [UInt8(IPSET_PROTOCOL_MIN)])
        message.put(UInt16(IPSET_ATTR_SETNAME), string: set)
        message.nest(UInt16(IPSET_ATTR_DATA)) { data in
            for attribute in [UInt16(IPSET_ATTR_IP), UInt16(IPSET_ATTR_IP2)] {
                data.nest(attribute) { ip in
                    let kind = address.family == .inet ? UInt16(IPSET_ATTR_IPADDR_IPV4) : UInt16(IPSET_ATTR_IPADDR_IPV6)
                    // Addresses in network order, flagged as such, as the kernel insists.
                    ip.put(kind | UInt16(NLA_F_NET_BYTEORDER), bytes: address.bytes)
                }
            }
        }
    }
}
