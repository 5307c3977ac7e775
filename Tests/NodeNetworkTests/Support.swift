import IPVS
import Synchronization
import Testing

@testable import NodeNetwork

#if canImport(Glibc)
import Glibc
#endif

/// Runs test bodies in a network namespace of their own: a dedicated thread unshares its network
/// namespace (a per-thread operation), runs the body there and ends. Sockets it opens and commands
/// it spawns live in that namespace, which disappears with its last user; the node's own network
/// is never touched, and nothing is left to clean up.
enum NetworkNamespace {
    private final class Job: @unchecked Sendable {
        let work: () -> Void
        init(_ work: @escaping () -> Void) { self.work = work }
    }

    /// Errors of the harness itself.
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    private typealias UnshareFunction = @convention(c) (Int32) -> Int32
    private static let cloneNewNet: Int32 = 0x4000_0000

    /// unshare(2) from the C library, found at run time (Glibc's module map does not export it).
    private static let unshare: UnshareFunction? = {
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "unshare") else { return nil }
        return unsafeBitCast(symbol, to: UnshareFunction.self)
    }()

    /// Runs `body` in a fresh, empty network namespace (its loopback is brought up) and returns
    /// what it returns or throws what it throws.
    static func run<R: Sendable>(_ body: @escaping @Sendable () throws -> R) throws -> R {
        let outcome = Mutex<Result<R, any Error>?>(nil)
        let job = Job {
            guard let unshare, unshare(cloneNewNet) == 0 else {
                let code = errno
                outcome.withLock { $0 = .failure(Failure(description: "unshare(CLONE_NEWNET): \(String(cString: strerror(code)))")) }
                return
            }
            let result = Result { () throws -> R in
                _ = try? SpawnCommandRunner().run("ip", ["link", "set", "lo", "up"], input: "")
                return try body()
            }
            outcome.withLock { $0 = result }
        }
        var thread = pthread_t()
        let started = pthread_create(&thread, nil, { raw in
            Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue().work()
            return nil
        }, Unmanaged.passRetained(job).toOpaque())
        guard started == 0 else { throw Failure(description: "pthread_create: \(String(cString: strerror(started)))") }
        pthread_join(thread, nil)
        guard let result = outcome.withLock({ $0 }) else { throw Failure(description: "the namespace thread returned nothing") }
        return try result.get()
    }
}

/// Runs a command in the caller's network namespace, failing the test on a non-zero exit.
@discardableResult
func shell(_ executable: String, _ arguments: String..., input: String = "") throws -> String {
    let result = try SpawnCommandRunner(timeoutSeconds: 30).run(executable, arguments, input: input)
    guard result.status == 0 else {
        throw NetworkNamespace.Failure(
            description: "\(executable) \(arguments.joined(separator: " ")) exited \(result.status): \(result.standardError)")
    }
    return result.standardOutput
}

/// What the kernel under the tests can do, each probed once in a scratch namespace.
enum NodeCapability {
    /// Inside the VM bench (CANARY_REQUIRE_KERNEL=1) a missing capability is a failure, not a skip.
    static var isRequired: Bool { getenv("CANARY_REQUIRE_KERNEL").map { String(cString: $0) == "1" } ?? false }

    /// Whether RouteNetlink can make a dummy interface (CONFIG_DUMMY).
    static let dummyInterfaces: Result<Void, any Error> = Result {
        try NetworkNamespace.run { try RouteNetlink().ensureDummyInterface(named: "probe0") }
    }

    /// Whether iptables takes the ipvs match (xt_ipvs, which needs IPVS in the kernel).
    static let ipvsMatch: Result<Void, any Error> = Result {
        try NetworkNamespace.run {
            try shell("iptables", "-w", "-t", "nat", "-N", "PROBE")
            try shell("iptables", "-w", "-t", "nat", "-A", "PROBE", "-m", "ipvs", "--ipvs", "--vdir", "ORIGINAL", "-j", "RETURN")
        }
    }

    /// Whether the kernel has ip_set with hash:net,net and iptables its set match (xt_set).
    static let ipsetMatch: Result<Void, any Error> = Result {
        try NetworkNamespace.run {
            try shell("ipset", "create", "PROBE", "hash:net,net")
            try shell("iptables", "-w", "-t", "nat", "-N", "PROBE")
            try shell("iptables", "-w", "-t", "nat", "-A", "PROBE", "-m", "set", "--match-set", "PROBE", "src,dst", "-j", "RETURN")
        }
    }

    /// Whether the IPVS sysctls exist (the ip_vs module is loaded).
    static let ipvsSysctls: Result<Void, any Error> = Result {
        _ = try Sysctls().read("net.ipv4.vs.conntrack")
    }

    static func reason(_ capability: Result<Void, any Error>, _ what: String) -> Comment {
        switch capability {
        case .success: "\(what) available"
        case .failure(let error):
            "skipped: \(what) unavailable (\(error)); run Tests/vm/run-kernel-tests.sh with CANARY_KERNEL_TEST_FILTER='^NodeNetworkTests\\.'"
        }
    }

    static func enabled(_ capability: Result<Void, any Error>) -> Bool {
        if case .success = capability { return true }
        return isRequired
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs only where the kernel has dummy interfaces (the VM bench); skipped elsewhere with the reason.
    static var requiresDummyInterfaces: Self {
        .enabled(if: NodeCapability.enabled(NodeCapability.dummyInterfaces),
                 NodeCapability.reason(NodeCapability.dummyInterfaces, "dummy interfaces"))
    }

    /// Runs only where iptables has the ipvs match (the VM bench).
    static var requiresIPVSMatch: Self {
        .enabled(if: NodeCapability.enabled(NodeCapability.ipvsMatch),
                 NodeCapability.reason(NodeCapability.ipvsMatch, "the iptables ipvs match (xt_ipvs)"))
    }

    /// Runs only where the kernel has ipsets and iptables their match (the VM bench).
    static var requiresIPSet: Self {
        .enabled(if: NodeCapability.enabled(NodeCapability.ipsetMatch),
                 NodeCapability.reason(NodeCapability.ipsetMatch, "ipset (ip_set, hash:net,net, xt_set)"))
    }

    /// Runs only where the IPVS sysctls exist (the VM bench, ip_vs loaded).
    static var requiresIPVSSysctls: Self {
        .enabled(if: NodeCapability.enabled(NodeCapability.ipvsSysctls),
                 NodeCapability.reason(NodeCapability.ipvsSysctls, "the net.ipv4.vs sysctls (ip_vs)"))
    }
}

extension HairpinSet {
    /// The endpoints in the family's set now (nil when there is no set), read with `ipset save`:
    /// what the kernel holds, for the tests to compare (the agent itself counts entries only).
    func endpoints(_ family: IPAddress.Family) throws(NodeNetworkError) -> Set<IPAddress>? {
        let result = try runner.run(ipset, ["save", Self.name(family)], input: "")
        guard result.status == 0 else { return nil }
        var endpoints = Set<IPAddress>()
        for line in result.standardOutput.split(whereSeparator: \.isNewline) {
            let words = line.split(separator: " ")
            guard words.count >= 3, words[0] == "add", let pair = words[2].split(separator: ",").first,
                let address = IPAddress(String(pair.split(separator: "/").first ?? pair))
            else { continue }
            endpoints.insert(address)
        }
        return endpoints
    }
}
