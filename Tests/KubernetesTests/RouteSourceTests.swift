import CanaryCore
import Foundation
import IPVS
import KubernetesClient
import Testing

@testable import KubernetesSource

/// The source with Gateway API, against the stand-in server: discovery, route informers, the
/// split from the route, status written back, CRDs that appear after the start.
extension SourceTests {
    static func statusParents(_ server: FakeAPIServer, _ path: String, _ name: String) async throws -> [JSON] {
        try await server.perform { state -> [JSON] in
            guard case .array(let parents)? = state.collections[path]?.objects["default/\(name)"]?["status"]?["parents"] else { return [] }
            return parents
        }
    }

    @Test("a TCPRoute splits its parent Service; its status is written (Accepted, ResolvedRefs, observedGeneration); a weight change follows")
    func routeDrivesTheSplitAndGetsStatus() async throws {
        let tcproutes = "/apis/gateway.networking.k8s.io/v1/tcproutes"
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                state.installGatewayAPI()
                for object in RouteFixtures.payments() + [Fixtures.node()] { state.apply(object) }
                state.apply(RouteFixtures.route(.tcp, "payments", parent: "payments", backends: [
                    RouteFixtures.backend("payments-stable", weight: 90), RouteFixtures.backend("payments-canary", weight: 10),
                ]))
            }
            try await runSource(server, certificates, configure: { $0.writeRouteStatusUnelected = true }) { recorder in
                let key = ServiceKey.inet(.tcp, socket("10.96.5.1:80"))
                let first = try await update(recorder, "the split from the route") { $0.desiredState.services[key]?.origin.route != nil }
                #expect(first.desiredState.services[key]?.backends.map(\.weight) == [90, 10])
                let parents = try await eventually("status written") {
                    let parents = try await Self.statusParents(server, tcproutes, "payments")
                    return parents.isEmpty ? nil : parents
                }
                #expect(parents.first?["controllerName"] == "canary-agent.io/gateway-controller")
                let accepted = parents.first?["conditions"]?.arrayValue?.first { $0["type"] == "Accepted" }
                #expect(accepted?["status"] == "True" && accepted?["observedGeneration"] == 1)

                // Argo's next step: 70/30, generation 2.
                try await server.perform { state in
                    state.apply(RouteFixtures.route(.tcp, "payments", parent: "payments", backends: [
                        RouteFixtures.backend("payments-stable", weight: 70), RouteFixtures.backend("payments-canary", weight: 30),
                    ], generation: 2))
                }
                _ = try await update(recorder, "the new weights") { $0.desiredState.services[key]?.backends.map(\.weight) == [70, 30] }
                _ = try await eventually("status at generation 2") {
                    let parents = try await Self.statusParents(server, tcproutes, "payments")
                    let conditions = parents.first?["conditions"]?.arrayValue ?? []
                    return conditions.allSatisfy({ $0["observedGeneration"] == 2 }) && !conditions.isEmpty ? true : nil
                }
            }
        }
    }

    @Test("Gateway API CRDs installed after the start are picked up without a restart")
    func crdsAfterStart() async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                for object in RouteFixtures.payments() + [Fixtures.node()] { state.apply(object) }
            }
            try await runSource(server, certificates, configure: { $0.rediscoveryInterval = .milliseconds(300) }) { recorder in
                let key = ServiceKey.inet(.tcp, socket("10.96.5.1:80"))
                let first = try await update(recorder, "first update without Gateway API") { _ in true }
                #expect(first.desiredState.services[key]?.origin.route == nil)
                try await server.perform { state in
                    state.installGatewayAPI(routeVersion: "v1alpha2")
                    state.apply(RouteFixtures.route(.tcp, "payments", parent: "payments", backends: [
                        RouteFixtures.backend("payments-stable", weight: 1), RouteFixtures.backend("payments-canary", weight: 1),
                    ], version: "v1alpha2"))
                }
                let routed = try await update(recorder, "the route, once its CRD exists") { $0.desiredState.services[key]?.origin.route != nil }
                #expect(routed.desiredState.services[key]?.backends.map(\.weight) == [1, 1])
                #expect(try await server.perform { $0.requests(to: "/apis/gateway.networking.k8s.io/v1alpha2/tcproutes", watch: false).count } >= 1)
            }
        }
    }

    @Test("a route with an L7 rule is a problem on the route, with a Warning Event naming the field")
    func routeProblemIsAnEvent() async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                state.installGatewayAPI()
                for object in RouteFixtures.payments() + [Fixtures.node()] { state.apply(object) }
                state.apply(RouteFixtures.route(.http, "payments", parent: "payments", backends: [RouteFixtures.backend("payments-stable")],
                    matches: [["headers": [["name": "x-canary", "value": "1"]]]]))
            }
            try await runSource(server, certificates) { recorder in
                let seen = try await update(recorder, "the problem") { !$0.problems.isEmpty }
                #expect(seen.problems.map(\.object) == [InputObject(kind: .httpRoute, namespace: "default", name: "payments")])
                let event = try await eventually("the Event") { try await server.perform { $0.createdEvents.first } }
                #expect(event["involvedObject"]?["kind"] == "HTTPRoute" && event["reason"] == "UnsupportedValue")
                #expect(event["message"]?.string?.hasPrefix("spec.rules[0].matches[0].headers") == true)
            }
        }
    }
}

extension JSON {
    var arrayValue: [JSON]? {
        if case .array(let items) = self { return items }
        return nil
    }
}
