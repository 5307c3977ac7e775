import Foundation
import KubernetesClient
import Testing

@testable import KubernetesSource

/// Caps on what one watch event, one list page and one watch's backlog may cost in memory.
@Suite("Kubernetes client: memory caps", .timeLimit(.minutes(1)))
struct MemoryCapTests {

    private func makeClient(
        _ server: FakeAPIServer, _ certificates: TestCertificates, _ configure: (inout KubernetesClient.Options) -> Void
    ) throws -> KubernetesClient {
        var options = KubernetesClient.Options()
        options.connectTimeout = .seconds(5)
        options.requestTimeout = .seconds(10)
        configure(&options)
        return try KubernetesClient(configuration: try serverConfiguration(server, certificates), options: options)
    }

    @Test("the default caps fit the DaemonSet's 256 Mi memory limit: 4 MiB an event, 32 MiB a page")
    func defaultCaps() {
        let options = KubernetesClient.Options()
        #expect(options.maximumEventSize == 4 << 20)
        #expect(options.maximumBodySize == 32 << 20)
        #expect(options.maximumBufferedEvents == 256)
        #expect(NewlineDelimitedFramer().maximumLineLength == 4 << 20)
    }

    @Test("the framer stops at the cap: an oversized line fails once the cap is passed, not when it ends")
    func framerStopsAtTheCap() {
        var framer = NewlineDelimitedFramer(maximumLineLength: 64 << 10)
        let chunk = Array(repeating: UInt8(ascii: "x"), count: 4 << 10)
        var sent = 0
        var failure: NewlineDelimitedFramer.LineTooLong?
        // A 1 MiB line, 4 KiB at a time.
        while sent < 1 << 20 {
            do throws(NewlineDelimitedFramer.LineTooLong) {
                _ = try framer.append(chunk)
                sent += chunk.count
            } catch {
                failure = error
                sent += chunk.count
                break
            }
        }
        #expect(failure == NewlineDelimitedFramer.LineTooLong(limit: 64 << 10))
        #expect(sent <= (64 << 10) + chunk.count)
        #expect(framer.pendingByteCount <= (64 << 10) + chunk.count)
    }

    @Test("a watch event over the event cap fails with eventTooLarge; the informer lists again and syncs")
    func oversizedWatchEvent() async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                state.apply(Fixtures.service("a", clusterIPs: ["10.96.1.1"]))
            }
            let client = try makeClient(server, certificates) { $0.maximumEventSize = 64 << 10 }
            let big = String(repeating: "0123456789abcdef", count: 1 << 14)  // 256 KiB

            // The client alone: the typed error, naming the watch and the cap.
            let listed = try await client.list(.services, of: Service.self)
            let stream = try await client.watch(
                .services, of: Service.self, resourceVersion: listed.metadata.resourceVersion)
            _ = try await eventually("watch open") { try await server.perform { $0.watchCount == 1 ? true : nil } }
            try await server.perform { state in
                state.chunkSize = 4 << 10
                state.apply(Fixtures.service("big", clusterIPs: ["10.96.1.2"], annotations: ["blob": big]))
            }
            do throws(KubernetesError) {
                for try await _ in stream {}
                Issue.record("expected the oversized event to fail the watch")
            } catch {
                #expect(error == .eventTooLarge(request: stream.request, limit: 64 << 10))
                #expect(error.description.contains("larger than 65536 bytes"))
            }

            // The informer: the event fails its watch, it lists again (the list page holds the object), syncs,
            // and watches on from the list's version.
            try await server.perform { state in
                state.chunkSize = 0
                state.delete(kind: "Service", namespace: "default", name: "big")
            }
            let informer = Informer(client: client, resource: .services, of: Service.self, options: fastInformerOptions())
            let recorder = Recorder<InformerUpdate<Service>>()
            try await whileRunning({ await informer.run { await recorder.append($0) } }) {
                _ = try await eventually("first list") { await recorder.first { $0.change == .relisted } }
                _ = try await eventually("watch open") { try await server.perform { $0.watchCount == 1 ? true : nil } }
                let listsBefore = try await server.perform { $0.requests(to: "/api/v1/services", watch: false).count }
                try await server.perform { state in
                    state.chunkSize = 4 << 10
                    state.apply(Fixtures.service("big", clusterIPs: ["10.96.1.2"], annotations: ["blob": big]))
                }
                let relisted = try await eventually("list after the oversized event") {
                    await recorder.first { $0.change == .relisted && $0.objects.count == 2 }
                }
                #expect(relisted.objects[ObjectKey(namespace: "default", name: "big")]?.metadata.annotations?["blob"] == big)
                #expect(try await server.perform { $0.requests(to: "/api/v1/services", watch: false).count } > listsBefore)
                // A normal event still arrives on the new watch.
                try await server.perform { state in
                    state.chunkSize = 0
                    state.apply(Fixtures.service("small", clusterIPs: ["10.96.1.3"]))
                }
                _ = try await eventually("small event") {
                    await recorder.first { $0.change == .added(ObjectKey(namespace: "default", name: "small")) }
                }
            }
            await client.shutdown()
        }
    }

    @Test("a list page over the page cap fails with responseTooLarge; a page under it is fine")
    func oversizedListPage() async throws {
        try await withAPIServer { server, certificates in
            try await server.perform { state in
                state.apply(Fixtures.service("a", clusterIPs: ["10.96.1.1"]))
            }
            let client = try makeClient(server, certificates) { $0.maximumBodySize = 64 << 10 }
            let small = try await client.list(.services, of: Service.self)
            #expect(small.items.count == 1)

            let big = String(repeating: "0123456789abcdef", count: 1 << 14)  // 256 KiB
            try await server.perform { state in
                state.apply(Fixtures.service("big", clusterIPs: ["10.96.1.2"], annotations: ["blob": big]))
            }
            do throws(KubernetesError) {
                _ = try await client.list(.services, of: Service.self)
                Issue.record("expected the oversized page to fail")
            } catch {
                #expect(error == .responseTooLarge(request: "GET /api/v1/services", limit: 64 << 10))
                #expect(error.description == "GET /api/v1/services: the answer is larger than 65536 bytes")
            }
            await client.shutdown()
        }
    }

    @Test("a watch whose consumer falls more than maximumBufferedEvents behind fails with watchBacklog")
    func watchBacklog() async throws {
        try await withAPIServer { server, certificates in
            let client = try makeClient(server, certificates) { $0.maximumBufferedEvents = 3 }
            let listed = try await client.list(.services, of: Service.self)
            let stream = try await client.watch(
                .services, of: Service.self, resourceVersion: listed.metadata.resourceVersion)
            _ = try await eventually("watch open") { try await server.perform { $0.watchCount == 1 ? true : nil } }
            try await server.perform { state in
                for index in 0..<20 {
                    state.apply(Fixtures.service("s\(index)", clusterIPs: ["10.96.2.\(index + 1)"]))
                }
            }
            // Nobody reads for a while: the reader buffers three events, then gives the watch up.
            try await Task.sleep(for: .milliseconds(500))
            var received = 0
            do throws(KubernetesError) {
                for try await _ in stream { received += 1 }
                Issue.record("expected the watch to fail")
            } catch {
                #expect(error == .watchBacklog(request: stream.request, limit: 3))
            }
            #expect(received == 3)
            await client.shutdown()
        }
    }
}
