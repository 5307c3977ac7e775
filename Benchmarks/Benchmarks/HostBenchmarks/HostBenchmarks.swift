import Benchmark
import CanaryCore
import HostScenarios
import IPVS
import StaticConfig

#if canImport(MallocInterposerSwift)
import MallocInterposerSwift
#endif

// Issue 17, "first, on the host": everything of the agent's path that needs no kernel nor the
// Kubernetes client (its watch event is KubernetesBenchmarks, whose build pulls in the HTTP stack), at
// CANARY_BENCH_SERVICES × CANARY_BENCH_ENDPOINTS (run.sh: 10,000 × 10 and 10,000 × 25; CI 100 × 5).
//
// Goals: the weights of every service and the full plan < 100 ms together; the
// static file of 10,000 services (3 MB) parsed and checked < 1 s; and the memory the agent holds
// per destination, from the malloc counters.

let size = HostSize.current

// Benchmarks run one after another: state shared between setup and the measured closure.
nonisolated(unsafe) var wholeTable: WholeTable?
nonisolated(unsafe) var staticYAML = ""

func loadWholeTable() -> WholeTable {
    if let wholeTable { return wholeTable }
    let loaded = WholeTable(size: size)
    wholeTable = loaded
    return loaded
}

/// Bytes requested from malloc and not freed since `start`: what a structure built meanwhile holds.
struct HeapCounter {
    #if canImport(MallocInterposerSwift)
    init() {}
    let start = MallocInterposerSwift.getStatistics()
    var retained: Int {
        let stop = MallocInterposerSwift.getStatistics()
        return (stop.mallocBytesCount - start.mallocBytesCount) - (stop.freeBytesCount - start.freeBytesCount)
    }
    #else
    var retained: Int { 0 }
    #endif
}

let bytesPerDestination = BenchmarkMetric.custom("Retained bytes per destination", useScalingFactor: false)
let bytesRetained = BenchmarkMetric.custom("Retained bytes (total)", useScalingFactor: false)
let serviceShapes = BenchmarkMetric.custom("Distinct service shapes", useScalingFactor: false)

/// For the benchmarks over the whole table: a few long iterations.
func wholeTableConfiguration(_ extra: [BenchmarkMetric] = [], setup: @escaping () -> Void = { _ = loadWholeTable() })
    -> Benchmark.Configuration
{
    .init(
        metrics: [.wallClock, .mallocCountTotal] + extra, warmupIterations: 1, maxDuration: .seconds(10), maxIterations: 20,
        setup: setup)
}

let benchmarks: @Sendable () -> Void = {
    // 2. The weights of every service and the full plan.
    Benchmark(
        "Weight solver alone, every service: \(size)",
        configuration: wholeTableConfiguration([serviceShapes])
    ) { benchmark in
        guard let whole = wholeTable else { return }
        for _ in benchmark.scaledIterations {
            for service in whole.state.services.values { blackHole(WeightSolver.solve(service, kernelOrder: nil)) }
        }
        benchmark.measurement(serviceShapes, whole.shapes)
    }

    Benchmark(
        "Full sync's planning: realize every service + plan from an empty table, \(size)",
        configuration: wholeTableConfiguration()
    ) { benchmark in
        guard let whole = wholeTable else { return }
        for _ in benchmark.scaledIterations {
            let table = DesiredTable(whole.state)
            var drains = DrainTracker()
            blackHole(whole.planner.plan(desired: table, current: [:], drains: &drains, now: HostWorkload.now))
        }
    }

    Benchmark(
        "Drift check's planning: realize every service in kernel order + plan against an equal table, \(size)",
        configuration: wholeTableConfiguration()
    ) { benchmark in
        guard let whole = wholeTable else { return }
        for _ in benchmark.scaledIterations {
            let table = DesiredTable(whole.state, current: whole.applied)
            var drains = DrainTracker()
            let plan = whole.planner.plan(desired: table, current: whole.applied, drains: &drains, now: HostWorkload.now)
            guard plan.isEmpty else { fatalError("an equal table should plan nothing, not \(plan.operations.count) operations") }
        }
    }

    // 3. The static file.
    Benchmark(
        "Static file: parse and check, \(size)",
        configuration: .init(
            metrics: [.wallClock, .mallocCountTotal, .custom("File size (KiB)", useScalingFactor: false)],
            warmupIterations: 1, maxDuration: .seconds(20), maxIterations: 10,
            setup: { staticYAML = HostWorkload.staticYAML(size: size) },
            teardown: { staticYAML = "" })
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            do {
                let configuration = try StaticConfiguration(yaml: staticYAML, file: "bench.yaml")
                guard configuration.services.count == size.services else { fatalError("\(configuration.services.count) services read") }
                blackHole(configuration)
            } catch {
                fatalError("the generated file should be valid: \(error)")
            }
        }
        benchmark.measurement(.custom("File size (KiB)", useScalingFactor: false), staticYAML.utf8.count / 1024)
    }

    // 4. The memory held per destination, counted by the malloc interposer: bytes requested and
    // not freed while building what the agent keeps, divided by the destinations. Two cases:
    // static mode (the desired state, the desired table with its solver assignments, and the
    // applied table index the full sync recorded) and Kubernetes mode (the same, plus the source's
    // caches of Services and EndpointSlices with their indexes and last translation).
    Benchmark(
        "Memory held, static mode: desired state + desired table + applied table, \(size)",
        configuration: .init(
            metrics: [.mallocCountTotal, bytesRetained, bytesPerDestination], warmupIterations: 0,
            maxDuration: .seconds(30), maxIterations: 3)
    ) { benchmark in
        let counter = HeapCounter()
        let whole = WholeTable(size: size)
        let retained = counter.retained
        benchmark.measurement(bytesRetained, retained)
        benchmark.measurement(bytesPerDestination, retained / size.destinations)
        blackHole(whole)
    }

}
