import IPVS

/// The IPVS table the agent wants, service by service: each `DesiredService` realized as the
/// `ServiceEntry` the kernel should hold, with the weights `WeightSolver` chose for it.
///
/// Kept as a dictionary by `ServiceKey` so that one changed service is realized and looked up in
/// O(its endpoints), never O(table): see `update(_:)` and `Planner.plan(changed:...)`.
public struct DesiredTable: Hashable, Sendable {
    /// Every desired service as it should be in the kernel.
    public private(set) var entries: [ServiceKey: ServiceEntry]
    /// What the solver said of each service: its effective share, explanation and warnings.
    public private(set) var assignments: [ServiceKey: WeightAssignment]

    /// An empty table.
    public init() {
        entries = [:]
        assignments = [:]
    }

    /// Realizes every service of the desired state.
    ///
    /// - Parameter current: the kernel's table, when known: each service's destinations are then
    ///   solved in the order the kernel lists them (see `update(_:kernelOrder:)`).
    public init(_ state: DesiredState, current: IPVSTableIndex = [:]) {
        entries = Dictionary(minimumCapacity: state.services.count)
        assignments = Dictionary(minimumCapacity: state.services.count)
        for service in state.services.values {
            update(service, kernelOrder: current[service.key].map { $0.destinations.map(\.address) })
        }
    }

    /// Realizes one service, replacing what the table held for its key.
    ///
    /// - Parameter kernelOrder: the service's destinations as the kernel lists them now (most
    ///   recently added first), or nil for a service not in the kernel yet. The solver needs it
    ///   where list order changes the share (sh with draining endpoints, mh's last round); new
    ///   endpoints are taken as added by the planner in the service's order, as it does.
    public mutating func update(_ service: DesiredService, kernelOrder: [SocketAddress]? = nil) {
        let realized = Self.realize(service, kernelOrder: kernelOrder)
        entries[service.key] = realized.entry
        assignments[service.key] = realized.assignment
    }

    /// Removes a service that is no longer desired.
    public mutating func remove(_ key: ServiceKey) {
        entries[key] = nil
        assignments[key] = nil
    }

    /// The entry for a key, if that service is desired.
    public subscript(key: ServiceKey) -> ServiceEntry? { entries[key] }

    /// Turns one desired service into the entry the kernel should hold, with the weights
    /// `WeightSolver` solves for it (given the kernel's list order, when known).
    ///
    /// - Scheduler flags: `sh` always carries sh-fallback, so that a client whose bucket belongs
    ///   to a weight-0 (draining) destination moves to a live one instead of being refused.
    ///   `mh` gets the same bit: the kernel defines `IP_VS_SVC_F_SCHED_MH_FALLBACK` as
    ///   `IP_VS_SVC_F_SCHED1` (net/netfilter/ipvs/ip_vs_mh.c), the bit that `sh` reads as
    ///   sh-fallback (`ServiceFlags.shFallback`, 0x8). Other schedulers get no scheduler flag.
    /// - Persistence: `.persistent` with its timeout, and its netmask or the whole address
    ///   (/32, /128) when none is given.
    /// - Destinations: stable endpoints first, then canary ones, each address once (the first
    ///   occurrence wins), with the solver's weight (an address it gave no weight, or a negative
    ///   one, gets 0: no new connections) and the service's forwarding method.
    public static func realize(_ service: DesiredService, kernelOrder: [SocketAddress]? = nil)
        -> (entry: ServiceEntry, assignment: WeightAssignment)
    {
        let assignment = WeightSolver.solve(service, kernelOrder: kernelOrder)
        var flags: ServiceFlags = []
        if service.scheduler == .sourceHashing || service.scheduler == .maglevHashing {
            flags.insert(.shFallback)
        }
        var timeout: UInt32 = 0
        var netmask: UInt32? = nil
        if let persistence = service.persistence {
            flags.insert(.persistent)
            timeout = persistence.timeout
            netmask = persistence.netmask
        }
        let virtualService = VirtualService(
            key: service.key, scheduler: service.scheduler, flags: flags, timeout: timeout, netmask: netmask)

        // The solver has taken each address once already (the first occurrence wins).
        let destinations = assignment.destinationOrder.map { address in
            Destination(address: address, forwarding: service.forwarding, weight: max(0, assignment.weights[address] ?? 0))
        }
        return (ServiceEntry(service: virtualService, destinations: destinations), assignment)
    }
}
