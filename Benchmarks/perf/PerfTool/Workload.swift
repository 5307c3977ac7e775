import CanaryCore
import IPVS

/// The table of issue 7: `services` virtual services (TCP 10.96.0.0 + i, port 80, wrr) with
/// `endpoints` destinations each (11.0.0.0 + 64 i + j, port 8080), the last fifth of them canary
/// at 10 %: the same shape as the planner benchmarks (Benchmarks/PlannerBenchmarks).
struct PerfWorkload {
    let services: Int
    let endpoints: Int
    let scheduler: Scheduler

    init(services: Int, endpoints: Int, scheduler: Scheduler = .weightedRoundRobin) {
        self.services = services
        self.endpoints = endpoints
        self.scheduler = scheduler
    }

    /// Addresses of the services, the agent's own (what it binds to its dummy interface).
    var virtualAddresses: Set<IPAddress> {
        Set((0..<services).map { Self.virtualAddress(service: $0) })
    }

    var canaryCount: Int { max(1, endpoints / 5) }

    func desiredService(_ index: Int) -> DesiredService {
        let all = (0..<endpoints).map { Endpoint(Self.backend(service: index, endpoint: $0)) }
        return DesiredService(
            name: "perf/service-\(index):http",
            key: Self.key(service: index), scheduler: scheduler,
            stable: Array(all.dropLast(canaryCount)), canary: Array(all.suffix(canaryCount)),
            canaryShare: CanaryShare(basisPoints: 1000) ?? .zero)
    }

    func desiredState() -> DesiredState {
        var list: [DesiredService] = []
        list.reserveCapacity(services)
        for index in 0..<services { list.append(desiredService(index)) }
        return DesiredState(services: list)
    }

    static func key(service index: Int) -> ServiceKey {
        .inet(.tcp, SocketAddress(address: virtualAddress(service: index), port: 80))
    }

    static func virtualAddress(service index: Int) -> IPAddress {
        ipv4(0x0A60_0000 + UInt32(index))
    }

    /// Endpoint `endpoint` of service `index`; endpoints 0..<63 of each service never collide
    /// with another service's.
    static func backend(service index: Int, endpoint: Int) -> SocketAddress {
        SocketAddress(address: ipv4(0x0B00_0000 + UInt32(index) * 64 + UInt32(endpoint)), port: 8080)
    }

    static func ipv4(_ value: UInt32) -> IPAddress {
        let bytes = [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
        guard let address = IPAddress(bytes: bytes) else { fatalError("four bytes are an IPv4 address") }
        return address
    }
}
