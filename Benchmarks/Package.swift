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
        // Issue 17's host benchmarks: everything of the agent's path that needs no kernel. Two
        // targets, so that the half without the Kubernetes client (the full solve and plan, the
        // static file, the memory in static mode) builds without the HTTP and TLS stack.
        .executableTarget(
            name: "HostBenchmarks",
            dependencies: [
                "HostScenarios",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "CanaryCore", package: agentPackage),
                .product(name: "IPVS", package: agentPackage),
                .product(name: "StaticConfig", package: agentPackage),
            ],
            path: "Benchmarks/HostBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // One watch event end to end and the memory in Kubernetes mode.
        .executableTarget(
            name: "KubernetesBenchmarks",
            dependencies: [
                "HostScenarios", "KubernetesScenarios",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "CanaryCore", package: agentPackage),
                .product(name: "IPVS", package: agentPackage),
            ],
            path: "Benchmarks/KubernetesBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // The host suites' inputs and scenarios, shared with HostProfile: the table, the static file.
        .target(
            name: "HostScenarios",
            dependencies: [
                .product(name: "CanaryCore", package: agentPackage),
                .product(name: "IPVS", package: agentPackage),
            ],
            path: "HostScenarios"
        ),
        // The same table as a cluster (Services, EndpointSlices, a watch event) and the event path.
        .target(
            name: "KubernetesScenarios",
            dependencies: [
                "HostScenarios",
                .product(name: "CanaryCore", package: agentPackage),
                .product(name: "IPVS", package: agentPackage),
                .product(name: "KubernetesSource", package: agentPackage),
            ],
            path: "KubernetesScenarios"
        ),
        // One host scenario in a loop, without package-benchmark: for `valgrind --tool=callgrind`
        // (see README "Where the time goes").
        .executableTarget(
            name: "HostProfile",
            dependencies: [
                "HostScenarios",
                .product(name: "CanaryCore", package: agentPackage),
                .product(name: "StaticConfig", package: agentPackage),
            ],
            path: "HostProfile"
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
