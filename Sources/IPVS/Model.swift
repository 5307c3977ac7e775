/// A transport protocol that IPVS balances.
public enum IPProtocol: UInt16, Sendable, Hashable, Comparable, CaseIterable, CustomStringConvertible, Codable {
    case tcp = 6
    case udp = 17
    case sctp = 132

    public var description: String {
        switch self {
        case .tcp: "TCP"
        case .udp: "UDP"
        case .sctp: "SCTP"
        }
    }

    public static func < (l: IPProtocol, r: IPProtocol) -> Bool { l.rawValue < r.rawValue }
}

/// What identifies a virtual service in the kernel: protocol + address + port, or a firewall mark.
public enum ServiceKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    case inet(IPProtocol, SocketAddress)
    case firewallMark(UInt32, IPAddress.Family)

    /// The key's address family.
    public var family: IPAddress.Family {
        switch self {
        case .inet(_, let socket): socket.address.family
        case .firewallMark(_, let family): family
        }
    }

    /// `TCP 10.96.0.10:80` or `FWM 7 IPv4`, as `ipvsadm -Ln` prints them.
    public var description: String {
        switch self {
        case .inet(let proto, let socket): "\(proto) \(socket)"
        case .firewallMark(let mark, let family): "FWM \(mark) \(family)"
        }
    }

    public static func < (l: ServiceKey, r: ServiceKey) -> Bool {
        switch (l, r) {
        case (.inet(let lp, let ls), .inet(let rp, let rs)): (ls, lp) < (rs, rp)
        case (.inet, .firewallMark): true
        case (.firewallMark, .inet): false
        case (.firewallMark(let lm, let lf), .firewallMark(let rm, let rf)): (lm, lf) < (rm, rf)
        }
    }
}

/// A scheduler, by the name of its kernel module without the `ip_vs_` prefix.
public struct Scheduler: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible,
    ExpressibleByStringLiteral, Codable
{
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { self.rawValue = value }
    public var description: String { rawValue }
    public static func < (l: Scheduler, r: Scheduler) -> Bool { l.rawValue < r.rawValue }

    /// Round robin: ignores weights other than zero.
    public static let roundRobin: Scheduler = "rr"
    /// Weighted round robin.
    public static let weightedRoundRobin: Scheduler = "wrr"
    /// Source hashing: a 256-bucket table keyed by the client address.
    public static let sourceHashing: Scheduler = "sh"
    /// Maglev hashing (kernel 4.18 and later).
    public static let maglevHashing: Scheduler = "mh"
    /// Least connection.
    public static let leastConnection: Scheduler = "lc"
    /// Weighted least connection, the kernel's default.
    public static let weightedLeastConnection: Scheduler = "wlc"
}

/// Virtual service flags (IP_VS_SVC_F_*).
public struct ServiceFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Connections from one client go to one destination for `timeout` seconds.
    public static let persistent = ServiceFlags(rawValue: 0x1)
    /// Set by the kernel on every service in its table; read-only.
    public static let hashed = ServiceFlags(rawValue: 0x2)
    /// One-packet scheduling (UDP): every datagram scheduled on its own.
    public static let onePacket = ServiceFlags(rawValue: 0x4)
    /// sh and mh: a client whose bucket has a weight-0 or overloaded destination moves to a live one.
    public static let shFallback = ServiceFlags(rawValue: 0x8)
    /// sh and mh: hash the source port as well as the address.
    public static let shPort = ServiceFlags(rawValue: 0x10)
    /// Scheduler flag 3 (IP_VS_SVC_F_SCHED3); no scheduler of Linux 6.1 reads it.
    /// (mh reads SCHED1 as mh-fallback and SCHED2 as mh-port, the same bits as sh.)
    public static let schedulerFlag3 = ServiceFlags(rawValue: 0x20)

    /// The flags a user sets; `hashed` is the kernel's own.
    public static let configurable: ServiceFlags = [.persistent, .onePacket, .shFallback, .shPort, .schedulerFlag3]

    public var description: String {
        var names: [String] = []
        if contains(.persistent) { names.append("persistent") }
        if contains(.hashed) { names.append("hashed") }
        if contains(.onePacket) { names.append("ops") }
        if contains(.shFallback) { names.append("flag-1") }
        if contains(.shPort) { names.append("flag-2") }
        if contains(.schedulerFlag3) { names.append("flag-3") }
        return names.joined(separator: ",")
    }
}

/// Traffic counters and rates of a service or destination (the kernel's 64-bit stats).
public struct TrafficStats: Hashable, Sendable, Codable {
    public var connections: UInt64 = 0
    public var inPackets: UInt64 = 0
    public var outPackets: UInt64 = 0
    public var inBytes: UInt64 = 0
    public var outBytes: UInt64 = 0
    public var connectionsPerSecond: UInt64 = 0
    public var inPacketsPerSecond: UInt64 = 0
    public var outPacketsPerSecond: UInt64 = 0
    public var inBytesPerSecond: UInt64 = 0
    public var outBytesPerSecond: UInt64 = 0
    public init() {}
}

/// A virtual service: its key, scheduler and flags. Destinations are kept beside it.
public struct VirtualService: Hashable, Sendable {
    public var key: ServiceKey
    public var scheduler: Scheduler
    public var flags: ServiceFlags
    /// Persistence timeout in seconds; meaningful with `.persistent`.
    public var timeout: UInt32
    /// Persistence netmask: an IPv4 mask in host order (0xFFFF_FFFF = /32), or an IPv6 prefix length.
    public var netmask: UInt32
    /// Counters read from the kernel; nil on a service built to be programmed.
    public var stats: TrafficStats?

    public init(
        key: ServiceKey, scheduler: Scheduler, flags: ServiceFlags = [], timeout: UInt32 = 0,
        netmask: UInt32? = nil, stats: TrafficStats? = nil
    ) {
        self.key = key
        self.scheduler = scheduler
        self.flags = flags
        self.timeout = timeout
        self.netmask = netmask ?? (key.family == .inet ? 0xFFFF_FFFF : 128)
        self.stats = stats
    }

    /// True when the kernel needs no edit to turn one into the other: same scheduler, same
    /// configurable flags and, for persistent services, the same timeout and netmask.
    public func hasSameConfiguration(as other: VirtualService) -> Bool {
        guard key == other.key, scheduler == other.scheduler,
            flags.intersection(.configurable) == other.flags.intersection(.configurable)
        else { return false }
        if flags.contains(.persistent) {
            return timeout == other.timeout && netmask == other.netmask
        }
        return true
    }
}

/// How IPVS forwards a connection to a destination (IP_VS_CONN_F_*).
public enum ForwardingMethod: UInt32, Sendable, Hashable, CaseIterable, CustomStringConvertible, Codable {
    /// NAT: the destination sees the client, replies must come back through this node.
    case masquerade = 0
    /// The destination is this node.
    case local = 1
    /// IP-in-IP tunnel.
    case tunnel = 2
    /// Direct routing: the destination must hold the virtual address.
    case directRoute = 3

    /// As `ipvsadm -Ln` prints it.
    public var description: String {
        switch self {
        case .masquerade: "Masq"
        case .local: "Local"
        case .tunnel: "Tunnel"
        case .directRoute: "Route"
        }
    }
}

/// Connection counts and traffic of one destination, as the kernel reports them.
public struct DestinationStats: Hashable, Sendable, Codable {
    public var activeConnections: UInt32 = 0
    public var inactiveConnections: UInt32 = 0
    public var persistentConnections: UInt32 = 0
    public var traffic = TrafficStats()
    public init() {}
}

/// A destination (real server) of a virtual service.
public struct Destination: Hashable, Sendable {
    public var address: SocketAddress
    public var forwarding: ForwardingMethod
    /// Relative weight; 0 takes no new connections (a draining destination).
    public var weight: Int32
    /// Upper connection threshold; 0 means none.
    public var upperThreshold: UInt32
    /// Lower connection threshold; 0 means none.
    public var lowerThreshold: UInt32
    /// Counters read from the kernel; nil on a destination built to be programmed.
    public var stats: DestinationStats?

    public init(
        address: SocketAddress, forwarding: ForwardingMethod = .masquerade, weight: Int32 = 1,
        upperThreshold: UInt32 = 0, lowerThreshold: UInt32 = 0, stats: DestinationStats? = nil
    ) {
        self.address = address
        self.forwarding = forwarding
        self.weight = weight
        self.upperThreshold = upperThreshold
        self.lowerThreshold = lowerThreshold
        self.stats = stats
    }

    /// True when no edit is needed to turn one into the other (stats aside).
    public func hasSameConfiguration(as other: Destination) -> Bool {
        address == other.address && forwarding == other.forwarding && weight == other.weight
            && upperThreshold == other.upperThreshold && lowerThreshold == other.lowerThreshold
    }
}

/// A service with its destinations, in the kernel's list order.
public struct ServiceEntry: Hashable, Sendable {
    public var service: VirtualService
    public var destinations: [Destination]

    public init(service: VirtualService, destinations: [Destination] = []) {
        self.service = service
        self.destinations = destinations
    }
}

/// The kernel's IPVS connection timeouts, in seconds; 0 leaves a value unchanged when set.
public struct IPVSTimeouts: Hashable, Sendable, Codable {
    public var tcp: UInt32
    public var tcpFin: UInt32
    public var udp: UInt32
    public init(tcp: UInt32, tcpFin: UInt32, udp: UInt32) {
        self.tcp = tcp
        self.tcpFin = tcpFin
        self.udp = udp
    }
}

/// What the kernel says of its IPVS.
public struct IPVSInfo: Hashable, Sendable, Codable {
    /// Version code, 0x010201 for 1.2.1.
    public var versionCode: UInt32
    /// Size of the connection hash table.
    public var connectionTableSize: UInt32
    public init(versionCode: UInt32, connectionTableSize: UInt32) {
        self.versionCode = versionCode
        self.connectionTableSize = connectionTableSize
    }
    /// "1.2.1".
    public var version: String {
        "\((versionCode >> 16) & 0xFF).\((versionCode >> 8) & 0xFF).\(versionCode & 0xFF)"
    }
}
