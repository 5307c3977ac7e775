#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A kernel parameter and the value the agent needs, e.g. `net.ipv4.ip_forward = 1`.
public struct SysctlSetting: Hashable, Sendable, CustomStringConvertible {
    /// The dotted name (`net.ipv4.vs.conntrack`); a name with '/' is taken as a path under the
    /// root instead, for keys whose components contain dots (`net/ipv4/conf/eth0.100/forwarding`).
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }

    public var description: String { "\(name)=\(value)" }

    /// What IPVS in NAT mode needs on every node; all of them are per network namespace, and the
    /// `net.ipv4.vs.*` keys exist only once the ip_vs module is loaded (open the IPVS client first).
    ///
    /// - `net.ipv4.ip_forward=1`: IPVS-NAT forwards packets to backends on other hosts.
    /// - `net.ipv4.vs.conntrack=1`: IPVS keeps netfilter connection tracking entries for its
    ///   connections, which the masquerade rules (iptables nat table) need to rewrite the source.
    /// - `net.ipv4.vs.expire_nodest_conn=1`: a connection whose destination was deleted is dropped
    ///   at its next packet instead of being sent to a destination that no longer exists.
    /// - `net.ipv4.vs.expire_quiescent_template=1`: persistence templates of a destination set to
    ///   weight 0 (draining) expire, so persistent clients move off a leaving endpoint.
    public static let ipvsRequired: [SysctlSetting] = [
        SysctlSetting("net.ipv4.ip_forward", "1"),
        SysctlSetting("net.ipv4.vs.conntrack", "1"),
        SysctlSetting("net.ipv4.vs.expire_nodest_conn", "1"),
        SysctlSetting("net.ipv4.vs.expire_quiescent_template", "1"),
    ]

    /// IPv6 forwarding, for IPv6 services only: it turns the host into an IPv6 router, and a
    /// router ignores router advertisements (unless accept_ra=2), which can take the node's own
    /// IPv6 default route away. The agent sets it only when it serves an IPv6 address.
    public static let ipv6Forwarding = SysctlSetting("net.ipv6.conf.all.forwarding", "1")

    /// Bridged traffic through netfilter (br_netfilter), as every Kubernetes node has it: a client
    /// pod on the same bridge as the backend IPVS picks for it gets the backend's reply straight over
    /// the bridge, never through IPVS to be translated back, unless bridged packets pass the IP
    /// hooks. Set only when the keys exist (the br_netfilter module is loaded); the agent does not
    /// load the module itself.
    public static let bridgeNetfilter: [SysctlSetting] = [
        SysctlSetting("net.bridge.bridge-nf-call-iptables", "1"),
        SysctlSetting("net.bridge.bridge-nf-call-ip6tables", "1"),
    ]
}

/// A value the agent changed, for its log.
public struct SysctlChange: Hashable, Sendable, CustomStringConvertible {
    public var name: String
    public var oldValue: String
    public var newValue: String

    public init(name: String, oldValue: String, newValue: String) {
        self.name = name
        self.oldValue = oldValue
        self.newValue = newValue
    }

    public var description: String { "\(name): \(oldValue) -> \(newValue)" }
}

/// Reads and writes kernel parameters as files under a root directory: /proc/sys on a node, a
/// temporary directory in tests. Values are compared by their white-space separated words, so
/// "32768\t60999\n" equals "32768 60999".
public struct Sysctls: Sendable {
    /// The directory the names are resolved under.
    public let root: String

    public init(root: String = "/proc/sys") {
        self.root = root
    }

    /// Sets every setting whose current value differs and returns what changed, in order. Every
    /// key is read before anything is written, so a missing key (an error naming it) changes
    /// nothing. A failed write throws; the settings written before it stay written.
    public func ensure(_ settings: [SysctlSetting]) throws(NodeNetworkError) -> [SysctlChange] {
        var pending: [SysctlChange] = []
        for setting in settings {
            let current = try read(setting.name)
            if Self.words(current) != Self.words(setting.value) {
                pending.append(SysctlChange(name: setting.name, oldValue: current, newValue: setting.value))
            }
        }
        for change in pending {
            try write(change.name, change.newValue)
        }
        return pending
    }

    /// The current value, without its trailing new line.
    public func read(_ name: String) throws(NodeNetworkError) -> String {
        let path = try path(of: name)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.error(name, path, errno) }
        defer { _ = close(fd) }
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { raw in Glibc.read(fd, raw.baseAddress, raw.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw Self.error(name, path, errno)
            }
            if count == 0 { break }
            contents += chunk[0..<count]
            guard contents.count <= 1 << 20 else { throw .sysctl(name: name, reason: "\(path) is larger than 1 MiB") }
        }
        var text = String(decoding: contents, as: UTF8.self)
        while let last = text.last, last.isNewline { text.removeLast() }
        return text
    }

    /// Writes a value (with a new line, as sysctl(8) does).
    public func write(_ name: String, _ value: String) throws(NodeNetworkError) {
        let path = try path(of: name)
        // No O_CREAT: a key that is not there is an error, never a new file.
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.error(name, path, errno) }
        defer { _ = close(fd) }
        let bytes = Array((value + "\n").utf8)
        let written = bytes.withUnsafeBytes { raw in Glibc.write(fd, raw.baseAddress, raw.count) }
        guard written == bytes.count else {
            throw written < 0 ? Self.error(name, path, errno) : .sysctl(name: name, reason: "short write to \(path)")
        }
        // A plain file (tests) keeps its old tail unless cut; /proc files report size 0 and need no cut.
        var status = stat()
        if fstat(fd, &status) == 0, status.st_size > written {
            _ = ftruncate(fd, off_t(written))
        }
    }

    /// The file of a key: dots (or slashes, when the name has any) separate the components.
    public func path(of name: String) throws(NodeNetworkError) -> String {
        let separator: Character = name.contains("/") ? "/" : "."
        let components = name.split(separator: separator, omittingEmptySubsequences: false)
        guard !name.isEmpty, components.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else {
            throw .sysctl(name: name, reason: "not a valid sysctl name")
        }
        return root + "/" + components.joined(separator: "/")
    }

    private static func words(_ value: String) -> [Substring] {
        value.split(whereSeparator: { $0 == " " || $0 == "\t" || $0.isNewline })
    }

    private static func error(_ name: String, _ path: String, _ code: Int32) -> NodeNetworkError {
        if code == ENOENT {
            return .sysctl(name: name, reason: "no such key (\(path) is missing; is the kernel module providing it loaded?)")
        }
        return .sysctl(name: name, reason: "\(path): \(String(cString: strerror(code)))")
    }
}
