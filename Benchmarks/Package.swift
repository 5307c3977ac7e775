// swift-tools-version: 6.1
import PackageDescription

// Benchmarks for canary-agent, a package of their own (as swift-nio's and swift-prometheus's are) so
// that the agent itself does not depend on the benchmark package. Run them with ./run.sh.

// A package found by path is named by its directory's last component, whatever the clone is called.
let agentPackage = Context.packageDirectory.split(separator: "/").dropLast().last.map(String.init) ?? "main"

let package = Package(
    name: "canary-agent-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "PlannerBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "CanaryCore", package: agentPackage),
                .product(name: "IPVS", package: agentPackage),
            ],
            path: "Benchmarks/PlannerBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // Issue 7's measurements against the real kernel, run in a VM by perf/run.sh: the agent's
        // full sync, dump and table check. Not a package-benchmark suite: each run is one process.
        .executableTarget(
            name: "PerfTool",
            dependencies: [
                .product(name: "CanaryCore", package: agentPackage),
                .product(name: "IPVS", package: agentPackage),
                .product(name: "IPVSNetlink", package: agentPackage),
            ],
            path: "perf/PerfTool"
        ),
    ]
)
