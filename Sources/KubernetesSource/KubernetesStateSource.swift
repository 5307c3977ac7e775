import CanaryCore
import Foundation
import KubernetesClient

/// The desired state from the cluster: Services, their endpoints and the agent's Node, through
/// `KubernetesSource` (informers, translator, Events for problems), delivered as changes.
public struct KubernetesStateSource: DesiredStateSource {
    public let source: KubernetesSource
    public let summary: String

    public init(source: KubernetesSource, server: String) {
        self.source = source
        self.summary = "kubernetes \(server)"
    }

    public func run(deliver: @escaping @Sendable (SourceEvent) async -> Void) async throws {
        await source.run(
            onUpdate: { update in
                await deliver(.changed(.update(update.changes), problems: update.problems, receivedAt: update.changedAt))
            },
            onUnavailable: { error in await deliver(.unavailable(error)) })
    }
}
