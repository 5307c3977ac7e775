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
    /// Binds the addresses, as few requests as the kernel allows; one result per address, so that
    /// one refusal hides none of the others.
    func bind(_ addresses: [IPAddress]) throws(NodeNetworkError) -> [Result<Void, NodeNetworkError>]
    func unbind(_ address: IPAddress) throws(NodeNetworkError)
    /// Makes the masquerade rules right (node-local clients, hairpin, everything when the agent
    /// masquerades all) with these endpoint addresses as the hairpin set: at every full sync, so
    /// that rules or entries removed behind the agent's back come back. Unless `rewrite`, a hairpin
    /// set of the right size is taken as right (a failed `updateMasquerade` asks for a rewrite).
    func syncMasquerade(endpoints: Set<IPAddress>, rewrite: Bool) throws(NodeNetworkError)
    /// Adds and removes hairpin endpoints: what one change of endpoints costs.
    func updateMasquerade(adding: Set<IPAddress>, removing: Set<IPAddress>) throws(NodeNetworkError)
}
