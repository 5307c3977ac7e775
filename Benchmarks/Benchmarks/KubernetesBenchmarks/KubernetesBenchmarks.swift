import Benchmark
import CanaryCore
import HostScenarios
import IPVS
import KubernetesScenarios

#if canImport(MallocInterposerSwift)
import MallocInterposerSwift
#endif

// Issue 17, "first, on the host": the Kubernetes half of the host suite (HostBenchmarks has the
// rest), at CANARY_BENCH_SERVICES × CANARY_BENCH_ENDPOINTS (run.sh: 10,000 × 10 and 10,000 × 25).
//
// Goal: one watch event end to end (JSON bytes → operations) p99 < 1 ms, with allocations in
// proportion to the change; and the memory the agent holds per destination in Kubernetes mode.

let size = HostSize.current

// Benchmarks run one after another: state shared between setup and the measured closure.
nonisolated(unsafe) var eventPath: EventPath?
nonisolated(unsafe) var changePath: ChangePath?

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
let operationsPerEvent = BenchmarkMetric.custom("Operations per event", useScalingFactor: false)

let benchmarks: @Sendable () -> Void = {
    // 1. One watch event, JSON bytes to operations.
    Benchmark(
        "Watch event to operations: one endpoint of one slice, \(size)",
        configuration: .init(
            metrics: [.wallClock, .mallocCountTotal, operationsPerEvent], warmupIterations: 10,
            maxDuration: .seconds(5), maxIterations: 5000,
            setup: {
                var path = EventPath(size: size)
                // The change must be exactly one add and one drain; swapped back, one restore
                // (the drained endpoint's weight) and one drain.
                let first = path.take().map(\.kind), second = path.take().map(\.kind)
                guard first == ["add-destination", "edit-destination"], second.count == 2 else {
                    fatalError("one endpoint changed should plan one add and one drain, then two edits, not \(first), \(second)")
                }
                eventPath = path
            },
            teardown: { eventPath = nil })
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            let operations = eventPath!.take()
            benchmark.measurement(operationsPerEvent, operations.count)
            blackHole(operations)
        }
    }

    // 2. One weight change, side by side: the annotation scheme's and a Gateway API route's (as
    // Argo Rollouts' plugin writes a step), over the same cluster.
    for kind in [ChangePath.Kind.annotation, .route] {
        Benchmark(
            "Weight change to operations: \(kind == .route ? "a TCPRoute's weights" : "a canary-weight annotation"), \(size)",
            configuration: .init(
                metrics: [.wallClock, .mallocCountTotal, operationsPerEvent], warmupIterations: 10,
                maxDuration: .seconds(5), maxIterations: 5000,
                setup: {
                    var path = ChangePath(size: size, kind: kind)
                    // A weight change of one service is weight edits of its destinations, nothing else.
                    let first = path.take()
                    guard !first.isEmpty, first.allSatisfy({ $0.kind == "edit-destination" }) else {
                        fatalError("a weight change should plan only weight edits, not \(first.map(\.kind))")
                    }
                    changePath = path
                },
                teardown: { changePath = nil })
        ) { benchmark in
            for _ in benchmark.scaledIterations {
                let operations = changePath!.take()
                benchmark.measurement(operationsPerEvent, operations.count)
                blackHole(operations)
            }
        }
    }

    Benchmark(
        "Memory held, Kubernetes mode: source caches + desired state + desired table + applied table, \(size)",
        configuration: .init(
            metrics: [.mallocCountTotal, bytesRetained, bytesPerDestination], warmupIterations: 0,
            maxDuration: .seconds(30), maxIterations: 3)
    ) { benchmark in
        let counter = HeapCounter()
        let path = EventPath(size: size)
        let retained = counter.retained
        benchmark.measurement(bytesRetained, retained)
        benchmark.measurement(bytesPerDestination, retained / size.destinations)
        blackHole(path)
    }
}
