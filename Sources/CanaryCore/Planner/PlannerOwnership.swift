import IPVS

/// Which services in the kernel's table belong to the agent, and so may be changed by it.
///
/// A service is the agent's when its virtual address is one the agent bound (on its dummy
/// interface), or when its key is in the explicit set (firewall-mark services have no address,
/// so they are owned only that way). Everything else, whoever made it (kube-proxy, a person with
/// ipvsadm, another agent), is foreign: the planner never emits an operation on a foreign key.
///
/// Ownership is decided by this rule alone, not by whether the service is already in the
/// kernel: a desired service whose key is foreign is not programmed even when no such service
/// exists yet, and is reported in `Plan.unownedDesiredServices` instead. The agent claims a
/// service by binding its address (or adding its key) before planning, and keeps the address
/// bound until the service is gone from the kernel, drains included.
public struct Ownership: Hashable, Sendable {
    /// Virtual addresses the agent bound: every `.inet` service on one of them is the agent's.
    public var boundAddresses: Set<IPAddress>
    /// Services the agent owns whatever their address, firewall-mark services among them.
    public var services: Set<ServiceKey>

    public init(boundAddresses: Set<IPAddress> = [], services: Set<ServiceKey> = []) {
        self.boundAddresses = boundAddresses
        self.services = services
    }

    /// True when the agent may change the service with this key.
    public func owns(_ key: ServiceKey) -> Bool {
        if services.contains(key) { return true }
        switch key {
        case .inet(_, let socket): return boundAddresses.contains(socket.address)
        case .firewallMark: return false
        }
    }
}
