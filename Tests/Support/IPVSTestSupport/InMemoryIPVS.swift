import Foundation
import IPVS

/// An IPVS table in memory with the kernel's semantics, for unit tests only.
///
/// Mirrors net/netfilter/ipvs/ip_vs_ctl.c where the planner depends on it:
/// - adding a service or destination that exists fails (EEXIST → `serviceExists`,
///   `destinationExists`);
/// - any operation on a missing service fails with `serviceNotFound` (ESRCH);
/// - editing or deleting a missing destination fails with `destinationNotFound` (ENOENT);
/// - a new destination goes to the head of its service's list (`list_add_rcu`), an edited one
///   keeps its place;
/// - the kernel sets `hashed` on every service it holds;
/// - a scheduler it has no module for fails (`unknownScheduler`); a negative weight, or a lower
///   threshold above the upper one, is refused with ERANGE;
/// - one failed operation does not stop the ones after it.
/// Destinations keep their connection counters across edits; tests set them with
/// `setConnections`.
public final class InMemoryIPVS: IPVSKernel, @unchecked Sendable {
    /// The schedulers of a stock kernel.
    public static let knownSchedulers: Set<Scheduler> = [
        "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
    ]

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
            guard services[service.key] == nil else { return .failure(.serviceExists(service.key)) }
            guard knownSchedulers.contains(service.scheduler) else {
                return .failure(.unknownScheduler(service.scheduler, service.key))
            }
            var stored = service
            stored.flags.formIntersection(.configurable)
            stored.flags.insert(.hashed)
            stored.stats = TrafficStats()
            services[service.key] = ServiceEntry(service: stored)

        case .editService(let service):
            guard let existing = services[service.key] else { return .failure(.serviceNotFound(service.key)) }
            guard knownSchedulers.contains(service.scheduler) else {
                return .failure(.unknownScheduler(service.scheduler, service.key))
            }
            var stored = service
            stored.flags.formIntersection(.configurable)
            stored.flags.insert(.hashed)
            stored.stats = existing.service.stats
            services[service.key]?.service = stored

        case .deleteService(let key):
            guard services.removeValue(forKey: key) != nil else { return .failure(.serviceNotFound(key)) }

        case .addDestination(let key, let destination):
            guard let entry = services[key] else { return .failure(.serviceNotFound(key)) }
            if let refusal = refusal(of: destination, operation: "add destination") { return .failure(refusal) }
            guard !entry.destinations.contains(where: { $0.address == destination.address }) else {
                return .failure(.destinationExists(key, destination.address))
            }
            var stored = destination
            stored.stats = DestinationStats()
            services[key]?.destinations.insert(stored, at: 0)

        case .editDestination(let key, let destination):
            guard let entry = services[key] else { return .failure(.serviceNotFound(key)) }
            if let refusal = refusal(of: destination, operation: "edit destination") { return .failure(refusal) }
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

    private static func refusal(of destination: Destination, operation: String) -> IPVSError? {
        // ip_vs_add_dest / ip_vs_edit_dest: ERANGE for both.
        guard destination.weight < 0 || destination.lowerThreshold > destination.upperThreshold else { return nil }
        return .kernel(errno: ERANGE, operation: operation, subject: "\(destination.address)")
    }
}
