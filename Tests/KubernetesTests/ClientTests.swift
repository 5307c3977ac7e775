import Foundation
import KubernetesClient
import Testing

@testable import KubernetesSource

@Suite("Kubernetes client: framing, backoff, configuration", .timeLimit(.minutes(1)))
struct ClientUnitTests {
    @Test("an event split at every byte boundary, and many events in one chunk, frame the same")
    func framingAtEverySplit() throws {
        let text = "{\"type\":\"ADDED\",\"object\":{\"a\":1}}\n\n{\"type\":\"DELETED\",\"object\":{}}\r\n{\"type\":\"BOOKMARK\"}"
        let bytes = Array(text.utf8)
        let expected = [
            Array("{\"type\":\"ADDED\",\"object\":{\"a\":1}}".utf8), Array("{\"type\":\"DELETED\",\"object\":{}}".utf8),
            Array("{\"type\":\"BOOKMARK\"}".utf8),
        ]
        for first in 0...bytes.count {
            for second in first...bytes.count {
                var framer = NewlineDelimitedFramer()
                var lines = try framer.append(bytes[..<first])
                lines += try framer.append(bytes[first..<second])
                lines += try framer.append(bytes[second...])
                if let last = framer.finish() { lines.append(last) }
                #expect(lines == expected, "split at \(first), \(second)")
            }
        }
    }

    @Test("a very large event over many small chunks; a line past the limit is an error")
    func framingLargeEvents() throws {
        let payload = Array(repeating: UInt8(ascii: "x"), count: 3 << 20)
        var framer = NewlineDelimitedFramer(maximumLineLength: 4 << 20)
        var lines: [[UInt8]] = []
        var start = 0
        while start < payload.count {
            lines += try framer.append(payload[start..<min(payload.count, start + 1000)])
            start += 1000
        }
        #expect(lines.isEmpty)
        #expect(framer.pendingByteCount == payload.count)
        lines += try framer.append([UInt8(ascii: "\n")])
        #expect(lines == [payload])

        var small = NewlineDelimitedFramer(maximumLineLength: 10)
        #expect(throws: NewlineDelimitedFramer.LineTooLong(limit: 10)) { _ = try small.append(Array("01234567890".utf8)) }
    }

    @Test("backoff grows exponentially to its cap, and jitter only shortens it")
    func backoff() {
        let backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(2), multiplier: 2, jitter: 0.5)
        #expect(backoff.delay(attempt: 0, random: 0) == .milliseconds(100))
        #expect(backoff.delay(attempt: 1, random: 0) == .milliseconds(200))
        #expect(backoff.delay(attempt: 3, random: 0) == .milliseconds(800))
        #expect(backoff.delay(attempt: 10, random: 0) == .seconds(2))
        #expect(backoff.delay(attempt: 1000, random: 0) == .seconds(2))
        #expect(backoff.delay(attempt: 3, random: 0.999_999) > .milliseconds(399))
        #expect(backoff.delay(attempt: 3, random: 0.999_999) < .milliseconds(401))
        for attempt in 0..<20 {
            let delay = backoff.delay(attempt: attempt)
            #expect(delay <= .seconds(2) && delay >= .milliseconds(50))
        }
    }

    @Test("in-cluster configuration: service host and port, token and CA from the service-account folder")
    func inClusterConfiguration() async throws {
        try await withTemporaryDirectory { directory in
            try "token-1\n".write(toFile: directory + "/token", atomically: true, encoding: .utf8)
            try "CA".write(toFile: directory + "/ca.crt", atomically: true, encoding: .utf8)
            let environment = ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"]
            let configuration = try KubernetesConfiguration.inCluster(environment: environment, serviceAccountDirectory: directory)
            #expect(configuration.server == "https://10.96.0.1:443")
            #expect(configuration.certificateAuthorityPEM == Array("CA".utf8))
            #expect(try configuration.token?.currentToken() == "token-1")
            try replaceFile(directory + "/token", with: "token-2")
            #expect(try configuration.token?.currentToken() == "token-2")

            let v6 = try KubernetesConfiguration.inCluster(
                environment: ["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"], serviceAccountDirectory: directory)
            #expect(v6.server == "https://[fd00::1]:443")

            #expect(throws: KubernetesError.missingEnvironment(variable: "KUBERNETES_SERVICE_HOST")) {
                try KubernetesConfiguration.inCluster(environment: [:], serviceAccountDirectory: directory)
            }
            #expect(throws: KubernetesError.unreadableFile(path: directory + "/nothing/token", reason: "no such file")) {
                try KubernetesConfiguration.inCluster(environment: environment, serviceAccountDirectory: directory + "/nothing")
            }
        }
    }

    @Test("kubeconfig (JSON form): current context, CA and client certificate as data or relative files")
    func kubeconfigJSON() async throws {
        try await withTemporaryDirectory { directory in
            try "CLIENT KEY".write(toFile: directory + "/client.key", atomically: true, encoding: .utf8)
            try "TOKEN FROM FILE".write(toFile: directory + "/token", atomically: true, encoding: .utf8)
            let caData = Data("CA PEM".utf8).base64EncodedString()
            let certificateData = Data("CLIENT CERT".utf8).base64EncodedString()
            let text = """
                {"apiVersion": "v1", "kind": "Config", "current-context": "prod",
                 "clusters": [{"name": "dev", "cluster": {"server": "https://dev:6443", "insecure-skip-tls-verify": true}},
                              {"name": "prod", "cluster": {"server": "https://prod:6443/", "certificate-authority-data": "\(caData)"}}],
                 "contexts": [{"name": "dev", "context": {"cluster": "dev", "user": "token-user"}},
                              {"name": "prod", "context": {"cluster": "prod", "user": "cert-user", "namespace": "x"}}],
                 "users": [{"name": "cert-user", "user": {"client-certificate-data": "\(certificateData)", "client-key": "client.key"}},
                           {"name": "token-user", "user": {"tokenFile": "token"}}],
                 "preferences": {}}
                """
            try text.write(toFile: directory + "/config", atomically: true, encoding: .utf8)
            let prod = try KubernetesConfiguration.kubeconfig(path: directory + "/config")
            #expect(prod.server == "https://prod:6443")
            #expect(prod.certificateAuthorityPEM == Array("CA PEM".utf8))
            #expect(prod.insecureSkipTLSVerify == false)
            #expect(prod.clientCertificate == .init(certificatePEM: Array("CLIENT CERT".utf8), keyPEM: Array("CLIENT KEY".utf8)))
            #expect(prod.token == nil)

            let dev = try KubernetesConfiguration.kubeconfig(path: directory + "/config", context: "dev")
            #expect(dev.insecureSkipTLSVerify == true)
            #expect(try dev.token?.currentToken() == "TOKEN FROM FILE")
            #expect(dev.clientCertificate == nil)

            #expect(throws: KubernetesError.invalidKubeconfig(source: "kubeconfig", reason: "context \"nope\" is not defined")) {
                try KubernetesConfiguration.kubeconfig(text: text, context: "nope")
            }
            let exec = """
                {"current-context": "c", "clusters": [{"name": "k", "cluster": {"server": "https://k"}}],
                 "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                 "users": [{"name": "u", "user": {"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}}}]}
                """
            #expect(throws: KubernetesError.self) { try KubernetesConfiguration.kubeconfig(text: exec) }
        }
    }

    @Test("kubeconfig (YAML form, as kubectl writes it)", .enabled(if: KubernetesConfiguration.readsYAMLKubeconfig))
    func kubeconfigYAML() throws {
        let text = """
            apiVersion: v1
            kind: Config
            clusters:
            - cluster:
                certificate-authority-data: \(Data("CA PEM".utf8).base64EncodedString())
                server: https://127.0.0.1:6443
              name: kind-kind
            contexts:
            - context:
                cluster: kind-kind
                user: kind-kind
              name: kind-kind
            current-context: kind-kind
            preferences: {}
            users:
            - name: kind-kind
              user:
                token: abc.def
            """
        let configuration = try KubernetesConfiguration.kubeconfig(text: text)
        #expect(configuration.server == "https://127.0.0.1:6443")
        #expect(configuration.certificateAuthorityPEM == Array("CA PEM".utf8))
        #expect(try configuration.token?.currentToken() == "abc.def")
    }

    @Test("errors say what failed and where")
    func errorMessages() {
        let unauthorized = KubernetesError.apiStatus(
            request: "GET /api/v1/services", code: 401, status: Status(message: "Unauthorized", reason: "Unauthorized", code: 401))
        #expect(unauthorized.isUnauthorized)
        #expect(unauthorized.description == "GET /api/v1/services: HTTP 401 Unauthorized: Unauthorized")
        let gone = KubernetesError.watchError(request: "WATCH /api/v1/services@5", status: Status(message: "too old resource version", reason: "Expired", code: 410))
        #expect(gone.isGone)
        #expect(gone.description == "WATCH /api/v1/services@5: watch ERROR event: 410 Expired: too old resource version")
        #expect(throws: KubernetesError.invalidServerURL("10.0.0.1:443")) { try KubernetesConfiguration(server: "10.0.0.1:443") }
    }
}

@Suite("Kubernetes client against a stand-in API server", .timeLimit(.minutes(1)))
struct ClientServerTests {
    @Test("list pages with continue tokens; an expired token starts the list over")
    func paging() async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                for index in 0..<7 { state.apply(Fixtures.service("svc-\(index)", clusterIPs: ["10.96.1.\(index)"])) }
            }
            try await withClient(try serverConfiguration(server, certificates)) { client in
                let (items, version) = try await client.listAll(.services, of: Service.self, pageSize: 3)
                #expect(items.map(\.metadata.name) == (0..<7).map { "svc-\($0)" })
                #expect(version == "1007")
                let continues = try await server.perform { $0.requests(to: "/api/v1/services", watch: false).map { $0.query["continue"] } }
                #expect(continues == [nil, "page-1007-3", "page-1007-6"])

                try await server.perform { $0.expiringContinueTokens = 1 }
                let again = try await client.listAll(.services, of: Service.self, pageSize: 3)
                #expect(again.items.count == 7)
                let more = try await server.perform { $0.requests(to: "/api/v1/services", watch: false).dropFirst(3).map { $0.query["continue"] } }
                #expect(more == [nil, "page-1007-3", nil, "page-1007-3", "page-1007-6"])
            }
        }
    }

    @Test("the informer keeps a cache through ADDED, MODIFIED, DELETED and BOOKMARK, re-watching from the bookmark")
    func informerEvents() async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                state.apply(Fixtures.service("a", clusterIPs: ["10.96.1.1"]))
                state.apply(Fixtures.service("b", clusterIPs: ["10.96.1.2"]))
                state.apply(Fixtures.service("c", clusterIPs: ["10.96.1.3"]))
            }
            try await withClient(try serverConfiguration(server, certificates)) { client in
                let informer = Informer(client: client, resource: .services, of: Service.self, options: fastInformerOptions())
                let recorder = Recorder<InformerUpdate<Service>>()
                try await whileRunning({ await informer.run { await recorder.append($0) } }) {
                    let synced = try await eventually("first list") { await recorder.first { $0.change == .relisted } }
                    #expect(synced.objects.keys.map(\.description).sorted() == ["default/a", "default/b", "default/c"])
                    _ = try await eventually("watch open") { try await server.perform { $0.watchCount == 1 ? true : nil } }

                    try await server.perform { state in
                        state.apply(Fixtures.service("d", clusterIPs: ["10.96.1.4"]))
                        state.apply(Fixtures.service("a", clusterIPs: ["10.96.1.1"], annotations: ["note": "changed"]))
                        state.delete(kind: "Service", namespace: "default", name: "b")
                    }
                    let afterDelete = try await eventually("deletion") {
                        await recorder.first { $0.change == .deleted(ObjectKey(namespace: "default", name: "b")) }
                    }
                    // Each event carries its object; the updates add up to the server's objects.
                    let cache = informerCache(await recorder.values)
                    #expect(cache.keys.map(\.description).sorted() == ["default/a", "default/c", "default/d"])
                    #expect(cache[ObjectKey(namespace: "default", name: "a")]?.metadata.annotations == ["note": "changed"])
                    #expect(afterDelete.object?.metadata.name == "b")
                    #expect(await recorder.values.map(\.change).dropFirst() == [
                        .added(ObjectKey(namespace: "default", name: "d")), .modified(ObjectKey(namespace: "default", name: "a")),
                        .deleted(ObjectKey(namespace: "default", name: "b")),
                    ])
                    #expect(afterDelete.resourceVersion == "1006")

                    // Objects of another kind move the global resource version on; a bookmark tells the watcher.
                    let bookmark = try await server.perform { state -> Int in
                        state.apply(Fixtures.node("node-9"))
                        state.apply(Fixtures.node("node-10"))
                        state.sendBookmarks()
                        return state.resourceVersion
                    }
                    #expect(bookmark == 1008)
                    // Give the bookmark time to arrive, then drop the connection: the re-watch starts from it.
                    try await Task.sleep(for: .milliseconds(100))
                    try await server.perform { $0.dropWatches() }
                    let rewatch = try await eventually("re-watch") {
                        try await server.perform { $0.requests(to: "/api/v1/services", watch: true).dropFirst().first }
                    }
                    #expect(rewatch.query["resourceVersion"] == "1008")
                    #expect(rewatch.query["allowWatchBookmarks"] == "true")
                    #expect(rewatch.query["timeoutSeconds"] == "120")
                    #expect(try await server.perform { $0.requests(to: "/api/v1/services", watch: false).count } == 2)  // one list of two pages; no relist
                }
            }
        }
    }

    /// Runs an informer over services a, b; makes the history unavailable while "b" is deleted unseen;
    /// `trigger` then makes the informer find out. It must list again and drop "b" from its cache.
    private func expectRelist(goneAsErrorEvent: Bool, trigger: @escaping @Sendable (ServerState) -> Void) async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                state.goneAsErrorEvent = goneAsErrorEvent
                state.apply(Fixtures.service("a", clusterIPs: ["10.96.1.1"]))
                state.apply(Fixtures.service("b", clusterIPs: ["10.96.1.2"]))
            }
            try await withClient(try serverConfiguration(server, certificates)) { client in
                let informer = Informer(client: client, resource: .services, of: Service.self, options: fastInformerOptions(pageSize: nil))
                let recorder = Recorder<InformerUpdate<Service>>()
                try await whileRunning({ await informer.run { await recorder.append($0) } }) {
                    _ = try await eventually("first list") { await recorder.first { $0.change == .relisted } }
                    _ = try await eventually("watch open") { try await server.perform { $0.watchCount == 1 ? true : nil } }
                    try await server.perform(trigger)
                    let relisted = try await eventually("relist") { await recorder.first(after: 1) { $0.change == .relisted } }
                    #expect(relisted.objects.keys.map(\.description).sorted() == ["default/a", "default/c"])
                    #expect(try await server.perform { $0.requests(to: "/api/v1/services", watch: false).count } == 2)
                    // And it watches on from the new list.
                    try await server.perform { $0.apply(Fixtures.service("e", clusterIPs: ["10.96.1.5"])) }
                    _ = try await eventually("event after relist") {
                        await recorder.first { $0.change == .added(ObjectKey(namespace: "default", name: "e")) }
                    }
                }
            }
        }
    }

    /// Drops the watch, changes objects without telling anyone, and forgets the history.
    private static let dropAndCompact: @Sendable (ServerState) -> Void = { state in
        state.dropWatches()
        state.delete(kind: "Service", namespace: "default", name: "b")
        state.apply(Fixtures.service("c", clusterIPs: ["10.96.1.3"]))
        state.compact()
    }

    @Test("410 Gone as an HTTP status: list again and replace the cache")
    func relistAfterHTTPGone() async throws {
        try await expectRelist(goneAsErrorEvent: false, trigger: Self.dropAndCompact)
    }

    @Test("410 Gone as an ERROR event carrying a Status: list again and replace the cache")
    func relistAfterErrorEvent() async throws {
        try await expectRelist(goneAsErrorEvent: true, trigger: Self.dropAndCompact)
    }

    @Test("an ERROR event in the middle of a watch: list again")
    func relistAfterMidStreamError() async throws {
        try await expectRelist(goneAsErrorEvent: false) { state in
            // The watcher hears nothing of these two changes: it is told its watch has expired instead.
            let watchersGone = ServerState.status(code: 410, reason: "Expired", message: "The resourceVersion for the provided watch is too old.")
            state.sendError(watchersGone, toWatchersOf: "/api/v1/services")
            state.delete(kind: "Service", namespace: "default", name: "b")
            state.apply(Fixtures.service("c", clusterIPs: ["10.96.1.3"]))
        }
    }

    @Test("a dropped connection: watch again from the last resource version, without listing")
    func reconnectAfterDrop() async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { $0.apply(Fixtures.service("a", clusterIPs: ["10.96.1.1"])) }
            try await withClient(try serverConfiguration(server, certificates)) { client in
                let informer = Informer(client: client, resource: .services, of: Service.self, options: fastInformerOptions())
                let recorder = Recorder<InformerUpdate<Service>>()
                try await whileRunning({ await informer.run { await recorder.append($0) } }) {
                    _ = try await eventually("watch open") { try await server.perform { $0.watchCount == 1 ? true : nil } }
                    try await server.perform { $0.apply(Fixtures.service("b", clusterIPs: ["10.96.1.2"])) }
                    let added = try await eventually("b") { await recorder.first { $0.change == .added(ObjectKey(namespace: "default", name: "b")) } }
                    // Drop twice (the second reconnect too), changing things while disconnected.
                    for (round, name) in ["c", "d"].enumerated() {
                        try await server.perform { state in
                            state.dropWatches()
                            state.apply(Fixtures.service(name, clusterIPs: ["10.96.1.\(round + 3)"]))
                        }
                        _ = try await eventually(name) { await recorder.first { $0.change == .added(ObjectKey(namespace: "default", name: name)) } }
                    }
                    let watches = try await server.perform { $0.requests(to: "/api/v1/services", watch: true).map { $0.query["resourceVersion"] ?? "" } }
                    #expect(watches == ["1001", added.resourceVersion, "1003"])
                    #expect(try await server.perform { $0.requests(to: "/api/v1/services", watch: false).count } == 1)
                    #expect(await recorder.values.filter { $0.change == .relisted }.count == 1)
                    #expect(informerCache(await recorder.values).count == 4)
                }
                // Cancelling the informer closes its watch.
                _ = try await eventually("watch closed") { try await server.perform { $0.watchCount == 0 ? true : nil } }
            }
        }
    }

    @Test("very large events, and events cut into one-byte chunks, arrive whole")
    func largeAndFragmentedEvents() async throws {
        try await withAPIServer { server, certificates in
            try await withClient(try serverConfiguration(server, certificates)) { client in
                let informer = Informer(client: client, resource: .services, of: Service.self, options: fastInformerOptions())
                let recorder = Recorder<InformerUpdate<Service>>()
                try await whileRunning({ await informer.run { await recorder.append($0) } }) {
                    _ = try await eventually("watch open") { try await server.perform { $0.watchCount == 1 ? true : nil } }
                    let big = String(repeating: "0123456789abcdef", count: 3 << 16)  // 3 MiB
                    try await server.perform { state in
                        state.chunkSize = 16 << 10
                        state.apply(Fixtures.service("big", clusterIPs: ["10.96.1.1"], annotations: ["blob": big]))
                        state.chunkSize = 1
                        state.apply(Fixtures.service("small", clusterIPs: ["10.96.1.2"], annotations: ["note": "tiny chunks"]))
                    }
                    let update = try await eventually("both events") {
                        await recorder.first { $0.change == .added(ObjectKey(namespace: "default", name: "small")) }
                    }
                    let cache = informerCache(await recorder.values)
                    #expect(cache[ObjectKey(namespace: "default", name: "big")]?.metadata.annotations?["blob"] == big)
                    #expect(update.object?.metadata.annotations?["note"] == "tiny chunks")
                    #expect(try await server.perform { $0.requests(to: "/api/v1/services", watch: true).count } == 1)
                }
            }
        }
    }

    @Test("a silent watch is restarted after its idle timeout; a server timeout re-watches at once")
    func silentAndTimedOutWatches() async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { $0.silentWatches = true }
            try await withClient(try serverConfiguration(server, certificates)) { client in
                var options = fastInformerOptions()
                options.idleTimeout = .milliseconds(200)
                options.watchTimeout = .seconds(1)
                let informer = Informer(client: client, resource: .services, of: Service.self, options: options)
                let recorder = Recorder<InformerUpdate<Service>>()
                try await whileRunning({ await informer.run { await recorder.append($0) } }) {
                    _ = try await eventually("three silent watches") {
                        try await server.perform { $0.requests(to: "/api/v1/services", watch: true).count >= 3 ? true : nil }
                    }
                    // Each given-up watch was closed, not left open beside the next.
                    _ = try await eventually("one open watch") { try await server.perform { $0.watchCount == 1 ? true : nil } }
                    try await server.perform { state in
                        state.silentWatches = false
                        state.dropWatches()
                    }
                    // Now the server answers; with a 1 s timeout it ends each watch, and the informer comes back.
                    try await server.perform { $0.apply(Fixtures.service("late", clusterIPs: ["10.96.1.1"])) }
                    _ = try await eventually("event") { await recorder.first { $0.change == .added(ObjectKey(namespace: "default", name: "late")) } }
                    let before = try await server.perform { $0.requests(to: "/api/v1/services", watch: true).count }
                    _ = try await eventually("a re-watch after the server's timeout", timeout: .seconds(5)) {
                        try await server.perform { $0.requests(to: "/api/v1/services", watch: true).count > before ? true : nil }
                    }
                    #expect(try await server.perform { $0.requests(to: "/api/v1/services", watch: false).count } == 1)
                }
            }
        }
    }

    @Test(
        "a watch that fails at once every time (410 Gone, or an ERROR event) relists with a growing backoff, not back to back",
        arguments: [false, true])
    func relistStormIsBounded(goneAsErrorEvent: Bool) async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                state.goneWatches = true
                state.goneAsErrorEvent = goneAsErrorEvent
                state.apply(Fixtures.service("a", clusterIPs: ["10.96.1.1"]))
            }
            try await withClient(try serverConfiguration(server, certificates)) { client in
                var options = fastInformerOptions(pageSize: nil)
                options.backoff = Backoff(initial: .milliseconds(50), maximum: .milliseconds(400), multiplier: 2, jitter: 0)
                let informer = Informer(client: client, resource: .services, of: Service.self, options: options)
                let recorder = Recorder<InformerUpdate<Service>>()
                try await whileRunning({ await informer.run { await recorder.append($0) } }) {
                    _ = try await eventually("first list") { await recorder.first { $0.change == .relisted } }
                    func lists() async throws -> Int {
                        try await server.perform { $0.requests(to: "/api/v1/services", watch: false).count }
                    }
                    // Lists at about 0, 0, 50, 150, 350, 750, 1150, 1550, 1950, 2350, 2750 ms: the first relist at
                    // once, then 50, 100, 200, 400, 400... ms apart. Back to back, it would be hundreds a second.
                    // Only upper bounds on rates (a loaded machine makes fewer lists, never more), and a lower
                    // bound that says it keeps trying.
                    try await Task.sleep(for: .seconds(1))
                    let afterOneSecond = try await lists()
                    let windowStart = ContinuousClock.now
                    try await Task.sleep(for: .seconds(2))
                    let afterThreeSeconds = try await lists()
                    let window = ContinuousClock.now - windowStart
                    #expect(afterOneSecond >= 2 && afterOneSecond <= 9, "\(afterOneSecond) lists in the first second")
                    // The backoff grew to its 400 ms cap: at most window / 400 ms + 2 more lists, however long the
                    // window really was (a loaded machine oversleeps); 40 a second at the first 50 ms.
                    let allowed = Int(window / .milliseconds(400)) + 2
                    #expect(afterThreeSeconds - afterOneSecond <= allowed, "\(afterOneSecond), then \(afterThreeSeconds) in \(window)")
                    #expect(afterThreeSeconds > afterOneSecond, "it keeps relisting while watches fail")
                    // Every list it made was a full relist that replaced the cache.
                    #expect(await recorder.values.filter { $0.change == .relisted }.count >= afterOneSecond)

                    // Once the watch works again, the informer settles on it.
                    try await server.perform { $0.goneWatches = false }
                    _ = try await eventually("a watch that stays open", timeout: .seconds(5)) {
                        try await server.perform { $0.watchCount == 1 ? true : nil }
                    }
                    try await server.perform { $0.apply(Fixtures.service("b", clusterIPs: ["10.96.1.2"])) }
                    _ = try await eventually("event") { await recorder.first { $0.change == .added(ObjectKey(namespace: "default", name: "b")) } }
                }
            }
        }
    }

    @Test("a list whose answer stalls after its head fails with readIdle; the informer lists again and syncs")
    func stalledListIsGivenUp() async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                state.stallingLists = 1
                state.apply(Fixtures.service("a", clusterIPs: ["10.96.1.1"]))
            }
            var options = KubernetesClient.Options()
            options.requestTimeout = .seconds(10)
            options.readIdleTimeout = .milliseconds(300)
            let client = try KubernetesClient(configuration: try serverConfiguration(server, certificates), options: options)

            // The client alone: a typed error once the body has been silent for the idle timeout.
            let started = ContinuousClock.now
            do throws(KubernetesError) {
                _ = try await client.list(.services, of: Service.self)
                Issue.record("expected the stalled list to fail")
            } catch {
                #expect(error == .readIdle(request: "GET /api/v1/services", seconds: 0.3))
            }
            #expect(ContinuousClock.now - started < .seconds(3))

            // The informer: the first list stalls, it gives up within a few seconds, lists again and syncs.
            try await server.perform { $0.stallingLists = 1 }
            let informer = Informer(client: client, resource: .services, of: Service.self, options: fastInformerOptions())
            let recorder = Recorder<InformerUpdate<Service>>()
            let informerStarted = ContinuousClock.now
            try await whileRunning({ await informer.run { await recorder.append($0) } }) {
                let synced = try await eventually("list after the stall", timeout: .seconds(5)) { await recorder.first { $0.change == .relisted } }
                #expect(ContinuousClock.now - informerStarted < .seconds(5))
                #expect(synced.objects.keys.map(\.description) == ["default/a"])
                // One stalled list by the client, one by the informer, and the good one.
                #expect(try await server.perform { $0.requests(to: "/api/v1/services", watch: false).count } == 3)
                _ = try await eventually("watch open") { try await server.perform { $0.watchCount == 1 ? true : nil } }
            }
            await client.shutdown()
        }
    }

    @Test("never gives up: failed lists are retried with backoff until the server answers")
    func retriesUntilServed() async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                state.failingRequests = 6
                state.apply(Fixtures.service("a", clusterIPs: ["10.96.1.1"]))
            }
            try await withClient(try serverConfiguration(server, certificates)) { client in
                let informer = Informer(client: client, resource: .services, of: Service.self, options: fastInformerOptions())
                let recorder = Recorder<InformerUpdate<Service>>()
                try await whileRunning({ await informer.run { await recorder.append($0) } }) {
                    let synced = try await eventually("list") { await recorder.first { $0.change == .relisted } }
                    #expect(synced.objects.count == 1)
                    #expect(try await server.perform { $0.requests(to: "/api/v1/services", watch: false).count } == 7)
                }
            }
        }
    }

    @Test("token rotation: the rotated service-account token is read from the file and used")
    func tokenRotation() async throws {
        try await withAPIServer { server, certificates in
            try await withTemporaryDirectory { directory in
                try "token-1\n".write(toFile: directory + "/token", atomically: true, encoding: .utf8)
                try FileManager.default.copyItem(atPath: certificates.caCertificate, toPath: directory + "/ca.crt")
                let configuration = try KubernetesConfiguration.inCluster(
                    environment: ["KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": String(server.port)],
                    serviceAccountDirectory: directory)
                try await server.perform { state in
                    state.acceptedTokens = ["token-1"]
                    state.apply(Fixtures.service("a", clusterIPs: ["10.96.1.1"]))
                }
                try await withClient(configuration) { client in
                    let informer = Informer(client: client, resource: .services, of: Service.self, options: fastInformerOptions())
                    let recorder = Recorder<InformerUpdate<Service>>()
                    try await whileRunning({ await informer.run { await recorder.append($0) } }) {
                        _ = try await eventually("watch open") { try await server.perform { $0.watchCount == 1 ? true : nil } }
                        // The kubelet rotates the token; the old one stops working; connections drop.
                        try replaceFile(directory + "/token", with: "token-2\n")
                        try await server.perform { state in
                            state.acceptedTokens = ["token-2"]
                            state.dropWatches()
                            state.apply(Fixtures.service("b", clusterIPs: ["10.96.1.2"]))
                        }
                        _ = try await eventually("event after rotation") {
                            await recorder.first { $0.change == .added(ObjectKey(namespace: "default", name: "b")) }
                        }
                        let tokens = try await server.perform { $0.requests.map { $0.token ?? "" } }
                        #expect(tokens.first == "token-1")
                        #expect(tokens.last == "token-2")
                        #expect(Set(tokens) == ["token-1", "token-2"])
                        #expect(try await server.perform { $0.requests(to: "/api/v1/services", watch: false).count } == 1)
                    }
                }
            }
        }
    }

    @Test("TLS: the server is verified against the CA; a kubeconfig's skip flag and client certificate are honoured")
    func tls() async throws {
        try await withAPIServer(requireClientCertificate: true) { server, certificates in
            try await server.perform { $0.apply(Fixtures.service("a", clusterIPs: ["10.96.1.1"])) }
            func pem(_ path: String) throws -> String { try Data(contentsOf: URL(fileURLWithPath: path)).base64EncodedString() }
            func kubeconfig(ca: String?, insecure: Bool, clientCertificate: Bool) throws -> KubernetesConfiguration {
                var cluster: JSON = ["server": .string(server.url)]
                if let ca { cluster["certificate-authority-data"] = .string(try pem(ca)) }
                if insecure { cluster["insecure-skip-tls-verify"] = true }
                var user: JSON = [:]
                if clientCertificate {
                    user["client-certificate"] = .string(certificates.clientCertificate)
                    user["client-key-data"] = .string(try pem(certificates.clientKey))
                }
                let file: JSON = [
                    "current-context": "test", "clusters": [["name": "test", "cluster": cluster]],
                    "contexts": [["name": "test", "context": ["cluster": "test", "user": "me"]]],
                    "users": [["name": "me", "user": user]],
                ]
                return try KubernetesConfiguration.kubeconfig(text: String(decoding: file.encoded(), as: UTF8.self))
            }
            let good = try kubeconfig(ca: certificates.caCertificate, insecure: false, clientCertificate: true)
            try await withClient(good) { client in
                let items = try await client.listAll(.services, of: Service.self).items
                #expect(items.count == 1)
            }
            let wrongCA = try kubeconfig(ca: certificates.otherCACertificate, insecure: false, clientCertificate: true)
            try await withClient(wrongCA, connectTimeout: .milliseconds(500)) { client in
                await Self.expectTransportError(client)
            }
            let skipVerify = try kubeconfig(ca: certificates.otherCACertificate, insecure: true, clientCertificate: true)
            try await withClient(skipVerify) { client in
                let items = try await client.listAll(.services, of: Service.self).items
                #expect(items.count == 1)
            }
            let noClientCertificate = try kubeconfig(ca: certificates.caCertificate, insecure: false, clientCertificate: false)
            try await withClient(noClientCertificate, connectTimeout: .milliseconds(500)) { client in
                await Self.expectTransportError(client)
            }
        }
    }

    @Test("tls-server-name: the certificate is checked against that name, the connection goes to the server's host")
    func tlsServerName() async throws {
        // The server's certificate names api.cluster.test only; the server is reached at 127.0.0.1.
        try await withAPIServer(namedCertificate: true) { server, certificates in
            try await server.perform { $0.apply(Fixtures.service("a", clusterIPs: ["10.96.1.1"])) }
            var configuration = try serverConfiguration(server, certificates)
            try await withClient(configuration, connectTimeout: .milliseconds(500)) { client in
                await Self.expectTransportError(client)
            }
            configuration.tlsServerName = TestCertificates.namedServerName
            try await withClient(configuration) { client in
                let items = try await client.listAll(.services, of: Service.self).items
                #expect(items.count == 1)
            }
            configuration.tlsServerName = "kubernetes.invalid"
            try await withClient(configuration, connectTimeout: .milliseconds(500)) { client in
                await Self.expectTransportError(client)
            }
        }
    }

    /// A refused TLS handshake is a transport error (AsyncHTTPClient retries connecting until its connect timeout).
    private static func expectTransportError(_ client: KubernetesClient) async {
        do throws(KubernetesError) {
            _ = try await client.listAll(.services, of: Service.self)
            Issue.record("expected the TLS handshake to fail")
        } catch {
            guard case .transport(let request, _) = error else {
                Issue.record("expected a transport error, got \(error)")
                return
            }
            #expect(request == "GET /api/v1/services")
        }
    }

    @Test("label selectors reach the server; updates() streams the informer's changes")
    func labelSelectorAndUpdatesStream() async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                state.apply(Fixtures.service("mine", clusterIPs: ["10.96.1.1"]))
                state.apply(Fixtures.service("kube-dns", clusterIPs: ["10.96.1.2"], labels: ["k8s-app": "kube-dns"]))
            }
            try await withClient(try serverConfiguration(server, certificates)) { client in
                let informer = Informer(
                    client: client, resource: .services, of: Service.self,
                    selectors: Selectors(labelSelector: "service.kubernetes.io/service-proxy-name=canary-agent,!skip"),
                    options: fastInformerOptions())
                var updates = informer.updates().makeAsyncIterator()
                let first = try #require(await updates.next())
                #expect(first.change == .relisted)
                #expect(first.objects.keys.map(\.description) == ["default/mine"])
                try await server.perform { state in
                    state.apply(Fixtures.service("dns-2", clusterIPs: ["10.96.1.3"], labels: ["k8s-app": "kube-dns"]))
                    state.apply(Fixtures.service("other", clusterIPs: ["10.96.1.4"]))
                }
                let second = try #require(await updates.next())
                #expect(second.change == .added(ObjectKey(namespace: "default", name: "other")))
                let queries = try await server.perform { $0.requests(to: "/api/v1/services", watch: true).map { $0.query["labelSelector"] } }
                #expect(queries == ["service.kubernetes.io/service-proxy-name=canary-agent,!skip"])
            }
        }
    }

    @Test("the request timeout bounds the wait for an answer, not the life of a watch")
    func requestTimeoutDoesNotEndWatches() async throws {
        try await withAPIServer { server, certificates in
            var options = KubernetesClient.Options()
            options.requestTimeout = .milliseconds(300)
            let client = try KubernetesClient(configuration: try serverConfiguration(server, certificates), options: options)
            let informer = Informer(client: client, resource: .services, of: Service.self, options: fastInformerOptions())
            let recorder = Recorder<InformerUpdate<Service>>()
            try await whileRunning({ await informer.run { await recorder.append($0) } }) {
                _ = try await eventually("watch open") { try await server.perform { $0.watchCount == 1 ? true : nil } }
                try await Task.sleep(for: .milliseconds(700))
                try await server.perform { $0.apply(Fixtures.service("late", clusterIPs: ["10.96.1.1"])) }
                _ = try await eventually("event") { await recorder.first { $0.change == .added(ObjectKey(namespace: "default", name: "late")) } }
                #expect(try await server.perform { $0.requests(to: "/api/v1/services", watch: true).count } == 1)
            }
            await client.shutdown()
        }
    }

    @Test("a 401 is a typed error with the server's Status")
    func unauthorized() async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { $0.acceptedTokens = ["right"] }
            try await withClient(try serverConfiguration(server, certificates, token: "wrong")) { client in
                do throws(KubernetesError) {
                    _ = try await client.list(.services, of: Service.self)
                    Issue.record("expected a 401")
                } catch {
                    #expect(error.isUnauthorized)
                    #expect(error.description == "GET /api/v1/services: HTTP 401 Unauthorized: Unauthorized")
                }
            }
        }
    }

    @Test("an Event is created on the object, shaped as core/v1 Event")
    func recordEvent() async throws {
        try await withAPIServer { server, certificates in
            try await withClient(try serverConfiguration(server, certificates)) { client in
                let time = Date(timeIntervalSince1970: 1_750_000_000)
                try await client.recordEvent(
                    EventRecord(
                        involvedObject: ObjectReference(kind: "Service", namespace: "shop", name: "web", uid: "u-1", resourceVersion: "7"),
                        reason: "InvalidCanaryWeight", message: "bad", component: "canary-agent", host: "node-1", time: time))
                let request = try await server.perform { $0.requests.last }
                #expect(request?.method == "POST")
                #expect(request?.path == "/api/v1/namespaces/shop/events")
                let event = try #require(try await server.perform { $0.createdEvents.first })
                #expect(event["kind"] == "Event")
                #expect(event["apiVersion"] == "v1")
                #expect(event["metadata"]?["namespace"] == "shop")
                #expect(event["metadata"]?["name"]?.string?.hasPrefix("web.") == true)
                #expect(event["involvedObject"] == ["apiVersion": "v1", "kind": "Service", "namespace": "shop", "name": "web", "uid": "u-1", "resourceVersion": "7"])
                #expect(event["reason"] == "InvalidCanaryWeight")
                #expect(event["type"] == "Warning")
                #expect(event["source"] == ["component": "canary-agent", "host": "node-1"])
                #expect(event["firstTimestamp"] == "2025-06-15T15:06:40Z")
                #expect(event["count"] == 1)
            }
        }
    }
}

/// The objects a consumer holds after these updates: a relist replaces them, an event changes one.
func informerCache<Object>(_ updates: [InformerUpdate<Object>]) -> [ObjectKey: Object] {
    var cache: [ObjectKey: Object] = [:]
    for update in updates {
        switch update.change {
        case .relisted: cache = update.objects
        case .added(let key), .modified(let key): cache[key] = update.object
        case .deleted(let key): cache[key] = nil
        }
    }
    return cache
}
