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
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
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
        // The real kernel: IPVS over generic netlink.
        .target(name: "IPVSNetlink", dependencies: ["IPVS", "CLibnlGenl", "CLibmnl"]),
        // Desired state, weight solver, planner. Pure Swift: no kernel, no cluster.
        .target(name: "CanaryCore", dependencies: ["IPVS"]),

        .executableTarget(
            name: "canary-agent",
            dependencies: [
                "IPVS", "IPVSNetlink", "CanaryCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        .testTarget(name: "IPVSTests", dependencies: ["IPVS", "IPVSNetlink"]),
        .testTarget(name: "IPVSKernelTests", dependencies: ["IPVS", "IPVSNetlink", "CanaryCore"]),
        .testTarget(
            name: "CanaryCoreTests",
            dependencies: [
                "CanaryCore", "IPVS",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
    ]
)
