// swift-tools-version:6.1
// libFuzzer targets for the agent's boundaries (see README.md here). A package of its own, like
// Benchmarks/: built only by Tests/fuzz/run.sh, with -sanitize=fuzzer, never by the root package.
import PackageDescription

let package = Package(
    name: "canary-agent-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [.package(name: "canary-agent", path: "../..")],
    targets: [
        // libFuzzer's driver, called from each target's main.
        .target(name: "FuzzDriver"),
        // Netlink replies: message split, the in-place ack loop, IPVS service and destination decoding.
        .executableTarget(
            name: "FuzzNetlink",
            dependencies: [
                .product(name: "IPVSNetlink", package: "canary-agent"),
                .product(name: "IPVS", package: "canary-agent"), "FuzzDriver",
            ]),
        // The static YAML file: alias and size bounds, every field check.
        .executableTarget(
            name: "FuzzStaticYAML",
            dependencies: [.product(name: "StaticConfig", package: "canary-agent"), "FuzzDriver"]),
        // The Kubernetes boundary: the watch-stream framer, the JSON decoding of watch events, list pages
        // and Status, and the translation (cache and full) of what was decoded.
        .executableTarget(
            name: "FuzzKubernetes",
            dependencies: [
                .product(name: "KubernetesSource", package: "canary-agent"),
                .product(name: "CanaryCore", package: "canary-agent"),
                .product(name: "IPVS", package: "canary-agent"), "FuzzDriver",
            ]),
    ]
)
