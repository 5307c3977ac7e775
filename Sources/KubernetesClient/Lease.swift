import Foundation

/// A coordination.k8s.io/v1 Lease: a small object a group of processes writes in turn to elect one of them
/// (see ``LeaderElector``).
///
/// Only the fields below are modelled: a ``KubernetesClient/replace(_:namespace:name:object:)`` of a Lease
/// read with this type drops any other metadata (owner references, finalizers). The elector's Lease is its own.
public struct Lease: Codable, Sendable, Hashable, KubernetesObject {
    /// `coordination.k8s.io/v1`.
    public var apiVersion: String
    /// `Lease`.
    public var kind: String
    public var metadata: ObjectMeta
    public var spec: LeaseSpec

    public init(metadata: ObjectMeta, spec: LeaseSpec = LeaseSpec()) {
        self.apiVersion = "coordination.k8s.io/v1"
        self.kind = "Lease"
        self.metadata = metadata
        self.spec = spec
    }

    enum CodingKeys: String, CodingKey { case apiVersion, kind, metadata, spec }

    /// Lenient: a missing `apiVersion`, `kind` (items of a list carry neither) or `spec` takes its default.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        apiVersion = try container.decodeIfPresent(String.self, forKey: .apiVersion) ?? "coordination.k8s.io/v1"
        kind = try container.decodeIfPresent(String.self, forKey: .kind) ?? "Lease"
        metadata = try container.decodeIfPresent(ObjectMeta.self, forKey: .metadata) ?? ObjectMeta()
        spec = try container.decodeIfPresent(LeaseSpec.self, forKey: .spec) ?? LeaseSpec()
    }
}

/// LeaseSpec: who holds the lease, for how long, and since when. Every field is optional on the wire.
public struct LeaseSpec: Codable, Sendable, Hashable {
    /// The holder's identity; empty or absent when nobody holds the lease (a released lease).
    public var holderIdentity: String?
    /// How long candidates wait, counted from the last renewal *they observed*, before taking the lease over.
    public var leaseDurationSeconds: Int?
    /// When the current holder acquired the lease.
    public var acquireTime: MicroTime?
    /// When the current holder last renewed it.
    public var renewTime: MicroTime?
    /// How many times the lease changed hands.
    public var leaseTransitions: Int?
    /// Coordinated leader election (alpha): the strategy, kept as read so a replace does not clear it.
    public var strategy: String?
    /// Coordinated leader election (alpha): a better holder, kept as read.
    public var preferredHolder: String?

    public init(
        holderIdentity: String? = nil, leaseDurationSeconds: Int? = nil, acquireTime: MicroTime? = nil,
        renewTime: MicroTime? = nil, leaseTransitions: Int? = nil, strategy: String? = nil,
        preferredHolder: String? = nil
    ) {
        self.holderIdentity = holderIdentity
        self.leaseDurationSeconds = leaseDurationSeconds
        self.acquireTime = acquireTime
        self.renewTime = renewTime
        self.leaseTransitions = leaseTransitions
        self.strategy = strategy
        self.preferredHolder = preferredHolder
    }
}

/// meta/v1 MicroTime: an instant written as RFC 3339 in UTC with exactly six fractional digits,
/// `2025-06-15T15:06:40.123456Z`. Read leniently: any number of fractional digits, or none, and a numeric offset.
public struct MicroTime: Codable, Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The instant, rounded to the microsecond.
    public var date: Date

    /// `date` rounded to the microsecond, as the API server keeps it.
    public init(_ date: Date) {
        self.date = Date(timeIntervalSince1970: Double(Int64((date.timeIntervalSince1970 * 1e6).rounded())) / 1e6)
    }

    /// Parses the RFC 3339 text; nil when it is not one.
    public init?(rfc3339 text: String) {
        guard let date = Self.parse(text) else { return nil }
        self.date = date
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let date = Self.parse(text) else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "\"\(text)\" is not an RFC 3339 time")
        }
        self.date = date
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// The wire form: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    public var description: String {
        let microseconds = Int64((date.timeIntervalSince1970 * 1e6).rounded())
        let seconds = microseconds >= 0 ? microseconds / 1_000_000 : (microseconds - 999_999) / 1_000_000
        let fraction = microseconds - seconds * 1_000_000
        let whole = Date(timeIntervalSince1970: Double(seconds)).formatted(.iso8601)  // "…:SSZ", UTC
        let digits = String(fraction)
        return whole.dropLast() + "." + String(repeating: "0", count: 6 - digits.count) + digits + "Z"
    }

    public static func < (l: MicroTime, r: MicroTime) -> Bool { l.date < r.date }

    /// RFC 3339 with an optional fraction of any length: the whole seconds through the ISO 8601 parser,
    /// the fraction added by hand (the parser's fraction support varies with the digits).
    static func parse(_ text: String) -> Date? {
        guard let dot = text.firstIndex(of: ".") else { return try? Date(text, strategy: .iso8601) }
        let afterDot = text.index(after: dot)
        let digitsEnd = text[afterDot...].firstIndex { !$0.isASCII || !$0.isNumber } ?? text.endIndex
        let digits = text[afterDot..<digitsEnd]
        guard !digits.isEmpty, let whole = try? Date(String(text[..<dot] + text[digitsEnd...]), strategy: .iso8601)
        else { return nil }
        // Whole microseconds, as `init(_:)` rounds: the same text always gives the same, comparable, value.
        let fraction = Int64(((Double("0." + digits.prefix(9)) ?? 0) * 1e6).rounded())
        let microseconds = Int64(whole.timeIntervalSince1970.rounded()) * 1_000_000 + fraction
        return Date(timeIntervalSince1970: Double(microseconds) / 1e6)
    }
}

extension ResourceDescriptor {
    /// coordination.k8s.io/v1 Leases.
    public static let leases = ResourceDescriptor(
        groupVersionPath: "/apis/coordination.k8s.io/v1", plural: "leases", namespaced: true)
}
