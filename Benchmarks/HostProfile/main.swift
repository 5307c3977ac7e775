import CanaryCore
import HostScenarios
import StaticConfig

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// One of the host suite's scenarios in a loop, with no benchmark harness around it, so that
// `valgrind --tool=callgrind` shows where its time goes (instruction counts are repeatable on a
// shared machine, wall clock is not). The size comes from CANARY_BENCH_SERVICES and
// CANARY_BENCH_ENDPOINTS as for the benchmarks. Setup is not separated from the loop: compare a run
// of N iterations with one of 0, or read the callee tree under the scenario's function.
//
//   HostProfile full   [ITERATIONS]   realize every service + plan from an empty table (default 1)
//   HostProfile drift  [ITERATIONS]   realize in kernel order + plan against an equal table (default 1)
//   HostProfile static [ITERATIONS]   parse and check the static file (default 1)

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    Usage.fail("usage: HostProfile full|drift|static [ITERATIONS]")
}
let size = HostSize.current
let iterations = arguments.count >= 3 ? Int(arguments[2]) ?? 1 : 1

enum Usage {
    static func fail(_ message: String) -> Never {
        print(message)
        exit(2)
    }
}

@inline(never) func runFull(_ whole: WholeTable, _ count: Int) -> Int {
    var operations = 0
    for _ in 0..<count {
        let table = DesiredTable(whole.state)
        var drains = DrainTracker()
        operations += whole.planner.plan(desired: table, current: [:], drains: &drains, now: HostWorkload.now).operations.count
    }
    return operations
}

@inline(never) func runDrift(_ whole: WholeTable, _ count: Int) -> Int {
    var operations = 0
    for _ in 0..<count {
        let table = DesiredTable(whole.state, current: whole.applied)
        var drains = DrainTracker()
        operations += whole.planner.plan(desired: table, current: whole.applied, drains: &drains, now: HostWorkload.now)
            .operations.count
    }
    return operations
}

@inline(never) func runStatic(_ yaml: String, _ count: Int) -> Int {
    var services = 0
    for _ in 0..<count {
        do {
            services += try StaticConfiguration(yaml: yaml, file: "bench.yaml").services.count
        } catch {
            Usage.fail("\(error)")
        }
    }
    return services
}

let clock = ContinuousClock()
let started = clock.now
var result = 0
switch arguments[1] {
case "full", "drift":
    let whole = WholeTable(size: size)
    let ready = clock.now
    result = arguments[1] == "full" ? runFull(whole, iterations) : runDrift(whole, iterations)
    print("setup \(ready - started), \(iterations) × \(arguments[1]) in \(clock.now - ready): \(result) operations")
case "static":
    let yaml = HostWorkload.staticYAML(size: size)
    let ready = clock.now
    result = runStatic(yaml, iterations)
    print("setup \(ready - started), \(iterations) × static (\(yaml.utf8.count) bytes) in \(clock.now - ready): \(result) services")
default:
    Usage.fail("usage: HostProfile full|drift|static [ITERATIONS]")
}
