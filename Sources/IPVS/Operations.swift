/// One change to the kernel's IPVS table.
public enum IPVSOperation: Hashable, Sendable, CustomStringConvertible {
    case addService(VirtualService)
    case editService(VirtualService)
    case deleteService(ServiceKey)
    case addDestination(ServiceKey, Destination)
    case editDestination(ServiceKey, Destination)
    case deleteDestination(ServiceKey, SocketAddress)

    /// The service the operation is about.
    public var serviceKey: ServiceKey {
        switch self {
        case .addService(let service), .editService(let service): service.key
        case .deleteService(let key): key
        case .addDestination(let key, _), .editDestination(let key, _), .deleteDestination(let key, _): key
        }
    }

    /// The destination the operation is about, if any.
    public var destinationAddress: SocketAddress? {
        switch self {
        case .addService, .editService, .deleteService: nil
        case .addDestination(_, let destination), .editDestination(_, let destination): destination.address
        case .deleteDestination(_, let address): address
        }
    }

    /// A short name of the kind of operation, for logs and metrics.
    public var kind: String {
        switch self {
        case .addService: "add-service"
        case .editService: "edit-service"
        case .deleteService: "delete-service"
        case .addDestination: "add-destination"
        case .editDestination: "edit-destination"
        case .deleteDestination: "delete-destination"
        }
    }

    public var description: String {
        switch self {
        case .addService(let s):
            "add service \(s.key) scheduler \(s.scheduler)" + (s.flags.isEmpty ? "" : " flags \(s.flags)")
        case .editService(let s):
            "edit service \(s.key) scheduler \(s.scheduler)" + (s.flags.isEmpty ? "" : " flags \(s.flags)")
        case .deleteService(let key): "delete service \(key)"
        case .addDestination(let key, let d): "add destination \(d.address) to \(key) weight \(d.weight)"
        case .editDestination(let key, let d): "edit destination \(d.address) of \(key) weight \(d.weight)"
        case .deleteDestination(let key, let address): "delete destination \(address) from \(key)"
        }
    }
}

/// The kernel's IPVS table, as far as a program needs it: services with their destinations.
///
/// The real implementation speaks generic netlink (`IPVSNetlink.NetlinkIPVS`); unit tests use
/// an in-memory one.
public protocol IPVSKernel: Sendable {
    /// Every service with its destinations and stats.
    func dumpTable() throws(IPVSError) -> [ServiceEntry]
    /// Applies the operations in order; one result per operation, one failure does not stop the rest.
    func apply(_ operations: [IPVSOperation]) throws(IPVSError) -> [Result<Void, IPVSError>]
    /// One service with its destinations and stats, or nil when the kernel has no such service.
    func service(_ key: ServiceKey) throws(IPVSError) -> ServiceEntry?
}

extension IPVSKernel {
    /// Reads the whole table and picks one service: correct, but a real kernel answers for one.
    public func service(_ key: ServiceKey) throws(IPVSError) -> ServiceEntry? {
        try dumpTable().first { $0.service.key == key }
    }
}
