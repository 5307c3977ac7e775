import CanaryCore
import Foundation
import IPVS
import KubernetesClient
import Testing

@testable import KubernetesSource

/// Routes shaped as Argo Rollouts' gatewayapi plugin and Flagger's gatewayapi:v1 provider write them.
enum RouteFixtures {
    static func backend(_ name: String, port: Int = 80, weight: Int? = nil, namespace: String? = nil) -> JSON {
        var json: JSON = ["name": .string(name), "port": .int(port)]
        if let weight { json["weight"] = .int(weight) }
        if let namespace { json["namespace"] = .string(namespace) }
        return json
    }

    static func route(
        _ kind: RouteKind, _ name: String, parent: String, parentPort: Int? = nil, backends: [JSON], namespace: String = "default",
        matches: [JSON]? = nil, extraRule: [String: JSON] = [:], rules: Int = 1, generation: Int = 1,
        created: String = "2026-12-01T10:00:00Z", version: String = "v1", labels: [String: String] = [:],
        group: JSON = ""
    ) -> JSON {
        var parentRef: JSON = ["group": group, "kind": "Service", "name": .string(parent)]
        if let parentPort { parentRef["port"] = .int(parentPort) }
        var rule: JSON = ["backendRefs": .array(backends)]
        if let matches { rule["matches"] = .array(matches) }
        for (key, value) in extraRule { rule[key] = value }
        return [
            "apiVersion": .string("gateway.networking.k8s.io/\(version)"), "kind": .string(kind.rawValue),
            "metadata": [
                "name": .string(name), "namespace": .string(namespace), "generation": .int(generation),
                "creationTimestamp": .string(created), "uid": .string("uid-\(name)"), "resourceVersion": "7",
                "labels": .object(labels.mapValues { .string($0) }),
            ],
            "spec": ["parentRefs": [parentRef], "rules": .array(Array(repeating: rule, count: rules))],
        ]
    }

    static func decoded(_ json: JSON) throws -> (RouteRef, Route) {
        let route = try Fixtures.decode(json, as: Route.self)
        let kind = try #require(RouteKind(rawValue: route.kind ?? ""))
        return (RouteRef(kind: kind, namespace: route.metadata.namespace ?? "", name: route.metadata.name ?? ""), route)
    }

    /// The payments application: parent `payments` (our label, ClusterIP 10.96.5.1) and the
    /// stable and canary Services Argo Rollouts points at ReplicaSets, with their slices.
    static func payments(stable: [String] = ["10.5.1.1", "10.5.1.2"], canary: [String] = ["10.5.2.1"]) -> [JSON] {
        [
            Fixtures.service("payments", clusterIPs: ["10.96.5.1"], ports: [Fixtures.servicePort("http", port: 80, targetPort: 8080)]),
            Fixtures.service("payments-stable", clusterIPs: ["10.96.5.2"], ports: [Fixtures.servicePort("http", port: 80, targetPort: 8080)], labels: [:]),
            Fixtures.service("payments-canary", clusterIPs: ["10.96.5.3"], ports: [Fixtures.servicePort("http", port: 80, targetPort: 8080)], labels: [:]),
            Fixtures.slice("payments-stable-x", service: "payments-stable", endpoints: stable.map { Fixtures.endpoint($0) }, ports: [Fixtures.slicePort("http", port: 8080)]),
            Fixtures.slice("payments-canary-x", service: "payments-canary", endpoints: canary.map { Fixtures.endpoint($0) }, ports: [Fixtures.slicePort("http", port: 8080)]),
        ]
    }

    static func input(_ objects: [JSON], routes: [JSON], grants: [JSON] = []) throws -> TranslationInput {
        var input = try translationInput(objects)
        input.routes = Dictionary(uniqueKeysWithValues: try routes.map(decoded))
        input.grants = try grants.map { try Fixtures.decode($0, as: ReferenceGrant.self) }
        return input
    }
}

@Suite("Translator: Gateway API routes with a Service parent (GAMMA)", .timeLimit(.minutes(1)))
struct RouteTranslationTests {
    typealias R = RouteFixtures

    @Test("Argo Rollouts' TCPRoute (v1alpha2 and v1): the parent's ClusterIP split over the backendRefs by weight")
    func argoTCPRoute() throws {
        for version in ["v1alpha2", "v1"] {
            let route = R.route(
                .tcp, "payments-route", parent: "payments", backends: [R.backend("payments-stable", weight: 90), R.backend("payments-canary", weight: 10)],
                version: version, labels: ["rollouts.argoproj.io/gatewayapi-canary": "in-progress"])
            let result = Translator.translate(try R.input(R.payments(), routes: [route]))
            #expect(result.problems == [])
            let service = try #require(result.desiredState.services[.inet(.tcp, socket("10.96.5.1:80"))])
            #expect(service.backends.map(\.name) == ["payments-stable", "payments-canary"])
            #expect(service.backends.map(\.weight) == [90, 10])
            #expect(service.backends.map { $0.endpoints.map(\.address.description) } == [["10.5.1.1:8080", "10.5.1.2:8080"], ["10.5.2.1:8080"]])
            #expect(service.origin.route == InputObject(kind: .tcpRoute, namespace: "default", name: "payments-route"))
            #expect(service.origin.object == .service(namespace: "default", name: "payments"))
            #expect(service.unweightedFallback == .refuseNewConnections)
            let status = try #require(RouteStatusEntry.desired(result.routes)[RouteRef(kind: .tcp, namespace: "default", name: "payments-route")])
            #expect(status.map(\.accepted.status) == [true] && status.map(\.resolvedRefs.status) == [true])
            #expect(status.first?.observedGeneration == 1)
        }
    }

    @Test("a parentRef of group \"core\" (as Flagger's documentation writes it) is the core Service")
    func coreGroupParent() throws {
        let route = R.route(.http, "payments", parent: "payments", backends: [R.backend("payments-stable", weight: 1)], group: "core")
        let result = Translator.translate(try R.input(R.payments(), routes: [route]))
        #expect(result.problems == [])
        #expect(result.desiredState.services.values.first?.origin.route != nil)
    }

    @Test("at rest both Services select the same pods: one destination each, the route works unchanged")
    func steadyStateSharedPods() throws {
        let pods = ["10.5.1.1", "10.5.1.2"]
        let route = R.route(.tcp, "payments-route", parent: "payments", backends: [R.backend("payments-stable", weight: 100), R.backend("payments-canary", weight: 0)])
        let result = Translator.translate(try R.input(R.payments(stable: pods, canary: pods), routes: [route]))
        #expect(result.problems == [])
        let service = try #require(result.desiredState.services.values.first)
        let assignment = WeightSolver.solve(service)
        #expect(assignment.destinationOrder.count == 2 && Set(assignment.weights.values) == [1])
        #expect(assignment.groups.map(\.effective) == [1, 0])
    }

    @Test("Flagger's HTTPRoute (PathPrefix /) is honoured; a header match for an A/B test is refused and the traffic stays")
    func flaggerHTTPRoute() throws {
        let objects = R.payments()
        let prefix: JSON = ["path": ["type": "PathPrefix", "value": "/"]]
        let route = R.route(.http, "payments", parent: "payments", backends: [R.backend("payments-stable", weight: 80), R.backend("payments-canary", weight: 20)], matches: [prefix])
        let first = Translator.translate(try R.input(objects, routes: [route]))
        #expect(first.problems == [])
        let key = ServiceKey.inet(.tcp, socket("10.96.5.1:80"))
        #expect(first.desiredState.services[key]?.backends.map(\.weight) == [80, 20])

        let header: JSON = ["headers": [["name": "x-canary", "value": "insider"]]]
        let abTest = R.route(.http, "payments", parent: "payments", backends: [R.backend("payments-stable", weight: 0), R.backend("payments-canary", weight: 100)], matches: [prefix, header], generation: 2)
        let second = Translator.translate(try R.input(objects, routes: [abTest]), previous: first.desiredState)
        #expect(second.problems.map(\.field) == ["spec.rules[0].matches[1].headers"])
        #expect(second.problems.first?.object == InputObject(kind: .httpRoute, namespace: "default", name: "payments"))
        #expect(second.desiredState == first.desiredState, "the last good split stays")
        let status = try #require(RouteStatusEntry.desired(second.routes).values.first?.first)
        #expect(!status.accepted.status && status.accepted.reason == "UnsupportedValue" && status.observedGeneration == 2)
    }

    @Test("a canary Service that does not exist yet: ResolvedRefs False, BackendNotFound; programmed once it appears")
    func missingBackend() throws {
        let objects = Array(R.payments().filter { $0["metadata"]?["name"] != "payments-canary" && $0["metadata"]?["name"] != "payments-canary-x" })
        let route = R.route(.tcp, "payments-route", parent: "payments", backends: [R.backend("payments-stable", weight: 50), R.backend("payments-canary", weight: 50)])
        let before = Translator.translate(try R.input(objects, routes: [route]))
        #expect(before.problems.map(\.reason) == ["BackendNotFound"])
        #expect(before.problems.first?.field == "spec.rules[0].backendRefs[1].name")
        let status = try #require(RouteStatusEntry.desired(before.routes).values.first?.first)
        #expect(!status.resolvedRefs.status && status.resolvedRefs.reason == "BackendNotFound")
        let after = Translator.translate(try R.input(R.payments(), routes: [route]), previous: before.desiredState)
        #expect(after.problems == [])
        #expect(after.desiredState.services.values.first?.backends.map(\.weight) == [50, 50])
    }

    @Test("GEP-1294's order on one port: HTTPRoute over TCPRoute; the loser is told; a route over the annotations")
    func precedence() throws {
        var objects = R.payments()
        objects[0] = Fixtures.service(
            "payments", clusterIPs: ["10.96.5.1"], ports: [Fixtures.servicePort("http", port: 80, targetPort: 8080)],
            annotations: ["canary-agent.io/canary-service": "payments-canary", "canary-agent.io/canary-weight": "50"])
        let tcp = R.route(.tcp, "old-tcp", parent: "payments", backends: [R.backend("payments-stable", weight: 1)], created: "2026-01-01T00:00:00Z")
        let http = R.route(.http, "new-http", parent: "payments", backends: [R.backend("payments-canary", weight: 1)], created: "2026-12-01T00:00:00Z")
        let result = Translator.translate(try R.input(objects, routes: [tcp, http]))
        let service = try #require(result.desiredState.services.values.first)
        #expect(service.backends.map(\.name) == ["payments-canary"], "HTTPRoute wins over an older TCPRoute, and over the annotations")
        let statuses = RouteStatusEntry.desired(result.routes)
        let loser = try #require(statuses[RouteRef(kind: .tcp, namespace: "default", name: "old-tcp")]?.first)
        #expect(!loser.accepted.status && loser.accepted.message.contains("HTTPRoute default/new-http takes precedence"))

        // Between routes of one kind, the oldest.
        let older = R.route(.tcp, "b-older", parent: "payments", backends: [R.backend("payments-stable", weight: 1)], created: "2026-01-01T00:00:00Z")
        let newer = R.route(.tcp, "a-newer", parent: "payments", backends: [R.backend("payments-canary", weight: 1)], created: "2026-06-01T00:00:00Z")
        let oldest = Translator.translate(try R.input(R.payments(), routes: [older, newer]))
        #expect(oldest.desiredState.services.values.first?.backends.map(\.name) == ["payments-stable"])
    }

    @Test("a parent without the proxy label, another namespace's parent, a backend of another kind: named, not programmed")
    func refusedParentsAndBackends() throws {
        var objects = R.payments()
        objects[0] = Fixtures.service("payments", clusterIPs: ["10.96.5.1"], ports: [Fixtures.servicePort("http", port: 80, targetPort: 8080)], labels: [:])
        let route = R.route(.tcp, "payments-route", parent: "payments", backends: [R.backend("payments-stable", weight: 1)])
        let unlabelled = Translator.translate(try R.input(objects, routes: [route]))
        #expect(unlabelled.desiredState.services.isEmpty)
        let status = try #require(RouteStatusEntry.desired(unlabelled.routes).values.first?.first)
        #expect(!status.accepted.status && status.accepted.reason == "NoMatchingParent" && status.accepted.message.contains("lacks the label"))

        var other = R.route(.tcp, "kind", parent: "payments", backends: [R.backend("payments-stable", weight: 1)])
        other["spec"]?["rules"] = [["backendRefs": [["group": "example.com", "kind": "Bucket", "name": "x", "port": 80]]]]
        let invalid = Translator.translate(try R.input(R.payments(), routes: [other]))
        #expect(invalid.problems.map(\.reason) == ["InvalidKind"])
    }

    @Test("a backend in another namespace needs a ReferenceGrant there")
    func referenceGrant() throws {
        let objects = R.payments() + [
            Fixtures.service("shared-canary", namespace: "team-b", clusterIPs: ["10.96.6.1"], ports: [Fixtures.servicePort("http", port: 80, targetPort: 8080)], labels: [:]),
            Fixtures.slice("shared-canary-x", service: "shared-canary", namespace: "team-b", endpoints: [Fixtures.endpoint("10.6.1.1")], ports: [Fixtures.slicePort("http", port: 8080)]),
        ]
        let route = R.route(.tcp, "payments-route", parent: "payments", backends: [R.backend("payments-stable", weight: 9), R.backend("shared-canary", weight: 1, namespace: "team-b")])
        let refused = Translator.translate(try R.input(objects, routes: [route]))
        #expect(refused.problems.map(\.reason) == ["RefNotPermitted"])
        let grant: JSON = [
            "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": ["name": "allow-default", "namespace": "team-b"],
            "spec": ["from": [["group": "gateway.networking.k8s.io", "kind": "TCPRoute", "namespace": "default"]], "to": [["group": "", "kind": "Service"]]],
        ]
        let granted = Translator.translate(try R.input(objects, routes: [route], grants: [grant]))
        #expect(granted.problems == [])
        #expect(granted.desiredState.services.values.first?.backends.map(\.name) == ["payments-stable", "team-b/shared-canary"])
    }

    @Test("a UDPRoute governs the parent's UDP port only; three weighted backends")
    func udpRoute() throws {
        let objects: [JSON] = [
            Fixtures.service("dns", clusterIPs: ["10.96.7.1"], ports: [Fixtures.servicePort("dns", port: 53, protocol: "UDP"), Fixtures.servicePort("dns-tcp", port: 53)]),
        ] + ["a", "b", "c"].enumerated().flatMap { index, name -> [JSON] in
            [
                Fixtures.service("dns-\(name)", clusterIPs: ["10.96.7.\(index + 2)"], ports: [Fixtures.servicePort("dns", port: 53, protocol: "UDP")], labels: [:]),
                Fixtures.slice("dns-\(name)-x", service: "dns-\(name)", endpoints: [Fixtures.endpoint("10.7.\(index).1")], ports: [Fixtures.slicePort("dns", port: 53, protocol: "UDP")]),
            ]
        }
        let route = R.route(.udp, "dns", parent: "dns", backends: [R.backend("dns-a", port: 53, weight: 70), R.backend("dns-b", port: 53, weight: 20), R.backend("dns-c", port: 53, weight: 10)])
        let result = Translator.translate(try R.input(objects, routes: [route]))
        #expect(result.problems == [])
        #expect(result.desiredState.services[.inet(.udp, socket("10.96.7.1:53"))]?.backends.map(\.weight) == [70, 20, 10])
        let tcp = try #require(result.desiredState.services[.inet(.tcp, socket("10.96.7.1:53"))])
        #expect(tcp.origin.route == nil, "the TCP port is not the UDPRoute's")
    }

    @Test("status: written under our controller name, other controllers' entries kept, nothing written when it already says so")
    func statusEntries() throws {
        let route = R.route(.tcp, "payments-route", parent: "payments", backends: [R.backend("payments-stable", weight: 1)], generation: 3)
        let result = Translator.translate(try R.input(R.payments(), routes: [route]))
        let entries = try #require(RouteStatusEntry.desired(result.routes).values.first)
        let theirs: JSONValue = .object(["controllerName": .string("example.com/mesh"), "parentRef": .object(["name": .string("payments")]), "conditions": .array([])])
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let parents = try #require(RouteStatusEntry.parents(for: entries, current: [theirs], now: now))
        #expect(parents.count == 2 && parents[0] == theirs)
        let ours = parents[1]
        #expect(ours["controllerName"]?.string == "canary-agent.io/gateway-controller")
        guard case .array(let conditions)? = ours["conditions"] else { Issue.record("no conditions"); return }
        #expect(conditions.map { $0["type"]?.string } == ["Accepted", "ResolvedRefs"])
        #expect(conditions.allSatisfy { $0["status"]?.string == "True" && $0["observedGeneration"] == .number(3) })
        #expect(RouteStatusEntry.parents(for: entries, current: parents, now: now) == nil, "no write when nothing changed")
    }
}
