import Benchmark
import CanaryCore
import IPVS

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The planner at the size issue 3 asks for: 10,000 services × 25 endpoints, 5 of them canary at
// 10 %. CANARY_BENCH_SERVICES and CANARY_BENCH_ENDPOINTS set a smaller size (CI runs 100 × 5);
// CANARY_BENCH_SCHEDULER picks the scheduler (wrr by default).
//
// Goals: the full plan from an empty table under 1 s; the plan after one endpoint change under
// 1 ms and in proportion to the change, not to the table.

/// The size and shape of the table, from the environment.
struct BenchmarkSize: CustomStringConvertible {
    var services: Int
    var endpoints: Int
    var scheduler: Scheduler

    static let current = BenchmarkSize(
        services: integer("CANARY_BENCH_SERVICES") ?? 10_000,
        endpoints: integer("CANARY_BENCH_ENDPOINTS") ?? 25,
        scheduler: text("CANARY_BENCH_SCHEDULER").map(Scheduler.init(rawValue:)) ?? .weightedRoundRobin)

    var description: String { "\(services)x\(endpoints) \(scheduler)" }

    private static func text(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        let text = String(cString: value)
        return text.isEmpty ? nil : text
    }

    private static func integer(_ name: String) -> Int? {
        text(name).flatMap { Int($0) }.flatMap { $0 > 0 ? $0 : nil }
    }
}

/// The desired state and everything derived from it, built once outside the measurements.
struct PlannerWorkload {
    let size: BenchmarkSize
    let state: DesiredState
    let desired: DesiredTable
    let ownership: Ownership
    let planner: Planner
    /// The service whose endpoint changes in the incremental benchmark.
    let changedService: DesiredService
    /// Its last stable endpoint swapped for a new address.
    let changedServiceVariant: DesiredService

    init(size: BenchmarkSize) {
        self.size = size
        var services: [DesiredService] = []
        services.reserveCapacity(size.services)
        var bound = Set<IPAddress>(minimumCapacity: size.services)
        let canaryCount = max(1, size.endpoints / 5)
        for index in 0..<size.services {
            // Service i listens on 10.96.0.0 + i, port 80; its endpoints are 11.0.0.0 + 64 i + j.
            let virtualAddress = Self.ipv4(0x0A60_0000 + UInt32(index))
            bound.insert(virtualAddress)
            let endpoints = (0..<size.endpoints).map { Endpoint(Self.backend(service: index, endpoint: $0)) }
            services.append(
                DesiredService(
                    name: "bench/service-\(index):http",
                    key: .inet(.tcp, SocketAddress(address: virtualAddress, port: 80)), scheduler: size.scheduler,
                    stable: Array(endpoints.dropLast(canaryCount)), canary: Array(endpoints.suffix(canaryCount)),
                    canaryShare: CanaryShare(basisPoints: 1000) ?? .zero))
        }
        state = DesiredState(services: services)
        desired = DesiredTable(state)
        ownership = Ownership(boundAddresses: bound)
        planner = Planner(ownership: ownership, drainTimeout: .seconds(300))

        changedService = services[services.count / 2]
        var variant = changedService
        if let last = variant.stable.indices.last {
            variant.stable[last] = Endpoint(Self.backend(service: services.count / 2, endpoint: 63))
        }
        changedServiceVariant = variant
    }

    static func ipv4(_ value: UInt32) -> IPAddress {
        let bytes = [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
        guard let address = IPAddress(bytes: bytes) else { fatalError("four bytes are an IPv4 address") }
        return address
    }

    static func backend(service: Int, endpoint: Int) -> SocketAddress {
        SocketAddress(address: ipv4(0x0B00_0000 + UInt32(service) * 64 + UInt32(endpoint)), port: 8080)
    }
}

// Benchmarks run one after another: state shared between setup and the measured closure.
nonisolated(unsafe) var workload: PlannerWorkload?
/// The incremental benchmark's tables, mutated in place by each iteration.
nonisolated(unsafe) var incrementalDesired = DesiredTable()
nonisolated(unsafe) var incrementalCurrent: IPVSTableIndex = [:]
nonisolated(unsafe) var incrementalDrains = DrainTracker()
nonisolated(unsafe) var incrementalFlip = false

func loadWorkload() -> PlannerWorkload {
    if let workload { return workload }
    let loaded = PlannerWorkload(size: .current)
    workload = loaded
    return loaded
}

let metrics: [BenchmarkMetric] = [.wallClock, .mallocCountTotal, .peakMemoryResident]

/// For the benchmarks over the whole table: a few long iterations.
func wholeTableConfiguration() -> Benchmark.Configuration {
    .init(
        metrics: metrics, warmupIterations: 1, maxDuration: .seconds(10), maxIterations: 20,
        setup: { _ = loadWorkload() })
}

let benchmarks: @Sendable () -> Void = {
    let size = BenchmarkSize.current
    let now = ContinuousClock.now

    Benchmark(
        "Desired table: realize \(size)",
        configuration: wholeTableConfiguration()
    ) { benchmark in
        guard let workload else { return }
        for _ in benchmark.scaledIterations {
            blackHole(DesiredTable(workload.state))
        }
    }

    Benchmark(
        "Full plan from an empty table: \(size)",
        configuration: wholeTableConfiguration()
    ) { benchmark in
        guard let workload else { return }
        for _ in benchmark.scaledIterations {
            var drains = DrainTracker()
            let plan = workload.planner.plan(desired: workload.desired, current: [:], drains: &drains, now: now)
            blackHole(plan)
        }
    }

    Benchmark(
        "Full plan, table already applied: \(size)",
        configuration: wholeTableConfiguration()
    ) { benchmark in
        guard let workload else { return }
        for _ in benchmark.scaledIterations {
            var drains = DrainTracker()
            let plan = workload.planner.plan(
                desired: workload.desired, current: workload.desired.entries, drains: &drains, now: now)
            blackHole(plan)
        }
    }

    Benchmark(
        "One endpoint changed: realize + incremental plan + record, \(size)",
        configuration: .init(
            metrics: metrics, warmupIterations: 10, maxDuration: .seconds(5), maxIterations: 2000,
            setup: {
                let workload = loadWorkload()
                incrementalDesired = workload.desired
                incrementalCurrent = workload.desired.entries
                incrementalDrains = DrainTracker()
                // The plan must be exactly the change: one add, one drain.
                incrementalDesired.update(workload.changedServiceVariant)
                var drains = DrainTracker()
                let plan = workload.planner.plan(
                    changed: [workload.changedService.key], desired: incrementalDesired, current: incrementalCurrent,
                    drains: &drains, now: now)
                guard plan.operations.map(\.kind) == ["add-destination", "edit-destination"] else {
                    fatalError("one endpoint changed should plan one add and one drain, not \(plan.operations)")
                }
                incrementalDesired.update(workload.changedService)
                // Make the table model unique now, so that no iteration pays for copying it.
                let key = workload.changedService.key
                incrementalCurrent[key] = incrementalCurrent[key]
            },
            teardown: {
                incrementalDesired = DesiredTable()
                incrementalCurrent = [:]
            })
    ) { benchmark in
        guard let workload else { return }
        for _ in benchmark.scaledIterations {
            // Swap the endpoint back and forth: each change adds (or restores) one destination
            // and drains another.
            incrementalFlip.toggle()
            let key = workload.changedService.key
            incrementalDesired.update(
                incrementalFlip ? workload.changedServiceVariant : workload.changedService,
                kernelOrder: incrementalCurrent[key]?.destinations.map(\.address))
            let plan = workload.planner.plan(
                changed: CollectionOfOne(key), desired: incrementalDesired,
                current: incrementalCurrent, drains: &incrementalDrains, now: now)
            Planner.record(
                plan.operations, results: Array(repeating: .success(()), count: plan.operations.count),
                into: &incrementalCurrent)
            blackHole(plan)
        }
    }
}
