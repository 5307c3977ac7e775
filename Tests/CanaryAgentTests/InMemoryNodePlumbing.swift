import CanaryAgent
import Foundation
import IPVS
import NodeNetwork

/// The node's interface, sysctls and rules in memory, for unit tests of the reconciler.
final class InMemoryNodePlumbing: NodePlumbing, @unchecked Sendable {
    private let lock = NSLock()
    private var _addresses: Set<IPAddress> = []
    private var _masqueraded: Set<IPAddress>?
    private var _failBind: Set<IPAddress> = []
    private var _bindRequests = 0
    private var _masqueradeCalls: [MasqueradeCall] = []
    private var _failMasqueradeUpdates = false

    enum MasqueradeCall: Equatable {
        case sync(rewrite: Bool)
        case update(adding: Set<IPAddress>, removing: Set<IPAddress>)
    }

    init(addresses: Set<IPAddress> = []) { _addresses = addresses }

    var addresses: Set<IPAddress> { lock.withLock { _addresses } }
    var masqueraded: Set<IPAddress>? { lock.withLock { _masqueraded } }

    /// How many times `bind` was called (each call may bind many addresses).
    var bindRequests: Int { lock.withLock { _bindRequests } }
    /// Every masquerade call, in order.
    var masqueradeCalls: [MasqueradeCall] { lock.withLock { _masqueradeCalls } }

    /// Makes `bind` refuse the address (or take it again).
    func failBinding(_ address: IPAddress, _ fail: Bool = true) {
        lock.withLock {
            if fail { _failBind.insert(address) } else { _failBind.remove(address) }
        }
    }
    func failMasqueradeUpdates(_ fail: Bool) { lock.withLock { _failMasqueradeUpdates = fail } }

    func prepare(ipv6: Bool) throws(NodeNetworkError) -> [String] { [] }

    func boundAddresses() throws(NodeNetworkError) -> Set<IPAddress> { addresses }

    func bind(_ addresses: [IPAddress]) throws(NodeNetworkError) -> [Result<Void, NodeNetworkError>] {
        lock.withLock {
            _bindRequests += 1
            return addresses.map { address in
                if _failBind.contains(address) {
                    return .failure(.netlink(operation: "add address", subject: "\(address)", errno: 1))
                }
                _addresses.insert(address)
                return .success(())
            }
        }
    }

    func unbind(_ address: IPAddress) throws(NodeNetworkError) {
        lock.withLock { _ = _addresses.remove(address) }
    }

    func syncMasquerade(endpoints: Set<IPAddress>, rewrite: Bool) throws(NodeNetworkError) {
        lock.withLock {
            _masqueraded = endpoints
            _masqueradeCalls.append(.sync(rewrite: rewrite))
        }
    }

    func updateMasquerade(adding: Set<IPAddress>, removing: Set<IPAddress>) throws(NodeNetworkError) {
        let fails = lock.withLock {
            guard !_failMasqueradeUpdates else { return true }
            _masqueraded = (_masqueraded ?? []).subtracting(removing).union(adding)
            _masqueradeCalls.append(.update(adding: adding, removing: removing))
            return false
        }
        if fails { throw .command(command: "ipset -exist restore", output: "exit status 1") }
    }
}
