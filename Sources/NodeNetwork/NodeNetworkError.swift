import IPVS

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
