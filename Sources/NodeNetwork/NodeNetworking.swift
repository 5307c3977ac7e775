import IPVS

/// The node's interface plumbing the agent needs: its own dummy interface, holding every virtual
/// address it serves, so that the kernel accepts packets to them locally and IPVS sees them.
///
/// The real implementation speaks rtnetlink (`RouteNetlink`); unit tests of the agent use an
/// in-memory one.
public protocol NodeNetworking: Sendable {
    /// Creates the dummy interface when it is missing and sets it up; an existing one is kept.
    func ensureDummyInterface(named name: String) throws(NodeNetworkError)
    /// Deletes the interface and with it its addresses; a missing interface is not an error.
    /// `RouteNetlink` deletes only a dummy: any other kind is `.interfaceKindMismatch`, left alone.
    func deleteInterface(named name: String) throws(NodeNetworkError)
    /// The addresses on the interface (IPv4 and IPv6, link-local excluded); empty when it is missing.
    func addresses(on name: String) throws(NodeNetworkError) -> Set<IPAddress>
    /// Adds a host address (/32 or /128) to the interface; an address already there is not an error.
    func addAddress(_ address: IPAddress, to name: String) throws(NodeNetworkError)
    /// Removes an address from the interface; an address not there is not an error.
    func removeAddress(_ address: IPAddress, from name: String) throws(NodeNetworkError)
}

/// What went wrong while changing the node's network: one line naming the object and the cause.
public enum NodeNetworkError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A netlink request failed: the operation, its subject (interface or address) and the errno.
    case netlink(operation: String, subject: String, errno: Int32)
    /// The kernel cannot make the interface (no dummy link type: CONFIG_DUMMY off).
    case interfaceTypeUnsupported(String)
    /// An interface of that name exists but is not a dummy (its link kind, or "none"): the agent
    /// neither adopts nor deletes it.
    case interfaceKindMismatch(name: String, kind: String)
    /// A sysctl could not be read or written.
    case sysctl(name: String, reason: String)
    /// A command (iptables-restore, ipset) failed: the command line and what it printed.
    case command(command: String, output: String)

    public var description: String {
        switch self {
        case .netlink(let operation, let subject, let errno):
            return "\(operation) \(subject): \(String(cString: strerror(errno))) (errno \(errno))"
        case .interfaceTypeUnsupported(let name):
            return "interface \(name): this kernel has no dummy interfaces (CONFIG_DUMMY)"
        case .interfaceKindMismatch(let name, let kind):
            return "interface \(name): exists but is of kind \(kind), not dummy; rename it or choose another --interface"
        case .sysctl(let name, let reason):
            return "sysctl \(name): \(reason)"
        case .command(let command, let output):
            return "\(command): \(output)"
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
