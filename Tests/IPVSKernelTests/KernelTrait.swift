import IPVS
import IPVSNetlink
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What the kernel under the tests can do, probed once.
enum KernelCapability {
    /// Whether the kernel's IPVS generic netlink family answers.
    static let ipvs: Result<Void, IPVSError> = NetlinkIPVS.probe()

    /// Inside the VM bench (CANARY_REQUIRE_KERNEL=1) a missing capability is a failure, not a skip.
    static var isRequired: Bool { getenv("CANARY_REQUIRE_KERNEL").map { String(cString: $0) == "1" } ?? false }

    static var ipvsSkipReason: Comment {
        switch ipvs {
        case .success: "IPVS is available"
        case .failure(let error):
            "skipped: \(error) — this kernel has no IPVS; run Tests/vm/run-kernel-tests.sh for the real-kernel suite"
        }
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs the test only on a kernel whose IPVS answers over generic netlink (the VM bench);
    /// elsewhere it is skipped with the reason, unless CANARY_REQUIRE_KERNEL=1 makes it run (and fail).
    static var requiresIPVS: Self {
        .enabled(if: KernelCapability.isRequired || (try? KernelCapability.ipvs.get()) != nil, KernelCapability.ipvsSkipReason)
    }
}

/// The kernel's IPVS table is one per network namespace, and Swift Testing runs tests in
/// parallel: kernel tests take the table in turn, each from an empty table.
enum KernelTable {
    private static let lock = Mutex<Void>(())

    /// Runs `body` alone on an empty table and empties it again afterwards.
    static func exclusive<R>(_ body: (NetlinkIPVS) throws -> R) throws -> R {
        try lock.withLock { _ in
            let ipvs = try NetlinkIPVS()
            try ipvs.flush()
            defer { try? ipvs.flush() }
            return try body(ipvs)
        }
    }
}
