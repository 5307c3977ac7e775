// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "canary-agent",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "canary-agent", targets: ["canary-agent"]),
        .library(name: "IPVS", targets: ["IPVS"]),
        .library(name: "IPVSNetlink", targets: ["IPVSNetlink"]),
        .library(name: "CanaryCore", targets: ["CanaryCore"]),
        .library(name: "StaticConfig", targets: ["StaticConfig"]),
        .library(name: "KubernetesSource", targets: ["KubernetesClient", "KubernetesSource"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // C libraries, found with pkg-config; installed from Debian's -dev packages.
        .systemLibrary(
            name: "CLibnlGenl",
            pkgConfig: "libnl-genl-3.0",
            providers: [.apt(["libnl-3-dev", "libnl-genl-3-dev"])]
        ),
        .systemLibrary(
            name: "CLibmnl",
            pkgConfig: "libmnl",
            providers: [.apt(["libmnl-dev"])]
        ),

        // The IPVS data model, the operations on it and the kernel protocol. Pure Swift.
        .target(name: "IPVS"),
        // The real kernel: IPVS over generic netlink (the family resolved with libnl-genl).
        .target(name: "IPVSNetlink", dependencies: ["IPVS", "Netlink", "CLibnlGenl", "CLibmnl"]),
        // The one netlink stack (libmnl): socket, requests, batches with one ack each, dumps, and the
        // checked parser. IPVSNetlink and NodeNetwork use it alike.
        .target(name: "Netlink", dependencies: ["CLibmnl"]),
        // Desired state, weight solver, planner. Pure Swift: no kernel, no cluster.
        .target(name: "CanaryCore", dependencies: ["IPVS"]),

        // A small Kubernetes client: configuration, list+watch informers over async-http-client.
        .target(
            name: "KubernetesClient",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // Services, EndpointSlices and the Node → the desired state (the annotation scheme).
        .target(
            name: "KubernetesSource",
            dependencies: [
                "KubernetesClient", "CanaryCore", "IPVS", .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),

        // The static YAML configuration of a host outside Kubernetes → the desired state, and its source
        // (the file watched and read again on change or SIGHUP).
        .target(
            name: "StaticConfig",
            dependencies: [
                "CanaryCore", "IPVS", .product(name: "Yams", package: "Yams"), .product(name: "Logging", package: "swift-log"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),

        // The node's own plumbing: the dummy interface and its addresses (rtnetlink over libmnl),
        // the sysctls IPVS needs, the masquerade rules (iptables-restore).
        .target(
            name: "NodeNetwork",
            dependencies: ["IPVS", "Netlink", "CLibmnl", .product(name: "Logging", package: "swift-log")]
        ),

        // glibc's malloc_trim, for the daemon after its large one-off work.
        .target(name: "CHeapTrim"),

        // The daemon: sources → reconciler → kernel, node plumbing, metrics and health endpoints.
        .target(
            name: "CanaryAgent",
            dependencies: [
                "IPVS", "IPVSNetlink", "CanaryCore", "KubernetesClient", "KubernetesSource", "StaticConfig",
                "NodeNetwork", "CHeapTrim",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),

        .executableTarget(
            name: "canary-agent",
            dependencies: [
                "IPVS", "IPVSNetlink", "CanaryCore", "KubernetesClient", "KubernetesSource", "StaticConfig",
                "NodeNetwork", "CanaryAgent",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),

        // An IPVS table in memory with the kernel's semantics: for unit tests only.
        .target(name: "IPVSTestSupport", dependencies: ["IPVS"], path: "Tests/Support/IPVSTestSupport"),

        .testTarget(name: "IPVSTests", dependencies: ["IPVS", "IPVSNetlink", "Netlink", "IPVSTestSupport"]),
        .testTarget(name: "IPVSKernelTests", dependencies: ["IPVS", "IPVSNetlink", "CanaryCore", "IPVSTestSupport"]),
        .testTarget(
            name: "CanaryCoreTests",
            dependencies: [
                "CanaryCore", "IPVS", "IPVSTestSupport",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
        .testTarget(name: "NodeNetworkTests", dependencies: ["NodeNetwork", "IPVS", "Netlink"]),
        .testTarget(
            name: "CanaryAgentTests",
            dependencies: [
                "CanaryAgent", "CanaryCore", "IPVS", "IPVSTestSupport", "NodeNetwork", "StaticConfig",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(name: "StaticConfigTests", dependencies: ["StaticConfig", "CanaryCore", "IPVS"]),
        .testTarget(
            name: "KubernetesTests",
            dependencies: [
                "KubernetesClient", "KubernetesSource", "CanaryCore", "IPVS",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
    ]
)
