import CanaryCore
import Foundation

/// One sync: what kind, when, how long, how many operations and how many the kernel refused.
public struct SyncReport: Codable, Sendable, Hashable {
    public var kind: AgentMetrics.SyncKind
    public var at: Date
    public var durationSeconds: Double
    public var operations: Int
    public var failed: Int

    init(kind: AgentMetrics.SyncKind, at: Date, duration: Duration, operations: Int, failed: Int) {
        self.kind = kind
        self.at = at
        self.durationSeconds = duration.seconds
        self.operations = operations
        self.failed = failed
    }

    var duration: Duration { .nanoseconds(Int64(durationSeconds * 1e9)) }
}

extension AgentMetrics.SyncKind: Codable {}

/// What the agent says of itself: `GET /status`, shown by `canary-agent status`.
public struct AgentStatus: Codable, Sendable, Hashable {
    /// One desired service.
    public struct Service: Codable, Sendable, Hashable {
        /// `default/web:http`, or the static file's name.
        public var name: String
        /// The object and port it comes from.
        public var origin: ServiceOrigin
        /// `TCP 10.96.0.10:80`.
        public var service: String
        public var scheduler: String
        /// The canary's share of new connections asked for, 0…1.
        public var targetCanaryShare: Double
        /// The share the kernel gives with the weights chosen, 0…1 (nil before it is solved).
        public var effectiveCanaryShare: Double?
        public var stable: [String]
        public var canary: [String]
        /// Per backend group: weight, target and effective share, live endpoints, and why the
        /// effective share differs (absent from an older agent's status).
        public var groups: [WeightAssignment.GroupShare]?
        /// True when no group can take new connections: they are refused, existing ones finish.
        public var refusesNewConnections: Bool?
        /// True when the kernel holds the service and it is the agent's.
        public var programmed: Bool
        /// The last error programming it (retried with backoff), if any.
        public var error: String?
        /// Problems of its objects in the source (it is kept as last programmed).
        public var problems: [InputProblem]
    }

    /// `file /etc/canary-agent/config.yaml` or `kubernetes https://…`.
    public var source: String
    /// True once the first full sync is done.
    public var ready: Bool
    public var startedAt: Date
    public var lastSync: SyncReport?
    public var lastFullSync: SyncReport?
    public var services: [Service]
    /// Every problem the source reports now.
    public var problems: [InputProblem]
    /// The last input rejected whole (a static file with an error), while the table is kept.
    public var sourceError: InputProblem?
    /// Since when inputs are rejected whole (the first rejection of this run of them).
    public var sourceErrorSince: Date?
    /// While the source cannot read its input (the API server out of reach): its error and since when.
    public var sourceUnavailable: OngoingError?
    /// The last error reading the kernel's table, while reads keep failing.
    public var kernelError: String?
    /// Since when the kernel's table cannot be read.
    public var kernelErrorSince: Date?
    /// The masquerade rules' or hairpin set's error while they keep failing (node-local and
    /// hairpin clients of every service fail meanwhile).
    public var masqueradeError: OngoingError?
    /// The virtual addresses on the agent's interface.
    public var addresses: [String]
    public var drainingDestinations: Int

    /// An error that persists, and since when.
    public struct OngoingError: Codable, Sendable, Hashable {
        public var message: String
        public var since: Date
    }

    /// Errors in one list: the source's, the kernel's, the masquerade rules', each service's.
    public var errorCount: Int {
        (sourceError == nil ? 0 : 1) + (sourceUnavailable == nil ? 0 : 1) + (kernelError == nil ? 0 : 1) + (masqueradeError == nil ? 0 : 1) + problems.count
            + services.count { $0.error != nil }
    }
}
