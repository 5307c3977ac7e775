import IPVS
import NodeNetwork

/// The node's real plumbing: the dummy interface and its addresses over rtnetlink, the sysctls
/// under /proc/sys, the masquerade rules with iptables-restore and the hairpin set with ipset.
public struct LinuxNodePlumbing: NodePlumbing {
    public let interface: String
    public let masqueradeAll: Bool
    let links: RouteNetlink
    let sysctls: Sysctls
    let masquerade: MasqueradeRules
    let hairpin: HairpinSet

    public init(
        interface: String, masqueradeAll: Bool, sysctls: Sysctls = Sysctls(), masquerade: MasqueradeRules = MasqueradeRules(),
        hairpin: HairpinSet = HairpinSet()
    ) throws(NodeNetworkError) {
        self.interface = interface
        self.masqueradeAll = masqueradeAll
        self.links = try RouteNetlink()
        self.sysctls = sysctls
        self.masquerade = masquerade
        self.hairpin = hairpin
    }

    /// Ensures the interface (an error there is thrown) and each sysctl: one that cannot be set (a
    /// read-only /proc/sys in a container, where an init container sets them) is reported in the
    /// returned lines, not thrown, so that the agent goes on.
    public func prepare(ipv6: Bool) throws(NodeNetworkError) -> [String] {
        try links.ensureDummyInterface(named: interface)
        var settings = SysctlSetting.ipvsRequired
        if ipv6 { settings.append(SysctlSetting.ipv6Forwarding) }
        var lines: [String] = []
        if bridgedTrafficPassesNetfilter {
            settings += SysctlSetting.bridgeNetfilter
        } else if !masqueradeAll {
            lines.append(
                "br_netfilter is not loaded: bridged replies bypass IPVS, so connections from a service's endpoints "
                    + "are masqueraded (their backend sees this node's address); load br_netfilter, as Kubernetes "
                    + "nodes do, to keep the client's address")
        }
        for setting in settings {
            do {
                lines += try sysctls.ensure([setting]).map { "sysctl \($0)" }
            } catch {
                lines.append("cannot set \(setting): \(error) (set it on the node)")
            }
        }
        return lines
    }

    /// Whether br_netfilter is loaded (its sysctls exist; `prepare` turns them on): bridged traffic
    /// then passes netfilter, where IPVS's connection tracking de-NATs replies between neighbours.
    var bridgedTrafficPassesNetfilter: Bool {
        (try? sysctls.read(SysctlSetting.bridgeNetfilter[0].name)) != nil
    }

    public func boundAddresses() throws(NodeNetworkError) -> Set<IPAddress> {
        try links.addresses(on: interface)
    }

    public func bind(_ addresses: [IPAddress]) throws(NodeNetworkError) -> [Result<Void, NodeNetworkError>] {
        try links.addAddresses(addresses, to: interface)
    }

    public func unbind(_ address: IPAddress) throws(NodeNetworkError) {
        try links.removeAddress(address, from: interface)
    }

    /// IPv4 rules always (node-local clients need them whatever the endpoints); IPv6 rules when there
    /// are IPv6 endpoints, so that a node without ip6tables' nat table works for IPv4. The hairpin
    /// sets first: the rules refer to them (none with --masquerade-all, whose one rule covers hairpin).
    public func syncMasquerade(endpoints: Set<IPAddress>, rewrite: Bool) throws(NodeNetworkError) {
        var families: Set<IPAddress.Family> = [.inet]
        if endpoints.contains(where: { $0.family == .inet6 }) { families.insert(.inet6) }
        if !masqueradeAll {
            for family in families.sorted() { try hairpin.sync(endpoints: endpoints, family: family, rewrite: rewrite) }
        }
        try masquerade.apply(
            masqueradeAll: masqueradeAll, endpointClients: !bridgedTrafficPassesNetfilter, families: families)
    }

    /// One `ipset -exist restore` call. The first IPv6 endpoint waits for the next full sync to get
    /// its set and rules, which the reconciler asks for at once.
    public func updateMasquerade(adding: Set<IPAddress>, removing: Set<IPAddress>) throws(NodeNetworkError) {
        guard !masqueradeAll else { return }
        try hairpin.update(adding: adding, removing: removing)
    }

    /// Removes what the agent owns on the node (for `canary-agent cleanup`): its rules and its
    /// interface (with the addresses on it). IPv6 rules are removed where ip6tables has a nat table.
    public func removeAll() throws(NodeNetworkError) {
        try masquerade.remove(families: [.inet])
        try? masquerade.remove(families: [.inet6])
        try hairpin.remove()
        try links.deleteInterface(named: interface)
    }
}
