import Foundation
import KubernetesClient
import Testing

private let leaseNamespace = "canary-system"
private let leaseName = "canary-agent-route-status"
private let leasesPath = "/apis/coordination.k8s.io/v1/leases"

/// Short timings for tests; the defaults keep client-go's proportions at a tenth of the scale.
private func configuration(
    _ identity: String, leaseDuration: Duration = .milliseconds(1500), renewDeadline: Duration = .seconds(1),
    retryPeriod: Duration = .milliseconds(200), releaseOnCancel: Bool = true
) -> LeaderElection.Configuration {
    LeaderElection.Configuration(
        namespace: leaseNamespace, leaseName: leaseName, identity: identity, leaseDuration: leaseDuration,
        renewDeadline: renewDeadline, retryPeriod: retryPeriod, releaseOnCancel: releaseOnCancel)
}

extension FakeAPIServer {
    /// The Lease as the server holds it.
    func storedLease() async throws -> Lease? {
        let json = try await perform { $0.collections[leasesPath]?.objects["\(leaseNamespace)/\(leaseName)"] }
        return try json.map { try JSONDecoder().decode(Lease.self, from: Data($0.encoded())) }
    }

    /// Every version of the Lease the server stored, oldest first.
    func leaseHistory() async throws -> [Lease] {
        let history = try await perform { $0.collections[leasesPath]?.history.map(\.object) ?? [] }
        return try history.map { try JSONDecoder().decode(Lease.self, from: Data($0.encoded())) }
    }
}

/// One candidate, as one node's agent: its own client, its elector running in a task, and every value its
/// leadership stream gave.
final class Candidate: Sendable {
    let elector: LeaderElector
    let client: KubernetesClient
    let leadership: Recorder<Bool>
    private let task: Task<Void, Never>
    private let recording: Task<Void, Never>

    init(_ configuration: LeaderElection.Configuration, server: FakeAPIServer, certificates: TestCertificates) throws {
        var options = KubernetesClient.Options()
        options.connectTimeout = .seconds(5)
        options.requestTimeout = .seconds(30)
        client = try KubernetesClient(configuration: try serverConfiguration(server, certificates), options: options)
        let elector = try LeaderElector(configuration: configuration, client: client)
        self.elector = elector
        let stream = elector.leadership()
        let leadership = Recorder<Bool>()
        self.leadership = leadership
        recording = Task {
            for await leading in stream { await leadership.append(leading) }
        }
        task = Task { try? await elector.run() }
    }

    /// Cancels the election (which releases the Lease when configured to) and waits for it to end.
    func stop() async {
        task.cancel()
        await task.value
        await recording.value
        await client.shutdown()
    }

    /// Waits until the leadership stream gave `value` after `index` values; returns its index.
    @discardableResult
    func waitForLeadership(_ value: Bool, after index: Int = 0, timeout: Duration = .seconds(15)) async throws -> Int {
        try await eventually("\(elector.configuration.identity) leading == \(value)", timeout: timeout) {
            let values = await leadership.values
            return values.indices.first { $0 >= index && values[$0] == value }
        }
    }
}

/// Runs `body` with the candidates, stopping every one afterwards (first to last), whatever happens.
func withCandidates<T>(
    _ candidates: [Candidate], _ body: () async throws -> T
) async throws -> T {
    do {
        let result = try await body()
        for candidate in candidates { await candidate.stop() }
        return result
    } catch {
        for candidate in candidates { await candidate.stop() }
        throw error
    }
}

@Suite("Leader election on a Lease", .timeLimit(.minutes(1)))
struct LeaderElectionTests {
    @Test("one elector creates the missing Lease and holds it: holder, duration, MicroTimes, no transition")
    func acquiresMissingLease() async throws {
        try await withAPIServer { server, certificates in
            // A renew deadline a busy machine does not miss: this test wants one unbroken term.
            let a = try Candidate(
                configuration("agent-a", leaseDuration: .milliseconds(4500), renewDeadline: .seconds(3)), server: server,
                certificates: certificates)
            try await withCandidates([a]) {
                try await a.waitForLeadership(true)
                #expect(a.elector.isLeader)
                #expect(a.elector.leader == "agent-a")
                let created = try #require(try await server.storedLease())
                #expect(created.spec.holderIdentity == "agent-a")
                #expect(created.spec.leaseTransitions == 0)
                #expect(created.spec.leaseDurationSeconds == 5, "4.5 s rounds up to whole seconds")
                #expect(created.metadata.namespace == leaseNamespace)
                let posts = try await server.perform { $0.requests.filter { $0.method == "POST" }.map(\.path) }
                #expect(posts == ["/apis/coordination.k8s.io/v1/namespaces/\(leaseNamespace)/leases"])

                // It renews: renewTime moves on, acquireTime and the transitions stay.
                let renewed = try await eventually("a renewal") { () -> Lease? in
                    let lease = try await server.storedLease()
                    return lease?.spec.renewTime != created.spec.renewTime ? lease : nil
                }
                #expect(renewed.spec.holderIdentity == "agent-a")
                #expect(renewed.spec.acquireTime == created.spec.acquireTime)
                #expect(renewed.spec.leaseTransitions == 0)
                #expect(try #require(renewed.spec.renewTime) > created.spec.renewTime ?? MicroTime(.distantPast))
                let raw = try await server.perform { $0.collections[leasesPath]?.objects["\(leaseNamespace)/\(leaseName)"] }
                let renewTime = try #require(raw?["spec"]?["renewTime"]?.string)
                #expect(renewTime.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z/) != nil, "MicroTime: \(renewTime)")
                #expect(await a.leadership.values == [false, true])
            }
        }
    }

    @Test("two electors: exactly one leads at every sample, the other observes it")
    func exactlyOneLeads() async throws {
        try await withAPIServer { server, certificates in
            // Long deadlines: a renewal delayed by a busy machine must not empty `isLeader` between samples.
            let timings = (lease: Duration.seconds(8), renew: Duration.seconds(6))
            let a = try Candidate(
                configuration("agent-a", leaseDuration: timings.lease, renewDeadline: timings.renew), server: server,
                certificates: certificates)
            let b = try Candidate(
                configuration("agent-b", leaseDuration: timings.lease, renewDeadline: timings.renew), server: server,
                certificates: certificates)
            try await withCandidates([a, b]) {
                let first = try await eventually("a leader") { a.elector.isLeader ? "agent-a" : b.elector.isLeader ? "agent-b" : nil }
                let (leader, observer) = first == "agent-a" ? (a, b) : (b, a)
                var samples = 0
                let end = ContinuousClock.now + .seconds(3)
                while ContinuousClock.now < end {
                    let leading = [a.elector.isLeader, b.elector.isLeader]
                    #expect(leading.filter { $0 }.count == 1, "sample \(samples): \(leading)")
                    #expect(leader.elector.isLeader, "the leader changed at sample \(samples)")
                    samples += 1
                    try await Task.sleep(for: .milliseconds(20))
                }
                #expect(samples > 10)
                #expect(observer.elector.leader == first)
                #expect(await observer.leadership.values.allSatisfy { !$0 })
                #expect(try await server.storedLease()?.spec.holderIdentity == first)
                #expect(try await server.storedLease()?.spec.leaseTransitions == 0)
                #expect(try await server.perform { $0.conflicts } <= 1, "at most the one lost create")
            }
        }
    }

    @Test("a leader that stops without releasing is replaced after the lease duration; transitions + 1")
    func crashedLeaderIsReplaced() async throws {
        try await withAPIServer { server, certificates in
            // 3 s / 2 s: a must not miss its deadline on a busy machine before the crash.
            let timings = (lease: Duration.seconds(3), renew: Duration.seconds(2))
            let a = try Candidate(
                configuration("agent-a", leaseDuration: timings.lease, renewDeadline: timings.renew, releaseOnCancel: false),
                server: server, certificates: certificates)
            try await withCandidates([a]) {
                try await a.waitForLeadership(true)
                // b starts once a leads, so that a is the one to crash.
                let b = try Candidate(
                    configuration("agent-b", leaseDuration: timings.lease, renewDeadline: timings.renew), server: server,
                    certificates: certificates)
                try await withCandidates([b]) {
                    _ = try await eventually("b sees a") { b.elector.leader == "agent-a" ? true : nil }
                    #expect(!b.elector.isLeader)

                    let crashed = ContinuousClock.now
                    await a.stop()
                    #expect(try await server.storedLease()?.spec.holderIdentity == "agent-a", "a crash releases nothing")

                    // The lease duration from b's last observation, ten retries, and slack.
                    try await b.waitForLeadership(true, timeout: timings.lease + .milliseconds(200) * 10 + .seconds(3))
                    // b last saw a renewal at most a's renew deadline before the crash, so it waits at least the
                    // difference (1 s); half of it, for the clocks of a busy machine.
                    let waited = ContinuousClock.now - crashed
                    #expect(waited >= .milliseconds(500), "b took over after \(waited), before the lease could expire")
                    let lease = try #require(try await server.storedLease())
                    #expect(lease.spec.holderIdentity == "agent-b")
                    #expect(lease.spec.leaseTransitions == 1)
                    #expect(b.elector.isLeader)
                }
            }
        }
    }

    @Test("a leader that stops gracefully releases the Lease; the other takes it well within the lease duration")
    func releaseOnStop() async throws {
        try await withAPIServer { server, certificates in
            // 8 s: without the release, b could not take over before 8 s after a's last renewal.
            let lease = Duration.seconds(8)
            let a = try Candidate(
                configuration("agent-a", leaseDuration: lease, renewDeadline: .seconds(5)), server: server,
                certificates: certificates)
            try await withCandidates([a]) {
                try await a.waitForLeadership(true)
                let b = try Candidate(
                    configuration("agent-b", leaseDuration: lease, renewDeadline: .seconds(5)), server: server,
                    certificates: certificates)
                try await withCandidates([b]) {
                    _ = try await eventually("b sees a") { b.elector.leader == "agent-a" ? true : nil }

                    let stopped = ContinuousClock.now
                    await a.stop()
                    #expect(await a.leadership.values == [false, true, false])
                    try await b.waitForLeadership(true, timeout: lease / 2)
                    let waited = ContinuousClock.now - stopped
                    #expect(waited < lease / 2)

                    let history = try await server.leaseHistory()
                    let release = try #require(history.first { $0.spec.holderIdentity == "" }, "no released version")
                    #expect(release.spec.leaseDurationSeconds == 1)
                    #expect(release.spec.leaseTransitions == 0)
                    let current = try #require(try await server.storedLease())
                    #expect(current.spec.holderIdentity == "agent-b")
                    #expect(current.spec.leaseTransitions == 1)
                }
            }
        }
    }

    @Test("a Lease written behind the leader's back: its renewal meets 409, it steps down and says so")
    func conflictOnRenewStepsDown() async throws {
        try await withAPIServer { server, certificates in
            // A long renew deadline: a step-down well before it can only come from the 409 and the read after it.
            let a = try Candidate(
                configuration("agent-a", leaseDuration: .seconds(10), renewDeadline: .seconds(8)), server: server,
                certificates: certificates)
            let work = Recorder<String>()
            try await withCandidates([a]) {
                let worker = Task {
                    await a.elector.whileLeading {
                        await work.append("started")
                        while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(10)) }
                        await work.append("cancelled")
                    }
                }
                defer { worker.cancel() }
                let became = try await a.waitForLeadership(true)
                _ = try await eventually("the work starts") { await work.values == ["started"] ? true : nil }

                // Another writer takes the Lease: a new resource version, another holder, fresh times, 1 s.
                try await server.perform { state in
                    guard var lease = state.collections[leasesPath]?.objects["\(leaseNamespace)/\(leaseName)"] else { return }
                    lease["spec"]?["holderIdentity"] = "intruder"
                    lease["spec"]?["renewTime"] = .string(MicroTime(Date()).description)
                    lease["spec"]?["leaseDurationSeconds"] = 1
                    state.apply(lease)
                }
                // Its next renewal (every 0.2 s) meets the 409; the renew deadline (8 s) is far off.
                try await a.waitForLeadership(false, after: became + 1, timeout: .seconds(4))
                #expect(try await server.perform { $0.conflicts } >= 1, "the renewal met no 409")
                #expect(a.elector.leader == "intruder" || a.elector.isLeader, "observed holder: \(a.elector.leader ?? "none")")
                _ = try await eventually("the work is cancelled") { await work.values == ["started", "cancelled"] ? true : nil }

                // The intruder never renews: once its 1 s expires as a observes it, a takes the Lease back.
                try await a.waitForLeadership(true, after: became + 1, timeout: .seconds(10))
                let lease = try #require(try await server.storedLease())
                #expect(lease.spec.holderIdentity == "agent-a")
                #expect(lease.spec.leaseTransitions == 1)
            }
        }
    }

    enum Outage: String, CaseIterable, Sendable { case errors, hangs }

    @Test(
        "an API server that fails or hangs longer than the renew deadline: the leader steps down, then renews",
        arguments: Outage.allCases)
    func outageStepsDown(_ outage: Outage) async throws {
        try await withAPIServer { server, certificates in
            // The last renewal before the outage started at most a retry period and a request earlier, unless the
            // machine is busy: a 4 s deadline leaves room for both bounds below.
            let a = try Candidate(
                configuration("agent-a", leaseDuration: .seconds(6), renewDeadline: .seconds(4)), server: server,
                certificates: certificates)
            try await withCandidates([a]) {
                let became = try await a.waitForLeadership(true)
                let start = ContinuousClock.now
                try await server.perform { state in
                    switch outage {
                    case .errors: state.unavailable = true
                    case .hangs: state.hangingRequests = true
                    }
                }
                // The renew deadline (4 s) and generous slack.
                let stepped = try await a.waitForLeadership(false, after: became + 1, timeout: .seconds(10))
                let waited = ContinuousClock.now - start
                #expect(waited >= .seconds(1), "stepped down after \(waited): it should retry until the deadline")
                #expect(!a.elector.isLeader)

                try await server.perform { state in
                    state.unavailable = false
                    state.hangingRequests = false
                }
                // It still holds the Lease as far as anyone saw: it renews it, no transition.
                try await a.waitForLeadership(true, after: stepped + 1, timeout: .seconds(10))
                let lease = try #require(try await server.storedLease())
                #expect(lease.spec.holderIdentity == "agent-a")
                #expect(lease.spec.leaseTransitions == 0)
            }
        }
    }

    @Test("configuration: kube-controller-manager's timings; client-go's rules; one run per elector")
    func configurationRules() async throws {
        let kcm = LeaderElection.Configuration.kubeControllerManager(namespace: "ns", leaseName: "l", identity: "me")
        #expect(kcm.leaseDuration == .seconds(15))
        #expect(kcm.renewDeadline == .seconds(10))
        #expect(kcm.retryPeriod == .seconds(2))
        #expect(kcm.releaseOnCancel)
        try kcm.validate()
        #expect(throws: LeaderElection.Error.self) {
            try configuration("me", leaseDuration: .seconds(1), renewDeadline: .seconds(1)).validate()
        }
        #expect(throws: LeaderElection.Error.self) {
            try configuration("me", renewDeadline: .seconds(1), retryPeriod: .milliseconds(900)).validate()
        }
        #expect(throws: LeaderElection.Error.self) { try configuration("").validate() }

        try await withAPIServer { server, certificates in
            try await withClient(try serverConfiguration(server, certificates)) { client in
                let elector = try LeaderElector(configuration: configuration("me"), client: client)
                let run = Task { try await elector.run() }
                _ = try await eventually("leading") { elector.isLeader ? true : nil }
                await #expect(throws: LeaderElection.Error.alreadyRunning) { try await elector.run() }
                run.cancel()
                try await run.value
                #expect(!elector.isLeader)
            }
        }
    }

    @Test("MicroTime: six fractional digits in UTC; read with any fraction, or none")
    func microTime() throws {
        let time = MicroTime(Date(timeIntervalSince1970: 1_750_000_000.123_456_7))
        #expect(time.description == "2025-06-15T15:06:40.123457Z")
        #expect(MicroTime(rfc3339: "2025-06-15T15:06:40.123457Z") == time)
        #expect(MicroTime(rfc3339: "2025-06-15T15:06:40Z")?.date == Date(timeIntervalSince1970: 1_750_000_000))
        #expect(MicroTime(rfc3339: "2025-06-15T15:06:40.5Z")?.date == Date(timeIntervalSince1970: 1_750_000_000.5))
        #expect(MicroTime(Date(timeIntervalSince1970: 1_750_000_000)).description == "2025-06-15T15:06:40.000000Z")
        #expect(MicroTime(rfc3339: "yesterday") == nil)
        let json = try JSONEncoder().encode(LeaseSpec(holderIdentity: "x", renewTime: time))
        let decoded = try JSONDecoder().decode(LeaseSpec.self, from: json)
        #expect(decoded.renewTime == time)
        #expect(decoded.holderIdentity == "x")
        #expect(decoded.leaseDurationSeconds == nil)
    }
}

@Suite("Kubernetes client: single objects and the status subresource", .timeLimit(.minutes(1)))
struct ObjectWriteTests {
    struct Widget: Codable, Sendable, Hashable {
        struct Spec: Codable, Sendable, Hashable { var size: Int }
        struct Status: Codable, Sendable, Hashable { var ready: Bool; var note: String? }
        var apiVersion = "coordination.k8s.io/v1"
        var kind = "Lease"
        var metadata: ObjectMeta
        var spec: Spec?
        var status: Status?
    }

    @Test("get, create (409 AlreadyExists), replace (409 Conflict on a stale version), replaceStatus, patchStatus")
    func objectWrites() async throws {
        try await withAPIServer { server, certificates in
            try await withClient(try serverConfiguration(server, certificates)) { client in
                // A collection the stand-in server keeps, used here as a generic one.
                let resource = ResourceDescriptor.leases
                do {
                    _ = try await client.get(resource, namespace: "ns", name: "w", as: Widget.self)
                    Issue.record("found a missing object")
                } catch let error as KubernetesError {
                    #expect(error.isNotFound)
                }
                let created = try await client.create(
                    resource, namespace: "ns", object: Widget(metadata: ObjectMeta(name: "w"), spec: .init(size: 1)))
                let version = try #require(created.metadata.resourceVersion)
                #expect(created.metadata.namespace == "ns")
                #expect(created.metadata.uid != nil)
                do {
                    _ = try await client.create(resource, namespace: "ns", object: Widget(metadata: ObjectMeta(name: "w")))
                    Issue.record("created twice")
                } catch let error as KubernetesError {
                    #expect(error.isConflict && error.isAlreadyExists && error.statusCode == 409)
                }

                var changed = created
                changed.spec = .init(size: 2)
                let replaced = try await client.replace(resource, namespace: "ns", name: "w", object: changed)
                #expect(replaced.spec?.size == 2)
                #expect(replaced.metadata.resourceVersion != version)
                // `changed` still carries the old version: someone (us) wrote since.
                do {
                    _ = try await client.replace(resource, namespace: "ns", name: "w", object: changed)
                    Issue.record("a stale write went through")
                } catch let error as KubernetesError {
                    guard case .conflict(let request, let status) = error else {
                        Issue.record("not a conflict: \(error)")
                        return
                    }
                    #expect(request == "PUT /apis/coordination.k8s.io/v1/namespaces/ns/leases/w")
                    #expect(status?.reason == "Conflict")
                    #expect(!error.isAlreadyExists)
                }

                var withStatus = replaced
                withStatus.spec = .init(size: 99)
                withStatus.status = .init(ready: true, note: "first")
                let statusWritten = try await client.replaceStatus(resource, namespace: "ns", name: "w", object: withStatus)
                #expect(statusWritten.status == .init(ready: true, note: "first"))
                #expect(statusWritten.spec?.size == 2, "the status subresource leaves the spec alone")

                struct StatusPatch: Encodable, Sendable {
                    struct Status: Encodable, Sendable { var note: String }
                    var status: Status
                }
                let patched = try await client.patchStatus(
                    resource, namespace: "ns", name: "w", patch: StatusPatch(status: .init(note: "second")), as: Widget.self)
                #expect(patched.status == .init(ready: true, note: "second"))
                #expect(patched.spec?.size == 2)
                let fetched = try await client.get(resource, namespace: "ns", name: "w", as: Widget.self)
                #expect(fetched == patched)

                let methods = try await server.perform { $0.requests.map { "\($0.method) \($0.path)" } }
                #expect(methods.contains("PUT /apis/coordination.k8s.io/v1/namespaces/ns/leases/w/status"))
                #expect(methods.contains("PATCH /apis/coordination.k8s.io/v1/namespaces/ns/leases/w/status"))
            }
        }
    }
}
