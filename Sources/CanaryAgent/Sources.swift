import CanaryCore
import Foundation
import IPVS

/// Something wrong in the input, named so a person can fix it: the object, the field, what is wrong.
public struct AgentProblem: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    /// `Service default/web`, `Node node-1`, or the static file's path.
    public var object: String
    /// The field at fault: `metadata.annotations[canary-agent.io/canary-weight]`, `services[0].port`.
    public var field: String
    public var message: String

    public init(object: String, field: String, message: String) {
        self.object = object
        self.field = field
        self.message = message
    }

    public var description: String { "\(object): \(field): \(message)" }

    public static func < (l: AgentProblem, r: AgentProblem) -> Bool {
        (l.object, l.field, l.message) < (r.object, r.field, r.message)
    }
}

/// What a source delivers to the reconciler.
public enum SourceEvent: Sendable {
    /// A new desired state, with the problems of the objects it kept as they were. `changed`, when
    /// the source knows it, holds every virtual service whose entry may differ from the previous
    /// state's (the others are equal): the reconciler then compares only those, not every service.
    case desired(DesiredState, problems: [AgentProblem], receivedAt: ContinuousClock.Instant, changed: Set<ServiceKey>? = nil)
    /// The input was rejected whole (a static file with an error): the running table stays.
    case rejected(AgentProblem)
}

/// Where the desired state comes from: the cluster or a static file.
public protocol DesiredStateSource: Sendable {
    /// For people: `file /etc/canary-agent/config.yaml`, `kubernetes https://10.0.0.1:443`.
    var summary: String { get }
    /// Delivers events until the task is cancelled.
    func run(deliver: @escaping @Sendable (SourceEvent) async -> Void) async throws
}
