import CanaryCore
import Foundation
import IPVS
import IPVSTestSupport
import Logging
import MetricsTestKit
import Synchronization
import Testing

@testable import CanaryAgent

/// The reconciler against the in-memory kernel and node: what it applies, when, and what it leaves.
@Suite("Reconciler")
struct ReconcilerTests {
    static func socket(_ text: String) -> SocketAddress { SocketAddress(text)! }
    static func key(_ text: String, _ proto: IPProtocol = .tcp) -> ServiceKey { .inet(proto, socket(text)) }

    static func service(
        _ name: String, _ address: String, stable: [String], canary: [String] = [], share: Int = 0,
        scheduler: Scheduler = .weightedRoundRobin, proto: IPProtocol = .tcp
    ) -> DesiredService {
        DesiredService(
            name: name, key: key(address, proto), scheduler: scheduler,
            stable: stable.map { Endpoint(socket($0)) }, canary: canary.map { Endpoint(socket($0)) },
            canaryShare: CanaryShare(basisPoints: share)!)
    }

    static let web = service("web", "10.96.0.10:80", stable: ["10.9.1.2:80", "10.9.1.3:80", "10.9.1.4:80"], canary: ["10.9.1.9:80"], share: 1000)
    static let api = service("api", "10.96.0.11:8080", stable: ["10.9.2.2:8080"], canary: ["10.9.2.9:8080"], share: 2500)

    struct Bench {
        let kernel: InMemoryIPVS
        let node: InMemoryNodePlumbing
        let metrics: TestMetrics
        let reconciler: Reconciler

        init(kernel: InMemoryIPVS = InMemoryIPVS(), node: InMemoryNodePlumbing = InMemoryNodePlumbing(), settings: Reconciler.Settings = Reconciler.Settings()) {
            self.kernel = kernel
            self.node = node
            metrics = TestMetrics()
            reconciler = Reconciler(
                kernel: kernel, node: node, settings: settings, metrics: AgentMetrics(factory: metrics),
                sourceSummary: "test", logger: Logger(label: "test"))
        }

        func submit(_ services: [DesiredService]) async {
            await reconciler.submit(.changed(.replaceAll(DesiredState(services: services)), problems: [], receivedAt: .now))
        }

        /// The kernel's table, indexed.
        func table() throws -> IPVSTableIndex { Planner.index(try kernel.dumpTable()) }

        /// What the kernel should hold for these wrr services, by a rule written here, not by the
        /// agent's solver: with a canary share s (basis points), each live stable endpoint weighs
        /// (10,000 − s) × live canaries and each live canary s × live stables, divided by their gcd
        /// (the exact split in the smallest integers); a draining endpoint 0; with no live canary or
        /// s = 0 every live stable endpoint 1 (and the reverse at 100 % or with no live stable).
        static func expected(_ services: [DesiredService]) -> [ServiceKey: [SocketAddress: Int32]] {
            func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
            var table: [ServiceKey: [SocketAddress: Int32]] = [:]
            for service in services {
                precondition(service.scheduler == .weightedRoundRobin, "the rule is wrr's")
                let stable = service.stable.filter { $0.state == .live }.count
                let canary = service.canary.filter { $0.state == .live }.count
                let share = service.canaryShare.basisPoints
                var stableWeight = (10_000 - share) * canary, canaryWeight = share * stable
                if canary == 0 || share == 0 { (stableWeight, canaryWeight) = (1, 0) }
                if stable == 0 || share == 10_000 { (stableWeight, canaryWeight) = (0, 1) }
                let divisor = max(1, gcd(stableWeight, canaryWeight))
                var weights: [SocketAddress: Int32] = [:]
                for endpoint in service.stable {
                    weights[endpoint.address] = endpoint.state == .live ? Int32(stableWeight / divisor) : 0
                }
                for endpoint in service.canary {
                    weights[endpoint.address] = endpoint.state == .live ? Int32(canaryWeight / divisor) : 0
                }
                table[service.key] = weights
            }
            return table
        }

        func netlinkOperations(_ kind: String) -> Int64 {
            metrics.counterTotal(label: "canary_agent_netlink_operations_total", dimensions: [("operation", kind), ("result", "ok")])
        }
    }

    /// Weights and addresses only: what decides where traffic goes.
    static func shape(_ table: IPVSTableIndex) -> [ServiceKey: [SocketAddress: Int32]] {
        table.mapValues { Dictionary(uniqueKeysWithValues: $0.destinations.map { ($0.address, $0.weight) }) }
    }

    @Test("the first full sync programs every service, binds its addresses and is then ready")
    func firstFullSync() async throws {
        let bench = Bench()
        await bench.submit([Self.web, Self.api])
        #expect(bench.reconciler.isReady == false)
        await bench.reconciler.fullSync()

        let table = try bench.table()
        #expect(Self.shape(table) == Bench.expected([Self.web, Self.api]))
        #expect(bench.node.addresses == [IPAddress("10.96.0.10")!, IPAddress("10.96.0.11")!])
        #expect(bench.node.masqueraded == Set(["10.9.1.2", "10.9.1.3", "10.9.1.4", "10.9.1.9", "10.9.2.2", "10.9.2.9"].map { IPAddress($0)! }))
        #expect(bench.reconciler.isReady)
        let status = await bench.reconciler.status()
        #expect(status.services.map(\.programmed) == [true, true])
        #expect(status.services.first { $0.name == "web" }?.targetCanaryShare == 0.1)
        #expect(try bench.metrics.expectGauge("canary_agent_services").lastValue == 2)
        #expect(await bench.reconciler.shareRows().first { $0.service == "api" }?.target == 0.25)
        #expect(bench.netlinkOperations("add-service") == 2)
        // Both addresses in one request; the hairpin set written whole once.
        #expect(bench.node.bindRequests == 1)
        #expect(bench.node.masqueradeCalls == [.sync(rewrite: true)])
    }

    @Test("a change of endpoints is one hairpin update of exactly what changed; an endpoint shared with another service stays")
    func hairpinUpdatesAreIncremental() async throws {
        let bench = Bench()
        let shared = Self.service("shared", "10.96.0.12:80", stable: ["10.9.1.2:80"])
        await bench.submit([Self.web, Self.api, shared])
        await bench.reconciler.fullSync()
        // web: 10.9.1.2 (also shared's) and 10.9.1.9 leave, 10.9.1.8 comes.
        let changed = Self.service("web", "10.96.0.10:80", stable: ["10.9.1.3:80", "10.9.1.4:80"], canary: ["10.9.1.8:80"], share: 1000)
        await bench.submit([changed, Self.api, shared])
        await bench.reconciler.incrementalSync()
        // 10.9.1.9 drains: its connections still need the hairpin rule until they are gone.
        #expect(bench.node.masqueradeCalls.last == .update(adding: [IPAddress("10.9.1.8")!], removing: []))
        await bench.reconciler.incrementalSync()  // drained (no connections): deleted
        #expect(bench.node.masqueradeCalls.last == .update(adding: [], removing: [IPAddress("10.9.1.9")!]))
        #expect(bench.node.masqueraded?.contains(IPAddress("10.9.1.2")!) == true)
        #expect(bench.node.masqueradeCalls.count == 3)
        // A change with the same endpoints (a weight) does not touch the set.
        await bench.submit([Self.service("web", "10.96.0.10:80", stable: ["10.9.1.3:80", "10.9.1.4:80"], canary: ["10.9.1.8:80"], share: 3000), Self.api, shared])
        await bench.reconciler.incrementalSync()
        #expect(bench.node.masqueradeCalls.count == 3)
        let status = try bench.metrics.expectGauge("canary_agent_destinations").lastValue
        #expect(status == Double(try bench.table().values.reduce(0) { $0 + $1.destinations.count }))
    }

    @Test("an update names the services that changed with their new entries: those are planned, the others stay")
    func updateChangesOnlyItsServices() async throws {
        let bench = Bench()
        await bench.submit([Self.web, Self.api])
        await bench.reconciler.fullSync()
        let web = Self.service("web", "10.96.0.10:80", stable: ["10.9.1.2:80"], canary: ["10.9.1.9:80"], share: 5000)
        let dns = Self.service("dns", "10.96.0.12:53", stable: ["10.9.3.2:53"], proto: .udp)
        await bench.reconciler.submit(
            .changed(.update([web.key: web, dns.key: dns, Self.api.key: nil]), problems: [], receivedAt: .now))
        await bench.reconciler.incrementalSync()
        let live = Self.shape(try bench.table()).mapValues { $0.filter { $0.value > 0 } }.filter { !$0.value.isEmpty }
        // web's leaving destinations drain (weight 0); api drains whole (its destinations at 0).
        #expect(live == Bench.expected([web, dns]), "\(live)")
        // An update that repeats what is there changes nothing: no operation.
        let before = bench.netlinkOperations("edit-destination") + bench.netlinkOperations("add-destination")
        await bench.reconciler.submit(.changed(.update([web.key: web]), problems: [], receivedAt: .now))
        await bench.reconciler.incrementalSync()
        #expect(bench.netlinkOperations("edit-destination") + bench.netlinkOperations("add-destination") == before)
        // The drift check finds the same: the update was the whole truth.
        await bench.reconciler.fullSync()
        let afterDriftCheck = Self.shape(try bench.table()).mapValues { $0.filter { $0.value > 0 } }.filter { !$0.value.isEmpty }
        #expect(afterDriftCheck == Bench.expected([web, dns]), "\(afterDriftCheck)")
    }

    @Test("an address that cannot be bound leaves its services unprogrammed and reported; a later full sync binds it")
    func failedBindIsRetried() async throws {
        let bench = Bench()
        let address = try #require(IPAddress("10.96.0.10"))
        bench.node.failBinding(address)
        await bench.submit([Self.web, Self.api])
        await bench.reconciler.fullSync()
        #expect(try bench.table().keys.sorted() == [Self.api.key])
        #expect(!bench.node.addresses.contains(address))
        #expect(try bench.metrics.expectCounter("canary_agent_errors_total", [("reason", "address_bind")]).values.count == 1)
        var status = await bench.reconciler.status()
        #expect(status.services.first { $0.name == "web" }?.programmed == false)
        #expect(status.services.first { $0.name == "api" }?.programmed == true)

        bench.node.failBinding(address, false)
        await bench.reconciler.fullSync()
        #expect(Self.shape(try bench.table()) == Bench.expected([Self.web, Self.api]))
        status = await bench.reconciler.status()
        #expect(status.services.allSatisfy { $0.programmed })
    }

    @Test("a source out of reach shows in status with its age, makes the node unready after a while, and clears on its return")
    func unavailableSourceIsReported() async throws {
        var settings = Reconciler.Settings()
        settings.degradedAfter = .seconds(1)
        let bench = Bench(settings: settings)
        await bench.submit([Self.web])
        await bench.reconciler.fullSync()
        await bench.reconciler.submit(.unavailable("services: GET /api/v1/services: HTTP 503"))
        var status = await bench.reconciler.status()
        #expect(status.sourceUnavailable?.message == "services: GET /api/v1/services: HTTP 503")
        #expect(status.errorCount == 1)
        let since = try #require(status.sourceUnavailable?.since)
        // A later report keeps the outage's start (its age); the table stays.
        await bench.reconciler.submit(.unavailable("services: connection refused"))
        status = await bench.reconciler.status()
        #expect(status.sourceUnavailable?.message == "services: connection refused")
        #expect(status.sourceUnavailable?.since == since)
        try await waitUntil { bench.reconciler.sourceUnavailableFor != nil }
        #expect(Self.shape(try bench.table()) == Bench.expected([Self.web]))
        await bench.reconciler.submit(.unavailable(nil))
        #expect(bench.reconciler.sourceUnavailableFor == nil)
        #expect(await bench.reconciler.status().sourceUnavailable == nil)
        #expect(try bench.metrics.expectCounter("canary_agent_errors_total", [("reason", "source_unavailable")]).values.count == 1)
    }

    @Test("a failed hairpin update is reported and the next full sync rewrites the set")
    func failedHairpinUpdateIsRewritten() async throws {
        let bench = Bench()
        await bench.submit([Self.web])
        await bench.reconciler.fullSync()
        bench.node.failMasqueradeUpdates(true)
        let web = Self.service("web", "10.96.0.10:80", stable: ["10.9.1.2:80", "10.9.1.5:80"], canary: ["10.9.1.9:80"], share: 1000)
        await bench.submit([web])
        await bench.reconciler.incrementalSync()
        #expect(bench.metrics.counterTotal(label: "canary_agent_errors_total", dimensions: [("reason", "masquerade_rules")]) == 1)
        bench.node.failMasqueradeUpdates(false)
        await bench.reconciler.fullSync()
        #expect(bench.node.masqueradeCalls.last == .sync(rewrite: true))
        #expect(bench.node.masqueraded == Set(["10.9.1.2", "10.9.1.5", "10.9.1.9"].map { IPAddress($0)! }))
        // Once right, a full sync trusts the set again.
        await bench.reconciler.fullSync()
        #expect(bench.node.masqueradeCalls.last == .sync(rewrite: false))
    }

    @Test("a failing hairpin set shows in status with its age, makes the node unready after a while, and clears once repaired")
    func masqueradeFailureIsReported() async throws {
        var settings = Reconciler.Settings()
        settings.degradedAfter = .seconds(2)
        let bench = Bench(settings: settings)
        await bench.submit([Self.web])
        await bench.reconciler.fullSync()
        #expect(await bench.reconciler.status().masqueradeError == nil)
        bench.node.failMasqueradeUpdates(true)
        let before = Date()
        let web = Self.service("web", "10.96.0.10:80", stable: ["10.9.1.2:80", "10.9.1.5:80"], canary: ["10.9.1.9:80"], share: 1000)
        await bench.submit([web])
        await bench.reconciler.incrementalSync()
        let failure = try #require(await bench.reconciler.status().masqueradeError)
        #expect(failure.message.contains("ipset -exist restore"), "\(failure.message)")
        #expect(failure.since >= before.addingTimeInterval(-1) && failure.since <= Date())
        #expect(await bench.reconciler.status().errorCount == 1)
        #expect(bench.reconciler.masqueradeDegradedFor == nil, "not yet past degradedAfter")
        try await Task.sleep(for: .milliseconds(2100))
        #expect((bench.reconciler.masqueradeDegradedFor ?? .zero) >= .seconds(2))
        // A second failure keeps the first one's time.
        let web2 = Self.service("web", "10.96.0.10:80", stable: ["10.9.1.2:80", "10.9.1.6:80"], canary: ["10.9.1.9:80"], share: 1000)
        await bench.submit([web2])
        await bench.reconciler.incrementalSync()
        #expect(await bench.reconciler.status().masqueradeError?.since == failure.since)
        bench.node.failMasqueradeUpdates(false)
        await bench.reconciler.fullSync()
        #expect(await bench.reconciler.status().masqueradeError == nil)
        #expect(bench.reconciler.masqueradeDegradedFor == nil)
    }

    @Test("a restart adopts the table it left: no operation at all")
    func adoptionAppliesNothing() async throws {
        let first = Bench()
        await first.submit([Self.web, Self.api])
        await first.reconciler.fullSync()
        let operationsBefore = first.kernel.log.count

        // A new agent process: same kernel, same interface.
        let second = Bench(kernel: first.kernel, node: first.node)
        await second.submit([Self.web, Self.api])
        await second.reconciler.fullSync()
        #expect(first.kernel.log.count == operationsBefore)
        #expect(await second.reconciler.status().lastFullSync?.operations == 0)
        #expect(second.reconciler.isReady)
    }

    @Test("a weight change is applied as destination edits, without dumping the table")
    func incrementalChangeEditsOnly() async throws {
        let bench = Bench()
        await bench.submit([Self.web, Self.api])
        await bench.reconciler.fullSync()
        let dumps = bench.kernel.dumps
        let logged = bench.kernel.log.count

        var web = Self.web
        web.canaryShare = CanaryShare(basisPoints: 5000)!
        await bench.submit([web, Self.api])
        await bench.reconciler.incrementalSync()

        #expect(bench.kernel.dumps == dumps)
        let operations = bench.kernel.log.dropFirst(logged)
        #expect(!operations.isEmpty)
        #expect(operations.allSatisfy { if case .editDestination(let key, _) = $0 { key == web.key } else { false } })
        #expect(Self.shape(try bench.table()) == Bench.expected([web, Self.api]))
    }

    @Test("a service someone deleted with ipvsadm is back after the drift check; a foreign service is never touched")
    func driftIsRepaired() async throws {
        let foreignKey = Self.key("192.168.50.1:53", .udp)
        let foreign = ServiceEntry(
            service: VirtualService(key: foreignKey, scheduler: .roundRobin),
            destinations: [Destination(address: Self.socket("192.168.50.2:53"), weight: 3)])
        let bench = Bench(kernel: InMemoryIPVS([foreign]))
        await bench.submit([Self.web, Self.api])
        await bench.reconciler.fullSync()

        bench.kernel.tamper { $0[Self.web.key] = nil }
        await bench.reconciler.fullSync()
        let table = try bench.table()
        #expect(Self.shape(table) == Bench.expected([Self.web, Self.api]).merging([foreignKey: [Self.socket("192.168.50.2:53"): 3]]) { a, _ in a })
        #expect(!bench.kernel.log.contains { $0.serviceKey == foreignKey })
    }

    @Test("a desired service on an address that holds someone else's service is left alone and reported")
    func foreignAddressIsNotTaken() async throws {
        let foreignKey = Self.key("10.96.0.10:443")
        let foreign = ServiceEntry(service: VirtualService(key: foreignKey, scheduler: .roundRobin))
        let bench = Bench(kernel: InMemoryIPVS([foreign]))
        await bench.submit([Self.web, Self.api])
        await bench.reconciler.fullSync()

        let table = try bench.table()
        #expect(table[Self.web.key] == nil)
        #expect(table[Self.api.key] != nil)
        #expect(!bench.node.addresses.contains(IPAddress("10.96.0.10")!))
        let status = await bench.reconciler.status()
        let web = try #require(status.services.first { $0.name == "web" })
        #expect(web.programmed == false)
        #expect(web.error?.contains("10.96.0.10") == true)
    }

    @Test("a service the kernel refuses is retried with backoff while the others sync")
    func failingServiceIsRetried() async throws {
        var settings = Reconciler.Settings()
        settings.retryBase = .milliseconds(1)
        let bench = Bench(settings: settings)
        bench.kernel.failOperations(on: Self.web.key, with: .kernel(errno: 12, operation: "add service", subject: "\(Self.web.key)"))
        await bench.submit([Self.web, Self.api])
        await bench.reconciler.fullSync()

        #expect(try bench.table()[Self.api.key] != nil)
        #expect(try bench.table()[Self.web.key] == nil)
        var status = await bench.reconciler.status()
        #expect(status.services.first { $0.name == "web" }?.error?.contains("add service") == true)
        #expect(status.services.first { $0.name == "api" }?.error == nil)

        bench.kernel.failOperations(on: Self.web.key, with: nil)
        try await Task.sleep(for: .milliseconds(5))
        await bench.reconciler.incrementalSync()
        #expect(Self.shape(try bench.table()) == Bench.expected([Self.web, Self.api]))
        status = await bench.reconciler.status()
        #expect(status.services.allSatisfy { $0.error == nil && $0.programmed })
    }

    @Test("a rejected input keeps the running table and is reported")
    func rejectedInputKeepsTable() async throws {
        let bench = Bench()
        await bench.submit([Self.web])
        await bench.reconciler.fullSync()
        let before = try bench.table()

        await bench.reconciler.submit(.rejected(InputProblem(object: InputObject(kind: .file, name: "config.yaml"), line: 7, field: "services[0].port", message: "70000 is not a port")))
        await bench.reconciler.incrementalSync()
        await bench.reconciler.fullSync()
        #expect(Self.shape(try bench.table()) == Self.shape(before))
        let status = await bench.reconciler.status()
        #expect(status.sourceError?.field == "services[0].port")
        #expect(try bench.metrics.expectCounter("canary_agent_errors_total", [("reason", "source_rejected")]).values.count == 1)
    }

    @Test("a removed service drains: weight 0 first, deleted once its connections are gone, then its address is released")
    func removedServiceDrains() async throws {
        let bench = Bench()
        await bench.submit([Self.web, Self.api])
        await bench.reconciler.fullSync()
        let endpoint = Self.socket("10.9.2.2:8080")
        bench.kernel.setConnections(active: 3, inactive: 0, of: endpoint, in: Self.api.key)

        await bench.submit([Self.web])
        await bench.reconciler.incrementalSync()
        let api = try #require(try bench.table()[Self.api.key])
        #expect(api.destinations.first { $0.address == endpoint }?.weight == 0)
        #expect(bench.node.addresses.contains(IPAddress("10.96.0.11")!))

        bench.kernel.setConnections(active: 0, inactive: 0, of: endpoint, in: Self.api.key)
        await bench.reconciler.incrementalSync()
        #expect(try bench.table()[Self.api.key] == nil)
        #expect(!bench.node.addresses.contains(IPAddress("10.96.0.11")!))
        #expect(bench.node.addresses.contains(IPAddress("10.96.0.10")!))
    }

    @Test("changes that arrive before a sync are applied together, timed from the first")
    func burstIsOneSync() async throws {
        let bench = Bench()
        await bench.submit([Self.web])
        await bench.reconciler.fullSync()
        let firstChange = ContinuousClock.now
        var web = Self.web
        for percent in [20, 30, 40] {
            web.canaryShare = CanaryShare(basisPoints: percent * 100)!
            await bench.reconciler.submit(.changed(.replaceAll(DesiredState(services: [web, Self.api])), problems: [], receivedAt: firstChange))
            try await Task.sleep(for: .milliseconds(5))
        }
        await bench.reconciler.incrementalSync()
        #expect(Self.shape(try bench.table()) == Bench.expected([web, Self.api]))
        let incremental = bench.metrics.timers(label: "canary_agent_sync_duration_seconds", dimensions: [("kind", "incremental")])
        #expect(incremental.flatMap(\.values).count == 1)
        // One latency for the full sync of the first state, one for the burst.
        let latencies = bench.metrics.timers(label: "canary_agent_event_to_kernel_seconds").flatMap(\.values)
        #expect(latencies.count == 2)
        #expect((latencies.last ?? 0) >= 15_000_000, "measured from the first change, 3 × 5 ms before the sync")
    }

    @Test("the running loop folds changes that arrive within its window into one sync")
    func loopFoldsABurst() async throws {
        var settings = Reconciler.Settings()
        // A window far longer than the burst takes on a loaded machine: every change lands in it.
        settings.syncWindow = .seconds(2)
        settings.driftCheckInterval = .seconds(3600)
        let bench = Bench(settings: settings)
        let loop = Task { await bench.reconciler.run() }
        defer { loop.cancel() }
        await bench.submit([Self.web])
        try await waitUntil { bench.reconciler.isReady }
        var web = Self.web
        for percent in [20, 30, 40] {
            web.canaryShare = CanaryShare(basisPoints: percent * 100)!
            await bench.submit([web, Self.api])
        }
        let expected = Bench.expected([web, Self.api])
        try await waitUntil { Self.shape(try bench.table()) == expected }
        let incremental = bench.metrics.timers(label: "canary_agent_sync_duration_seconds", dimensions: [("kind", "incremental")])
        #expect(incremental.flatMap(\.values).count == 1, "three changes, one sync")
    }

    @Test("the loop applies a change within its window and repairs drift at its period")
    func loopAppliesChangesAndChecksDrift() async throws {
        var settings = Reconciler.Settings()
        settings.syncWindow = .milliseconds(20)
        settings.driftCheckInterval = .milliseconds(300)
        let bench = Bench(settings: settings)
        let loop = Task { await bench.reconciler.run() }
        defer { loop.cancel() }

        await bench.submit([Self.web])
        try await waitUntil { bench.reconciler.isReady }
        var web = Self.web
        web.canaryShare = CanaryShare(basisPoints: 4000)!
        await bench.submit([web, Self.api])
        try await waitUntil { Self.shape(try bench.table()) == Bench.expected([web, Self.api]) }
        #expect(bench.metrics.timers(label: "canary_agent_event_to_kernel_seconds").flatMap(\.values).count >= 1)

        bench.kernel.tamper { $0.removeAll() }
        try await waitUntil { Self.shape(try bench.table()) == Bench.expected([web, Self.api]) }
        loop.cancel()
        await loop.value
    }

    @Test("a full sync that keeps failing after a good one backs off instead of spinning, and its error clears once it works")
    func failingFullSyncBacksOff() async throws {
        var settings = Reconciler.Settings()
        settings.syncWindow = .milliseconds(5)
        // The drift check is overdue all the time: only the backoff may pace the retries.
        settings.driftCheckInterval = .milliseconds(50)
        settings.retryBase = .milliseconds(40)
        settings.retryMax = .milliseconds(320)
        let bench = Bench(settings: settings)
        let loop = Task { await bench.reconciler.run() }
        defer { loop.cancel() }

        await bench.submit([Self.web])
        try await waitUntil { bench.reconciler.isReady }
        bench.kernel.failDumps(with: .socket(call: "recvmsg", errno: 105))
        let before = bench.kernel.dumps
        try await Task.sleep(for: .seconds(1.5))
        let attempts = bench.kernel.dumps - before
        // Delays of 40, 80, 160, 320, 320 … ms, each shortened by at most half (jitter): at most
        // about a dozen attempts in 1.5 s. Without the backoff the loop made thousands.
        #expect(attempts >= 1, "the full sync is still retried")
        #expect(attempts <= 15, "\(attempts) full-sync attempts in 1.5 s")
        #expect(await bench.reconciler.status().kernelError != nil)

        // A transient error is history once a full sync works again: `status` stops reporting it.
        bench.kernel.failDumps(with: nil)
        try await waitUntil { await bench.reconciler.status().kernelError == nil }
        #expect(await bench.reconciler.status().errorCount == 0)
        loop.cancel()
        await loop.value
    }

    /// The in-memory kernel, whose dumps can be made to hang (a netlink call that never returns).
    final class StallingKernel: IPVSKernel, @unchecked Sendable {
        let table = InMemoryIPVS()
        private let stalled = Mutex(false)
        func stall(_ on: Bool) { stalled.withLock { $0 = on } }
        func dumpTable() throws(IPVSError) -> [ServiceEntry] {
            while stalled.withLock({ $0 }) { usleep(5_000) }
            return try table.dumpTable()
        }
        func apply(_ operations: [IPVSOperation]) throws(IPVSError) -> [Result<Void, IPVSError>] { try table.apply(operations) }
        func service(_ key: ServiceKey) throws(IPVSError) -> ServiceEntry? { try table.service(key) }
    }

    @Test("liveness fails while the loop is stuck in a kernel call and comes back when it turns again")
    func livenessSeesAStuckLoop() async throws {
        var settings = Reconciler.Settings()
        settings.driftCheckInterval = .milliseconds(100)
        // Long enough that a loaded machine (other suites hold the cooperative threads) never looks stuck.
        settings.stallTimeout = .seconds(3)
        let kernel = StallingKernel()
        let metrics = TestMetrics()
        let reconciler = Reconciler(
            kernel: kernel, node: InMemoryNodePlumbing(), settings: settings, metrics: AgentMetrics(factory: metrics),
            sourceSummary: "test", logger: Logger(label: "test"))
        #expect(reconciler.isLive, "waiting for the first desired state is not a stall")
        let loop = Task { await reconciler.run() }
        defer { loop.cancel() }
        await reconciler.submit(.changed(.replaceAll(DesiredState(services: [Self.web])), problems: [], receivedAt: .now))
        try await waitUntil { reconciler.isReady }
        // Several drift periods pass with the loop turning: live all along.
        for _ in 0..<10 {
            #expect(reconciler.isLive)
            try await Task.sleep(for: .milliseconds(50))
        }
        kernel.stall(true)
        try await waitUntil { !reconciler.isLive }
        #expect((reconciler.stalledFor ?? .zero) >= .seconds(3))
        kernel.stall(false)
        try await waitUntil { reconciler.isLive }
        loop.cancel()
        await loop.value
    }

    /// Waits for a condition the loop makes true (bounded, so a broken loop fails instead of hanging).
    func waitUntil(_ condition: () async throws -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        // Generous: other suites running beside this one can hold the cooperative threads for a while.
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("condition not met within 120 s", sourceLocation: sourceLocation)
    }
}
