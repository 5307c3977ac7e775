import CanaryAgent
import Foundation
import IPVS
import NodeNetwork

/// The node's interface, sysctls and rules in memory, for unit tests of the reconciler.
final class InMemoryNodePlumbing: NodePlumbing, @unchecked Sendable {
    private let lock = NSLock()
    private var _addresses: Set<IPAddress> = []
    private var _masqueraded: Set<IPAddress>?
    private var _preparations: [Bool] = []
    private var _failBind: Set<IPAddress> = []

    init(addresses: Set<IPAddress> = []) { _addresses = addresses }

    var addresses: Set<IPAddress> { lock.withLock { _addresses } }
    var masqueraded: Set<IPAddress>? { lock.withLock { _masqueraded } }
    /// The `ipv6` argument of every `prepare` call.
    var preparations: [Bool] { lock.withLock { _preparations } }

    func failBinding(_ address: IPAddress) { lock.withLock { _ = _failBind.insert(address) } }

    func prepare(ipv6: Bool) throws(NodeNetworkError) -> [String] {
        lock.withLock { _preparations.append(ipv6) }
        return []
    }

    func boundAddresses() throws(NodeNetworkError) -> Set<IPAddress> { addresses }

    func bind(_ address: IPAddress) throws(NodeNetworkError) {
        let fails = lock.withLock { _failBind.contains(address) }
        if fails { throw .netlink(operation: "add address", subject: "\(address)", errno: 1) }
        lock.withLock { _ = _addresses.insert(address) }
    }

    func unbind(_ address: IPAddress) throws(NodeNetworkError) {
        lock.withLock { _ = _addresses.remove(address) }
    }

    func updateMasquerade(endpoints: Set<IPAddress>) throws(NodeNetworkError) {
        lock.withLock { _masqueraded = endpoints }
    }
}
