import Foundation
import IPVS

/// An IPVS table in memory with the kernel's semantics, for unit tests only.
///
/// Mirrors net/netfilter/ipvs/ip_vs_ctl.c where the planner depends on it, and returns the very
/// errors `NetlinkIPVS` makes of the kernel's answers; `IPVSKernelContract` (run on the host against
/// this and in the VM against the kernel) proves it:
/// - a scheduler name the netlink policy refuses (16 bytes or more) is an invalid argument, whatever
///   the service (EINVAL, before any look-up);
/// - adding a service or destination that exists fails (EEXIST → `serviceExists`,
///   `destinationExists`);
/// - any other operation on a missing service fails with `serviceNotFound` (ESRCH);
/// - a scheduler it has no module for fails (ENOENT → `unknownScheduler`); an IPv6 persistence
///   prefix outside 1...128 is an invalid argument (EINVAL), persistent or not; a timeout is kept in
///   32-bit jiffies, so one above 2^32 / HZ seconds reads back wrapped;
/// - a destination of the other family than its service's is an invalid argument unless it is
///   tunnelled (EINVAL, checked before the destination's own checks);
/// - a negative weight, or a lower threshold above the upper one, is refused with ERANGE (before
///   the destination is looked up); a destination address that is not unicast (0.0.0.0, broadcast,
///   multicast, IPv6 unspecified, link-local or IPv4-mapped) is an invalid argument (EINVAL, after
///   the look-up);
/// - editing or deleting a missing destination fails with `destinationNotFound` (ENOENT);
/// - a new destination goes to the head of its service's list (`list_add_rcu`), an edited one
///   keeps its place;
/// - the kernel sets `hashed` on every service it holds;
/// - one failed operation does not stop the ones after it.
/// The service order of `dumpTable` is the kernel's hash order there and sorted here: callers must
/// not depend on it. Destinations keep their connection counters across edits; tests set them with
/// `setConnections`.
public final class InMemoryIPVS: IPVSKernel, @unchecked Sendable {
    /// The schedulers of the bench's kernel (Debian's 6.1; `twos` came in 6.2), and `none`: a
    /// service without a scheduler, which the kernel takes and lists as such.
    public static let knownSchedulers: Set<Scheduler> = [
        "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "none",
    ]

    /// The bench kernel's CONFIG_HZ: the kernel keeps a persistence timeout in jiffies, in 32 bits.
    public static let hz: UInt32 = 250

    /// The timeout the kernel lists for one it was given: `timeout * HZ` wraps at 2^32 jiffies
    /// (above 17,179,869 s at 250 Hz).
    public static func heldTimeout(_ timeout: UInt32) -> UInt32 { (timeout &* hz) / hz }

    /// IP_VS_SCHEDNAME_MAXLEN less its NUL: the netlink policy refuses a longer name.
    public static let schedulerNameLimit = 15

    private let lock = NSLock()
    private var services: [ServiceKey: ServiceEntry] = [:]
    private var appliedOperations: [IPVSOperation] = []
    private var failingServices: [ServiceKey: IPVSError] = [:]
    private var dumpFailure: IPVSError?
    private var dumpCount = 0

    public init(_ entries: [ServiceEntry] = []) {
        for entry in entries {
            var entry = entry
            entry.service.flags.insert(.hashed)
            services[entry.service.key] = entry
        }
    }

    /// Every operation that succeeded, in order.
    public var log: [IPVSOperation] { lock.withLock { appliedOperations } }

    /// How many whole-table dumps were asked for.
    public var dumps: Int { lock.withLock { dumpCount } }

    public func dumpTable() throws(IPVSError) -> [ServiceEntry] {
        let result: Result<[ServiceEntry], IPVSError> = lock.withLock {
            dumpCount += 1
            if let dumpFailure { return .failure(dumpFailure) }
            return .success(services.values.sorted { $0.service.key < $1.service.key })
        }
        return try result.get()
    }

    public func service(_ key: ServiceKey) throws(IPVSError) -> ServiceEntry? {
        lock.withLock { services[key] }
    }

    /// Changes the table behind the agent's back, as a person with ipvsadm would.
    public func tamper(_ change: (inout [ServiceKey: ServiceEntry]) -> Void) {
        lock.withLock { change(&services) }
    }

    /// Every later operation on this service fails with `error` (nil: they work again), as when the
    /// kernel refuses it.
    public func failOperations(on key: ServiceKey, with error: IPVSError?) {
        lock.withLock { failingServices[key] = error }
    }

    /// Every later dump fails with `error` (nil: they work again).
    public func failDumps(with error: IPVSError?) {
        lock.withLock { dumpFailure = error }
    }

    public func apply(_ operations: [IPVSOperation]) throws(IPVSError) -> [Result<Void, IPVSError>] {
        lock.withLock {
            operations.map { operation in
                if let failure = failingServices[operation.serviceKey] { return .failure(failure) }
                let result = Self.apply(operation, to: &services)
                if case .success = result { appliedOperations.append(operation) }
                return result
            }
        }
    }

    /// Sets a destination's connection counters, as traffic would.
    public func setConnections(active: UInt32, inactive: UInt32, of address: SocketAddress, in key: ServiceKey) {
        lock.withLock {
            guard let position = services[key]?.destinations.firstIndex(where: { $0.address == address }) else {
                return
            }
            var stats = services[key]?.destinations[position].stats ?? DestinationStats()
            stats.activeConnections = active
            stats.inactiveConnections = inactive
            services[key]?.destinations[position].stats = stats
        }
    }

    private static func apply(_ operation: IPVSOperation, to services: inout [ServiceKey: ServiceEntry])
        -> Result<Void, IPVSError>
    {
        switch operation {
        case .addService(let service):
            if let refusal = refusal(ofName: service, operation) { return .failure(refusal) }
            guard services[service.key] == nil else { return .failure(.serviceExists(service.key)) }
            if let refusal = refusal(of: service, operation) { return .failure(refusal) }
            var stored = service
            stored.flags.formIntersection(.configurable)
            stored.flags.insert(.hashed)
            stored.timeout = heldTimeout(service.timeout)
            stored.stats = TrafficStats()
            services[service.key] = ServiceEntry(service: stored)

        case .editService(let service):
            if let refusal = refusal(ofName: service, operation) { return .failure(refusal) }
            guard let existing = services[service.key] else { return .failure(.serviceNotFound(service.key)) }
            if let refusal = refusal(of: service, operation) { return .failure(refusal) }
            var stored = service
            stored.flags.formIntersection(.configurable)
            stored.flags.insert(.hashed)
            stored.timeout = heldTimeout(service.timeout)
            stored.stats = existing.service.stats
            services[service.key]?.service = stored

        case .deleteService(let key):
            guard services.removeValue(forKey: key) != nil else { return .failure(.serviceNotFound(key)) }

        case .addDestination(let key, let destination):
            guard let entry = services[key] else { return .failure(.serviceNotFound(key)) }
            if let refusal = refusal(ofFamily: destination, operation, key) { return .failure(refusal) }
            if let refusal = refusal(of: destination, operation, key) { return .failure(refusal) }
            guard !entry.destinations.contains(where: { $0.address == destination.address }) else {
                return .failure(.destinationExists(key, destination.address))
            }
            if let refusal = refusal(ofAddress: destination, operation, key) { return .failure(refusal) }
            var stored = destination
            stored.stats = DestinationStats()
            services[key]?.destinations.insert(stored, at: 0)

        case .editDestination(let key, let destination):
            guard let entry = services[key] else { return .failure(.serviceNotFound(key)) }
            if let refusal = refusal(ofFamily: destination, operation, key) { return .failure(refusal) }
            if let refusal = refusal(of: destination, operation, key) { return .failure(refusal) }
            guard let position = entry.destinations.firstIndex(where: { $0.address == destination.address }) else {
                return .failure(.destinationNotFound(key, destination.address))
            }
            var stored = destination
            stored.stats = entry.destinations[position].stats
            services[key]?.destinations[position] = stored

        case .deleteDestination(let key, let address):
            guard let entry = services[key] else { return .failure(.serviceNotFound(key)) }
            guard let position = entry.destinations.firstIndex(where: { $0.address == address }) else {
                return .failure(.destinationNotFound(key, address))
            }
            services[key]?.destinations.remove(at: position)
        }
        return .success(())
    }

    /// ip_vs_genl_parse_service: the policy's NLA_NUL_STRING of at most 15 bytes.
    private static func refusal(ofName service: VirtualService, _ operation: IPVSOperation) -> IPVSError? {
        guard service.scheduler.rawValue.utf8.count > schedulerNameLimit else { return nil }
        return .invalidArgument(operation: operation.kind, subject: "service \(service.key)")
    }

    /// ip_vs_add_service / ip_vs_edit_service: the scheduler first (ENOENT), then an IPv6 prefix.
    private static func refusal(of service: VirtualService, _ operation: IPVSOperation) -> IPVSError? {
        guard knownSchedulers.contains(service.scheduler) else { return .unknownScheduler(service.scheduler, service.key) }
        if service.key.family == .inet6, !(1...128).contains(service.netmask) {
            return .invalidArgument(operation: operation.kind, subject: "service \(service.key)")
        }
        return nil
    }

    /// ip_vs_genl_set_cmd: a destination of the other family must be tunnelled (not checked on delete).
    private static func refusal(ofFamily destination: Destination, _ operation: IPVSOperation, _ key: ServiceKey) -> IPVSError? {
        guard destination.address.address.family != key.family, destination.forwarding != .tunnel else { return nil }
        return .invalidArgument(operation: operation.kind, subject: "destination \(destination.address) of service \(key)")
    }

    /// ip_vs_add_dest / ip_vs_edit_dest: ERANGE for both, before the destination is looked up.
    private static func refusal(of destination: Destination, _ operation: IPVSOperation, _ key: ServiceKey) -> IPVSError? {
        guard destination.weight < 0 || destination.lowerThreshold > destination.upperThreshold else { return nil }
        return .kernel(errno: ERANGE, operation: operation.kind, subject: "destination \(destination.address) of service \(key)")
    }

    /// ip_vs_new_dest: an IPv4 address must be unicast or local (240/4 is unicast), an IPv6 one
    /// unicast (`::`, multicast and `::ffff:0:0/96` are not) and, unless local, not link-local
    /// (the fake knows no local addresses but the loopback's).
    private static func refusal(ofAddress destination: Destination, _ operation: IPVSOperation, _ key: ServiceKey) -> IPVSError? {
        let bytes = destination.address.address.bytes
        let refused: Bool
        if destination.address.address.family == .inet {
            refused = bytes == [0, 0, 0, 0] || bytes == [255, 255, 255, 255] || bytes[0] & 0xF0 == 0xE0
        } else {
            let mapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF
            refused = bytes.allSatisfy { $0 == 0 } || bytes[0] == 0xFF || (bytes[0] == 0xFE && bytes[1] & 0xC0 == 0x80) || mapped
        }
        guard refused else { return nil }
        return .invalidArgument(operation: operation.kind, subject: "destination \(destination.address) of service \(key)")
    }
}
