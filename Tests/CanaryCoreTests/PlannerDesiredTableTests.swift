import IPVS
import Testing

@testable import CanaryCore

@Suite("Desired table: desired services realized as kernel entries")
struct PlannerDesiredTableTests {
    typealias F = PlannerFixture

    static func service(
        scheduler: Scheduler, key: ServiceKey = PlannerFixture.key(), persistence: Persistence? = nil,
        forwarding: ForwardingMethod = .masquerade
    ) -> DesiredService {
        DesiredService(
            name: "default/web:http", key: key, scheduler: scheduler, persistence: persistence, forwarding: forwarding,
            stable: [Endpoint(F.backend(1)), Endpoint(F.backend(2)), Endpoint(F.backend(3), state: .draining)],
            canary: [Endpoint(F.backend(4))], canaryShare: CanaryShare(basisPoints: 1000) ?? .zero)
    }

    @Test(
        "sh and mh carry the fallback flag (SCHED1), other schedulers no scheduler flag",
        arguments: [
            (Scheduler.sourceHashing, ServiceFlags.shFallback), (.maglevHashing, .shFallback),
            (.weightedRoundRobin, ServiceFlags()), (.roundRobin, ServiceFlags()),
        ])
    func schedulerFlags(scheduler: Scheduler, flags: ServiceFlags) {
        let (entry, _) = DesiredTable.realize(Self.service(scheduler: scheduler))
        #expect(entry.service.scheduler == scheduler)
        #expect(entry.service.flags == flags)
    }

    @Test("Persistence sets the persistent flag, its timeout and its netmask (the whole address by default)")
    func persistence() {
        let withMask = DesiredTable.realize(
            Self.service(scheduler: .sourceHashing, persistence: Persistence(timeout: 600, netmask: 0xFFFF_FF00))
        ).entry.service
        #expect(withMask.flags == [.persistent, .shFallback])
        #expect(withMask.timeout == 600)
        #expect(withMask.netmask == 0xFFFF_FF00)

        let v6Key = ServiceKey.inet(.tcp, SocketAddress(address: IPAddress("fd00::10") ?? F.virtualAddress(1), port: 80))
        let whole = DesiredTable.realize(
            Self.service(scheduler: .weightedRoundRobin, key: v6Key, persistence: Persistence(timeout: 60))
        ).entry.service
        #expect(whole.flags == .persistent)
        #expect(whole.netmask == 128)

        let none = DesiredTable.realize(Self.service(scheduler: .weightedRoundRobin)).entry.service
        #expect(!none.flags.contains(.persistent))
    }

    /// Two live stable endpoints, one draining, one canary at 10 % under wrr: 45 % : 45 % : 0 : 10 %
    /// is 9 : 9 : 0 : 2 in the smallest integers (written by hand, not asked of the solver).
    static let handWeights: [Int32] = [9, 9, 0, 2]

    @Test("Destinations: stable then canary, weights that give each its share, the service's forwarding method")
    func destinations() {
        let service = Self.service(scheduler: .weightedRoundRobin, forwarding: .directRoute)
        let (entry, assignment) = DesiredTable.realize(service)
        #expect(entry.destinations.map(\.address) == [F.backend(1), F.backend(2), F.backend(3), F.backend(4)])
        #expect(entry.destinations.allSatisfy { $0.forwarding == .directRoute })
        #expect(entry.destinations.map(\.weight) == Self.handWeights)
        #expect(abs(assignment.effectiveCanaryShare - 0.10) < 1e-9)
    }

    @Test("An address listed twice becomes one destination, the first occurrence kept", arguments: [4, 40])
    func duplicates(stableCount: Int) {
        let stable = (0..<stableCount).map { Endpoint(F.backend(UInt8(10 + $0))) }
        let service = DesiredService(
            name: "dup", key: F.key(), scheduler: .weightedRoundRobin, stable: stable + [stable[0]],
            canary: [stable[1], Endpoint(F.backend(200))], canaryShare: CanaryShare(basisPoints: 500) ?? .zero)
        let (entry, _) = DesiredTable.realize(service)
        #expect(entry.destinations.map(\.address) == stable.map(\.address) + [F.backend(200)])
    }

    @Test("Given the kernel's table, each service is solved in the kernel's list order")
    func kernelOrder() throws {
        // sh with a draining destination: which buckets fall back where depends on the list order.
        let service = Self.service(scheduler: .sourceHashing)
        let listed = [F.backend(4), F.backend(2), F.backend(3), F.backend(1)]
        let current = F.table(F.entry(service.key, listed.map { Destination(address: $0, weight: 1) }))
        let table = DesiredTable(DesiredState(services: [service]), current: current)
        let entry = try #require(table[service.key])
        let weights = Dictionary(uniqueKeysWithValues: entry.destinations.map { ($0.address, Int($0.weight)) })
        // The oracle: the kernel's sh table (the model of ip_vs_sh.c) built in the kernel's order,
        // with sh-fallback, gives the canary (backend 4) the share the table says it has.
        let model = SourceHashingModel(weights: listed.map { weights[$0] ?? 0 })
        let served = model.servedBuckets(fallback: true)
        let canaryShare = Double(served[0]) / Double(SourceHashingModel.bucketCount)
        #expect(abs(try #require(table.assignments[service.key]).effectiveCanaryShare - canaryShare) < 1e-9)
        #expect(abs(canaryShare - 0.10) <= 1.0 / 256)
        #expect(served[2] == 0, "the draining endpoint takes no new client")

        var updated = DesiredTable()
        updated.update(service, kernelOrder: listed)
        #expect(updated == table)
    }

    @Test("The table realizes every service, updates one and removes one")
    func table() {
        let first = Self.service(scheduler: .sourceHashing, key: F.key(host: 1))
        var second = Self.service(scheduler: .weightedRoundRobin, key: F.key(host: 2))
        var table = DesiredTable(DesiredState(services: [first, second]))
        #expect(table.entries.count == 2)
        #expect(table[F.key(host: 1)]?.service.scheduler == .sourceHashing)
        #expect(table[F.key(host: 2)]?.destinations.map(\.weight) == Self.handWeights)

        second.scheduler = .maglevHashing
        table.update(second)
        #expect(table[F.key(host: 2)]?.service.scheduler == .maglevHashing)
        table.remove(F.key(host: 1))
        #expect(table[F.key(host: 1)] == nil)
        #expect(table.assignments[F.key(host: 1)] == nil)
        #expect(table.entries.count == 1)
    }
}
