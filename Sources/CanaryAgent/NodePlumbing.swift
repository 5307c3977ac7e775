import IPVS
import NodeNetwork

/// What the reconciler needs from the node besides IPVS: the interface holding the virtual
/// addresses (whose addresses also decide which services are the agent's), the sysctls, the
/// masquerade rules. The real one is `LinuxNodePlumbing`; unit tests use an in-memory one.
public protocol NodePlumbing: Sendable {
    /// Makes the node ready for IPVS: the interface exists and is up, the sysctls are set
    /// (IPv6 forwarding too when `ipv6`). Returns what it changed, for the log. Called before
    /// every full sync, so that a deleted interface or a reset sysctl is repaired.
    func prepare(ipv6: Bool) throws(NodeNetworkError) -> [String]
    /// The virtual addresses on the agent's interface now.
    func boundAddresses() throws(NodeNetworkError) -> Set<IPAddress>
    func bind(_ address: IPAddress) throws(NodeNetworkError)
    func unbind(_ address: IPAddress) throws(NodeNetworkError)
    /// Replaces the masquerade rules: hairpin for these endpoint addresses, node-local clients, and
    /// everything when the agent masquerades all.
    func updateMasquerade(endpoints: Set<IPAddress>) throws(NodeNetworkError)
}
