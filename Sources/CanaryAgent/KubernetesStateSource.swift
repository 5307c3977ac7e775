import CanaryCore
import Foundation
import KubernetesClient
import KubernetesSource

/// The desired state from the cluster: Services, their endpoints and the agent's Node, through
/// `KubernetesSource` (informers, translator, Events for problems).
public struct KubernetesStateSource: DesiredStateSource {
    public let source: KubernetesSource
    public let summary: String

    public init(source: KubernetesSource, server: String) {
        self.source = source
        self.summary = "kubernetes \(server)"
    }

    public func run(deliver: @escaping @Sendable (SourceEvent) async -> Void) async throws {
        await source.run { update in
            let problems = update.problems.map {
                AgentProblem(object: "\($0.kind.rawValue) \($0.object)", field: $0.field, message: $0.message)
            }
            await deliver(
                .desired(
                    update.desiredState, problems: problems, receivedAt: update.changedAt, changed: update.changedServiceKeys))
        }
    }
}
