import CanaryCore
import Foundation
import IPVS

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The size, from the environment as for the planner benchmarks: CANARY_BENCH_SERVICES ×
/// CANARY_BENCH_ENDPOINTS (default 10,000 × 10; `run.sh` runs 10 and 25), wrr.
package struct HostSize: CustomStringConvertible, Sendable {
    package var services: Int
    package var endpoints: Int

    package init(services: Int, endpoints: Int) {
        self.services = services
        self.endpoints = endpoints
    }

    package static let current = HostSize(
        services: integer("CANARY_BENCH_SERVICES") ?? 10_000, endpoints: integer("CANARY_BENCH_ENDPOINTS") ?? 10)

    /// The last fifth of each service's endpoints are canary, at 10 %.
    package var canaryCount: Int { max(1, endpoints / 5) }
    package var stableCount: Int { endpoints - canaryCount }
    package var destinations: Int { services * endpoints }

    package var description: String { "\(services)x\(endpoints)" }

    private static func integer(_ name: String) -> Int? {
        guard let value = getenv(name) else { return nil }
        return Int(String(cString: value)).flatMap { $0 > 0 ? $0 : nil }
    }
}

/// The table of the planner benchmarks and of `perf/` (issue 7), in each of the agent's inputs:
/// service i listens on TCP 10.96.0.0 + i port 80; its endpoints are 11.0.0.0 + 64 i + j port 8080,
/// the last fifth of them canary at 10 %.
package enum HostWorkload {
    package static let namespace = "bench"

    package static func ipv4(_ value: UInt32) -> IPAddress {
        let bytes = [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
        guard let address = IPAddress(bytes: bytes) else { fatalError("four bytes are an IPv4 address") }
        return address
    }

    package static func virtualAddress(_ service: Int) -> IPAddress { ipv4(0x0A60_0000 + UInt32(service)) }
    package static func canaryClusterIP(_ service: Int) -> IPAddress { ipv4(0x0A70_0000 + UInt32(service)) }

    /// Endpoint j of service i (j < 64).
    package static func backend(_ service: Int, _ endpoint: Int) -> IPAddress {
        ipv4(0x0B00_0000 + UInt32(service) * 64 + UInt32(endpoint))
    }

    package static func key(_ service: Int) -> ServiceKey {
        .inet(.tcp, SocketAddress(address: virtualAddress(service), port: 80))
    }

    // MARK: The desired state, as a static source would hand it over

    package static func desiredService(_ index: Int, size: HostSize) -> DesiredService {
        let all = (0..<size.endpoints).map { Endpoint(SocketAddress(address: backend(index, $0), port: 8080)) }
        return DesiredService(
            name: "bench/service-\(index):http", key: key(index), scheduler: .weightedRoundRobin,
            stable: Array(all.prefix(size.stableCount)), canary: Array(all.suffix(size.canaryCount)),
            canaryShare: CanaryShare(basisPoints: 1000) ?? .zero)
    }

    package static func desiredState(size: HostSize) -> DesiredState {
        var list: [DesiredService] = []
        list.reserveCapacity(size.services)
        for index in 0..<size.services { list.append(desiredService(index, size: size)) }
        return DesiredState(services: list)
    }

    /// Every virtual address, the agent's own.
    package static func ownership(size: HostSize) -> Ownership {
        Ownership(boundAddresses: Set((0..<size.services).map(virtualAddress)))
    }

    /// The addresses of service i's stable slice; `variant` swaps its last address for endpoint 63.
    package static func stableAddresses(_ index: Int, size: HostSize, variant: Bool = false) -> [IPAddress] {
        var addresses = (0..<size.stableCount).map { backend(index, $0) }
        if variant, !addresses.isEmpty { addresses[addresses.count - 1] = backend(index, 63) }
        return addresses
    }

    package static func canaryAddresses(_ index: Int, size: HostSize) -> [IPAddress] {
        (size.stableCount..<size.endpoints).map { backend(index, $0) }
    }

    // MARK: The static file

    /// The static configuration file of the same services (as `PerfTool config` writes it).
    package static func staticYAML(size: HostSize) -> String {
        var out = "scheduler: wrr\nservices:\n"
        out.reserveCapacity(size.services * (64 + 20 * size.endpoints))
        for index in 0..<size.services {
            out += "  - name: bench-\(index)\n    address: \(virtualAddress(index))\n    port: 80\n"
            out += "    stable: ["
            out += stableAddresses(index, size: size).map { "\($0):8080" }.joined(separator: ", ")
            out += "]\n    canary:\n      weight: 10\n      endpoints: ["
            out += canaryAddresses(index, size: size).map { "\"\($0):8080\"" }.joined(separator: ", ")
            out += "]\n"
        }
        return out
    }
}
