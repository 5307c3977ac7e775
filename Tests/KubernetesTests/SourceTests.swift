import CanaryCore
import Foundation
import IPVS
import KubernetesClient
import MetricsTestKit
import Synchronization
import Testing

@testable import KubernetesSource

@Suite("KubernetesSource end to end against a stand-in API server", .timeLimit(.minutes(1)))
struct SourceTests {
    /// One update, and the desired state the updates so far add up to.
    struct Seen: Sendable {
        var update: KubernetesSource.Update
        var desiredState: DesiredState
        var problems: [InputProblem] { update.problems }
        var newProblems: [InputProblem] { update.newProblems }
    }

    /// Starts the server with `objects`, runs a KubernetesSource for node-1 against it, and hands its updates to `body`.
    func withSource(
        _ objects: [JSON], configure: (inout KubernetesSource.Configuration) -> Void = { _ in },
        _ body: (FakeAPIServer, Recorder<Seen>) async throws -> Void
    ) async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                for object in objects { state.apply(object) }
            }
            try await runSource(server, certificates, configure: configure) { recorder in try await body(server, recorder) }
        }
    }

    /// Runs a KubernetesSource for node-1 against `server` while `body` runs.
    func runSource(
        _ server: FakeAPIServer, _ certificates: TestCertificates, configure: (inout KubernetesSource.Configuration) -> Void = { _ in },
        _ body: (Recorder<Seen>) async throws -> Void
    ) async throws {
        try await withClient(try serverConfiguration(server, certificates)) { client in
            var configuration = KubernetesSource.Configuration(nodeName: "node-1", defaultScheduler: .weightedRoundRobin)
            configuration.informer = fastInformerOptions()
            configure(&configuration)
            let source = KubernetesSource(client: client, configuration: configuration)
            let recorder = Recorder<Seen>()
            // The updates are changes: folded here as the reconciler folds them, into one state.
            let state = Mutex(DesiredState())
            try await whileRunning({
                await source.run { update in
                    let folded = state.withLock { state in
                        _ = state.apply(.update(update.changes))
                        return state
                    }
                    await recorder.append(Seen(update: update, desiredState: folded))
                }
            }) {
                try await body(recorder)
            }
        }
    }

    @Test("each new problem is counted once, by kind and reason")
    func problemsAreCounted() async throws {
        let metrics = TestMetrics()
        try await withSource(Fixtures.seedCanaryServices(weight: "150") + [Fixtures.node()], configure: { $0.metricsFactory = metrics }) {
            _, recorder in
            let first = try await update(recorder, "first update") { _ in true }
            #expect(first.newProblems.map(\.reason) == ["InvalidCanaryWeight"])
            let counters = metrics.counters(label: "canary_agent_source_problems_total")
            #expect(counters.count == 1)
            #expect(counters.first?.totalValue == 1)
            #expect(counters.first?.dimensions.contains { $0 == ("reason", "InvalidCanaryWeight") } == true)
        }
    }

    @Test("each full list that replaces an informer's cache is counted, by resource")
    func relistsAreCounted() async throws {
        let metrics = TestMetrics()
        try await withSource(Fixtures.seedCanaryServices(weight: "10") + [Fixtures.node()], configure: { $0.metricsFactory = metrics }) {
            server, recorder in
            _ = try await update(recorder, "first update") { _ in true }
            func relists(_ resource: String) -> Int64 {
                metrics.counters(label: "canary_agent_informer_relists_total")
                    .filter { $0.dimensions.contains { $0 == ("resource", resource) } }.map(\.totalValue).reduce(0, +)
            }
            #expect(relists("services") == 1)
            #expect(relists("endpointslices") == 1)
            #expect(relists("nodes") == 1)
            // The services' watch expires: one more relist of services.
            try await server.perform { state in
                state.goneWatches = true
                state.dropWatches()
            }
            _ = try await eventually("a relist of services") { relists("services") >= 2 ? true : nil }
            try await server.perform { $0.goneWatches = false }
        }
    }

    @Test("an API server that refuses every request is reported once, with its error, and its return once")
    func unavailableIsReported() async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                for object in Fixtures.seedCanaryServices(weight: "10") + [Fixtures.node()] { state.apply(object) }
            }
            try await withClient(try serverConfiguration(server, certificates)) { client in
                var configuration = KubernetesSource.Configuration(nodeName: "node-1", defaultScheduler: .weightedRoundRobin)
                configuration.informer = fastInformerOptions()
                let source = KubernetesSource(client: client, configuration: configuration)
                let updates = Recorder<Int>()
                let notes = Recorder<String?>()
                try await whileRunning({
                    await source.run(
                        onUpdate: { update in await updates.append(update.changes.count) },
                        onUnavailable: { await notes.append($0) })
                }) {
                    _ = try await eventually("first update") { await updates.count > 0 ? true : nil }
                    #expect(await notes.count == 0, "nothing to report while the server answers")
                    // Every request refused (a rotated token the server no longer takes), every watch ended.
                    try await server.perform { state in
                        state.acceptedTokens = ["someone-else"]
                        state.dropWatches()
                    }
                    let down = try await eventually("reported unavailable") { await notes.first { $0 != nil } }
                    // The first failure, naming its informer's resource (a dropped watch, or the 401 after it).
                    let resource = (down ?? nil)?.split(separator: ":").first.map(String.init)
                    #expect(["services", "endpointslices", "nodes"].contains(resource ?? ""), "\(String(describing: down))")
                    try await Task.sleep(for: .milliseconds(300))  // many failed retries meanwhile
                    try await server.perform { $0.acceptedTokens = nil }
                    _ = try await eventually("reported available") { await notes.last == .some(nil) ? true : nil }
                    let values = await notes.values
                    #expect(values.filter { $0 != nil }.count == 1, "one report for the outage, not one per retry: \(values)")
                    #expect(values.last == .some(nil))
                }
            }
        }
    }

    @Test("an agent that restarts does not record the same Event twice")
    func eventsNotRepeatedAfterRestart() async throws {
        let objects = Fixtures.seedCanaryServices(weight: "150") + [Fixtures.node()]
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                for object in objects { state.apply(object) }
            }
            for run in 1...2 {
                try await runSource(server, certificates) { recorder in
                    let first = try await update(recorder, "first update") { _ in true }
                    #expect(first.problems.map(\.reason) == ["InvalidCanaryWeight"])
                    #expect(first.newProblems == first.problems)
                    _ = try await eventually("POST \(run)") {
                        try await server.perform { $0.requests.filter { $0.method == "POST" }.count == run ? true : nil }
                    }
                }
            }
            let events = try await server.perform { $0.createdEvents }
            #expect(events.count == 1)
            #expect(events.first?["metadata"]?["name"]?.string?.hasPrefix("nginx-v1.canary-agent.") == true)
        }
    }

    /// The first update (after the first `after` ones) that matches.
    func update(
        _ recorder: Recorder<Seen>, _ what: String, after: Int = 0,
        where predicate: @escaping @Sendable (Seen) -> Bool
    ) async throws -> Seen {
        try await eventually(what) { await recorder.first(after: after, where: predicate) }
    }

    @Test("seed: one Service over two Deployments at 3:1, then 4:1 replicas")
    func seedReplicaSplit() async throws {
        let threeToOne = Fixtures.seedReplicaSplit(stable: 3, canary: 1)
        try await withSource([threeToOne.service, threeToOne.slice, Fixtures.node()]) { server, recorder in
            let first = try await update(recorder, "first update") { _ in true }
            #expect(first.problems == [])
            #expect(first.desiredState == Fixtures.expectedReplicaSplit(stable: 3, canary: 1))
            try await server.perform { $0.apply(Fixtures.seedReplicaSplit(stable: 4, canary: 1).slice) }
            let second = try await update(recorder, "five endpoints") { $0.desiredState.services.first?.value.stable.count == 5 }
            #expect(second.desiredState == Fixtures.expectedReplicaSplit(stable: 4, canary: 1))
        }
    }

    @Test("seed: a canary Service at weight 10; flipping the node label changes every service's scheduler")
    func seedCanaryAndNodeLabelFlip() async throws {
        let objects = Fixtures.seedCanaryServices() + [Fixtures.node(labels: ["canary-agent.io/scheduler": "sh"])]
        try await withSource(objects) { server, recorder in
            let first = try await update(recorder, "first update") { _ in true }
            #expect(first.problems == [])
            #expect(first.desiredState == Fixtures.expectedCanaryServices(scheduler: .sourceHashing))

            // kubectl label node node-1 canary-agent.io/scheduler=rr --overwrite
            try await server.perform { $0.apply(Fixtures.node(labels: ["canary-agent.io/scheduler": "rr"])) }
            let flipped = try await update(recorder, "rr") { $0.desiredState.services.values.first?.scheduler == .roundRobin }
            #expect(flipped.desiredState == Fixtures.expectedCanaryServices(scheduler: .roundRobin))

            // kubectl label node node-1 canary-agent.io/scheduler-   → back to the flag.
            try await server.perform { $0.apply(Fixtures.node()) }
            let unlabelled = try await update(recorder, "wrr") { $0.desiredState.services.values.first?.scheduler == .weightedRoundRobin }
            #expect(unlabelled.desiredState == Fixtures.expectedCanaryServices(scheduler: .weightedRoundRobin))
        }
    }

    @Test("bad input keeps the Service's last good state, is reported once with an Event, and others keep syncing")
    func badInputKeepsLastGoodState() async throws {
        let objects = Fixtures.seedCanaryServices() + [
            Fixtures.service("other", clusterIPs: ["10.96.0.30"]),
            Fixtures.slice("other-a", service: "other", endpoints: [Fixtures.endpoint("10.244.3.1")]),
            Fixtures.node(),
        ]
        try await withSource(objects) { server, recorder in
            let good = try await update(recorder, "first update") { _ in true }
            #expect(good.desiredState.services.count == 2)
            let goodCanary = try #require(good.desiredState.services.values.first { $0.name == "default/nginx-v1:http" })

            // One Service gets a bad weight while the other gains an endpoint.
            var broken = Fixtures.seedCanaryServices(weight: "abc")[0]
            let uid = try await server.perform { state -> String? in
                state.collections["/api/v1/services"]?.objects["default/nginx-v1"]?["metadata"]?["uid"]?.string
            }
            broken["metadata"]?["uid"] = uid.map(JSON.string)
            let brokenService = broken
            let seenBeforeBreaking = await recorder.count
            try await server.perform { state in
                state.apply(brokenService)
                state.apply(Fixtures.slice("other-a", service: "other", endpoints: [Fixtures.endpoint("10.244.3.1"), Fixtures.endpoint("10.244.3.2")]))
            }
            let afterBad = try await update(recorder, "problem and other's endpoint") {
                !$0.problems.isEmpty && $0.desiredState.services.values.contains { $0.name == "default/other:http" && $0.stable.count == 2 }
            }
            let problem = InputProblem(
                object: .service(namespace: "default", name: "nginx-v1"), field: "metadata.annotations[canary-agent.io/canary-weight]",
                message: "\"abc\" is not a percentage from 0 to 100 with at most two decimals", reason: "InvalidCanaryWeight")
            #expect(afterBad.problems == [problem])
            // Reported as new once, whether both changes came in one update or in two.
            #expect(await recorder.values.dropFirst(seenBeforeBreaking).flatMap(\.newProblems) == [problem])
            #expect(afterBad.desiredState.services.values.first { $0.name == "default/nginx-v1:http" } == goodCanary)

            let event = try await eventually("the Event") { try await server.perform { $0.createdEvents.first } }
            #expect(event["involvedObject"]?["kind"] == "Service")
            #expect(event["involvedObject"]?["name"] == "nginx-v1")
            #expect(event["involvedObject"]?["namespace"] == "default")
            #expect(event["involvedObject"]?["uid"] == uid.map(JSON.string))
            #expect(event["reason"] == "InvalidCanaryWeight")
            #expect(event["message"]?.string == "metadata.annotations[canary-agent.io/canary-weight]: \"abc\" is not a percentage from 0 to 100 with at most two decimals")
            #expect(event["source"]?["host"] == "node-1")

            // Another unrelated change: the problem stays, and is not reported again.
            let seen = await recorder.count
            try await server.perform { $0.apply(Fixtures.slice("other-a", service: "other", endpoints: [Fixtures.endpoint("10.244.3.1")])) }
            let later = try await update(recorder, "other back to one endpoint", after: seen) {
                $0.desiredState.services.values.contains { $0.name == "default/other:http" && $0.stable.count == 1 }
            }
            #expect(later.problems == [problem])
            #expect(later.newProblems == [])

            // Fixed: the new weight is taken, the problem goes.
            try await server.perform { $0.apply(Fixtures.seedCanaryServices(weight: "20")[0]) }
            let fixed = try await update(recorder, "fixed") { $0.problems.isEmpty && $0.desiredState.services.values.contains { $0.canaryShare.basisPoints == 2000 } }
            #expect(fixed.desiredState.services.count == 2)
            #expect(try await server.perform { $0.createdEvents.count } == 1)
        }
    }

    @Test("a canary Service created later is picked up without a restart")
    func canaryCreatedLater() async throws {
        var objects = Fixtures.seedCanaryServices()
        let canaryService = objects.remove(at: 1)
        let canarySlice = objects.remove(at: 2)
        try await withSource(objects + [Fixtures.node()]) { server, recorder in
            let first = try await update(recorder, "first update") { _ in true }
            #expect(first.desiredState == DesiredState())
            #expect(first.problems.map(\.reason) == ["CanaryServiceNotFound"])
            try await server.perform { state in
                state.apply(canaryService)
                state.apply(canarySlice)
            }
            let programmed = try await update(recorder, "programmed") { $0.problems.isEmpty && $0.desiredState.services.first?.value.canary.count == 1 }
            #expect(programmed.desiredState == Fixtures.expectedCanaryServices())
        }
    }

    @Test("--endpoints-api=endpoints reads core/v1 Endpoints")
    func endpointsAPI() async throws {
        var objects = Fixtures.seedCanaryServices().filter { $0["kind"] != "EndpointSlice" }
        objects += [
            Fixtures.endpointsObject("nginx-v1", ready: ["10.244.1.20", "10.244.1.21", "10.244.1.22"]),
            Fixtures.endpointsObject("nginx-v2", ready: ["10.244.2.20"]),
            // A slice that must be ignored in this mode.
            Fixtures.slice("nginx-v1-zzz", service: "nginx-v1", endpoints: [Fixtures.endpoint("10.244.9.9")]),
            Fixtures.node(),
        ]
        try await withSource(objects, configure: { $0.endpointsAPI = .endpoints }) { server, recorder in
            let first = try await update(recorder, "first update") { _ in true }
            #expect(first.problems == [])
            #expect(first.desiredState == Fixtures.expectedCanaryServices())
            #expect(try await server.perform { $0.requests(to: "/apis/discovery.k8s.io/v1/endpointslices", watch: false).count } == 0)
            let nodeQuery = try await server.perform { $0.requests(to: "/api/v1/nodes", watch: false).first?.query["fieldSelector"] }
            #expect(nodeQuery == "metadata.name=node-1")
        }
    }

    @Test("after 410 Gone the source relists and its desired state follows what changed meanwhile")
    func relistAfterGone() async throws {
        let split = Fixtures.seedReplicaSplit(stable: 3, canary: 1)
        try await withSource([split.service, split.slice, Fixtures.node()]) { server, recorder in
            _ = try await update(recorder, "first update") { _ in true }
            _ = try await eventually("three watches") { try await server.perform { $0.watchCount == 3 ? true : nil } }
            try await server.perform { state in
                state.dropWatches()
                state.apply(Fixtures.seedReplicaSplit(stable: 4, canary: 1).slice)
                state.compact()
            }
            _ = try await update(recorder, "five endpoints") { $0.desiredState.services.first?.value.stable.count == 5 }
            #expect(try await server.perform { $0.requests(to: "/apis/discovery.k8s.io/v1/endpointslices", watch: false).count } == 2)
        }
    }
}
