import CanaryCore
import Foundation
import KubernetesClient
import Logging

/// What of Gateway API the API server serves: for each route kind the version the agent reads
/// (`RouteKind.versions`, preferred first), and ReferenceGrant's (v1, else v1beta1).
public struct GatewayAPIServed: Sendable, Hashable {
    public var routes: [RouteKind: String] = [:]
    public var referenceGrants: String?

    public init(routes: [RouteKind: String] = [:], referenceGrants: String? = nil) {
        self.routes = routes
        self.referenceGrants = referenceGrants
    }

    public var isEmpty: Bool { routes.isEmpty && referenceGrants == nil }

    /// `TCPRoute v1alpha2, HTTPRoute v1, ReferenceGrant v1`.
    public var description: String {
        (routes.sorted { $0.key < $1.key }.map { "\($0.key.rawValue) \($0.value)" }
            + (referenceGrants.map { ["ReferenceGrant \($0)"] } ?? [])).joined(separator: ", ")
    }

    /// Reads API discovery: `/apis/gateway.networking.k8s.io`, then each served version's resources.
    public static func discover(_ client: KubernetesClient) async throws(KubernetesError) -> GatewayAPIServed {
        guard let group = try await client.discovery("/apis/\(RouteKind.group)", as: APIGroup.self) else { return GatewayAPIServed() }
        var resources: [String: Set<String>] = [:]
        for version in group.versions.map(\.version) {
            let list = try await client.discovery("/apis/\(RouteKind.group)/\(version)", as: APIResourceList.self)
            resources[version] = Set(list?.resources.map(\.name) ?? [])
        }
        var served = GatewayAPIServed()
        for kind in RouteKind.allCases {
            served.routes[kind] = kind.versions.first { resources[$0]?.contains(kind.plural) == true }
        }
        served.referenceGrants = ["v1", "v1beta1"].first { resources[$0]?.contains("referencegrants") == true }
        return served
    }
}

extension ResourceDescriptor {
    /// gateway.networking.k8s.io ReferenceGrants of `version`.
    public static func referenceGrants(version: String) -> ResourceDescriptor {
        ResourceDescriptor(groupVersionPath: "/apis/\(RouteKind.group)/\(version)", plural: "referencegrants", namespaced: true)
    }
}

extension KubernetesSource {
    /// Watches the Gateway API kinds the server serves, and follows their CRDs: read from API
    /// discovery at start (before the first translation, so that a restart never programs a
    /// Service without the route that governs it), then every `rediscoveryInterval`; a kind that
    /// appears gets an informer, one that goes away is dropped with its routes.
    func watchGatewayAPI(options: InformerOptions, onUnavailable: @escaping @Sendable (String?) async -> Void) async {
        var running: [String: Task<Void, Never>] = [:]
        var announced: GatewayAPIServed? = nil
        defer { for task in running.values { task.cancel() } }
        while !Task.isCancelled {
            do throws(KubernetesError) {
                let served = try await GatewayAPIServed.discover(client)
                if served != announced {
                    if served.isEmpty {
                        logger.notice("Gateway API routes are not served (no gateway.networking.k8s.io CRDs): Services follow their annotations; checked again every \(configuration.rediscoveryInterval)")
                    } else {
                        logger.notice("watching Gateway API: \(served.description)")
                    }
                    announced = served
                }
                var wanted: [String: @Sendable () -> Task<Void, Never>] = [:]
                for (kind, version) in served.routes {
                    wanted["\(kind.rawValue)/\(version)"] = { [client, logger] in
                        Task {
                            await Informer(client: client, resource: kind.resource(version: version), of: Route.self, options: options, logger: logger)
                                .run(
                                    onUpdate: { @Sendable update in await self.received(routes: update, kind: kind) },
                                    onFailure: { @Sendable _ in })
                        }
                    }
                }
                if let version = served.referenceGrants {
                    wanted["ReferenceGrant/\(version)"] = { [client, logger] in
                        Task {
                            await Informer(client: client, resource: .referenceGrants(version: version), of: ReferenceGrant.self, options: options, logger: logger)
                                .run(
                                    onUpdate: { @Sendable update in await self.received(grants: update) },
                                    onFailure: { @Sendable _ in })
                        }
                    }
                }
                for (name, task) in running where wanted[name] == nil {
                    task.cancel()
                    running[name] = nil
                    forgetGatewayResource(name)
                }
                for (name, start) in wanted where running[name] == nil {
                    gatewayListPending.insert(name)
                    if let kind = RouteKind.allCases.first(where: { name.hasPrefix($0.rawValue + "/") }),
                        let version = served.routes[kind]
                    {
                        watching(kind, version: version)
                    }
                    running[name] = start()
                }
                gatewayDiscovered = true
                noteChange()
            } catch {
                if !gatewayDiscovered {
                    // Never hold the Services back for it: they follow their annotations meanwhile.
                    logger.warning("Gateway API discovery failed: \(error); retrying every \(configuration.rediscoveryInterval)")
                    gatewayDiscovered = true
                    noteChange()
                } else {
                    logger.debug("Gateway API discovery: \(error)")
                }
            }
            try? await Task.sleep(for: configuration.rediscoveryInterval)
        }
    }
}
