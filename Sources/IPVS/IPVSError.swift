#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An error from IPVS, said in terms of the service or destination it is about.
public enum IPVSError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kernel has no IPVS generic netlink family.
    case notAvailable
    /// Adding a service that is already there (EEXIST).
    case serviceExists(ServiceKey)
    /// The service is not in the table (ESRCH).
    case serviceNotFound(ServiceKey)
    /// Adding a destination that is already there (EEXIST).
    case destinationExists(ServiceKey, SocketAddress)
    /// The destination is not in the service (ENOENT).
    case destinationNotFound(ServiceKey, SocketAddress)
    /// The kernel has no scheduler of that name (no ip_vs_NAME module).
    case unknownScheduler(Scheduler, ServiceKey)
    /// The kernel refused the arguments (EINVAL), for example a port of 0 or a bad family.
    case invalidArgument(operation: String, subject: String)
    /// Any other errno from the kernel.
    case kernel(errno: Int32, operation: String, subject: String)
    /// A socket call failed.
    case socket(call: String, errno: Int32)
    /// libnl failed (family resolution).
    case netlinkLibrary(call: String, message: String)
    /// The kernel sent something too short or malformed to read.
    case malformedMessage(String)
    /// Not allowed: CAP_NET_ADMIN is needed.
    case permissionDenied(operation: String)

    public var description: String {
        switch self {
        case .notAvailable:
            "IPVS is not available in this kernel: load the ip_vs module or use a kernel built with CONFIG_IP_VS"
        case .serviceExists(let key): "service \(key) already exists"
        case .serviceNotFound(let key): "service \(key) does not exist"
        case .destinationExists(let key, let address): "destination \(address) of service \(key) already exists"
        case .destinationNotFound(let key, let address): "destination \(address) of service \(key) does not exist"
        case .unknownScheduler(let scheduler, let key):
            "service \(key): the kernel has no scheduler '\(scheduler)' (module ip_vs_\(scheduler) missing)"
        case .invalidArgument(let operation, let subject): "\(operation) \(subject): invalid argument"
        case .kernel(let code, let operation, let subject): "\(operation) \(subject): \(Self.errorText(code))"
        case .socket(let call, let code): "netlink \(call): \(Self.errorText(code))"
        case .netlinkLibrary(let call, let message): "libnl \(call): \(message)"
        case .malformedMessage(let detail): "malformed netlink message from the kernel: \(detail)"
        case .permissionDenied(let operation): "\(operation): permission denied (CAP_NET_ADMIN is needed)"
        }
    }

    /// `strerror` with the errno name's number.
    static func errorText(_ code: Int32) -> String {
        guard let text = strerror(code) else { return "errno \(code)" }
        return "\(String(cString: text)) (errno \(code))"
    }
}
