import Foundation
import Logging

/// Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics: the configuration and
/// errors here; the elector is ``LeaderElector``.
public enum LeaderElection {
    /// Which Lease, who we are, and the timings.
    ///
    /// How the timings relate: the leader renews every `retryPeriod`; if no renewal succeeds within
    /// `renewDeadline` of the last one it steps down; a candidate takes the Lease over once it has seen the
    /// Lease unchanged for `leaseDuration` (on its own clock). `leaseDuration - renewDeadline` is the margin
    /// that keeps a leader that cannot renew from overlapping its successor, clock rates permitting.
    public struct Configuration: Sendable, Hashable {
        /// The Lease's namespace (the agent's own).
        public var namespace: String
        /// The Lease's name.
        public var leaseName: String
        /// This candidate's identity, written as `spec.holderIdentity`: unique among the candidates (the pod's name).
        public var identity: String
        /// How long candidates wait, from the last change of the Lease they observed, before taking it over.
        /// Written as `spec.leaseDurationSeconds`, in whole seconds rounded up.
        public var leaseDuration: Duration
        /// How long the leader keeps trying to renew before it steps down; less than `leaseDuration`.
        public var renewDeadline: Duration
        /// How often the leader renews, and (with up to 120 % of it added at random) how often a candidate tries.
        public var retryPeriod: Duration
        /// On cancellation while leading, give the Lease up (empty holder, 1 s duration) so that a successor
        /// takes it at its next try rather than after `leaseDuration`. As client-go's `ReleaseOnCancel`.
        public var releaseOnCancel: Bool

        public init(
            namespace: String, leaseName: String, identity: String, leaseDuration: Duration = .seconds(15),
            renewDeadline: Duration = .seconds(10), retryPeriod: Duration = .seconds(2), releaseOnCancel: Bool = true
        ) {
            self.namespace = namespace
            self.leaseName = leaseName
            self.identity = identity
            self.leaseDuration = leaseDuration
            self.renewDeadline = renewDeadline
            self.retryPeriod = retryPeriod
            self.releaseOnCancel = releaseOnCancel
        }

        /// kube-controller-manager's timings: lease 15 s, renew deadline 10 s, retry every 2 s.
        public static func kubeControllerManager(namespace: String, leaseName: String, identity: String) -> Configuration {
            Configuration(namespace: namespace, leaseName: leaseName, identity: identity)
        }

        /// client-go's checks: names present, every duration positive, `leaseDuration > renewDeadline`,
        /// `renewDeadline > 1.2 × retryPeriod` (the candidates' jitter).
        public func validate() throws(LeaderElection.Error) {
            func invalid(_ reason: String) -> LeaderElection.Error { .invalidConfiguration(reason) }
            if namespace.isEmpty { throw invalid("the namespace is empty") }
            if leaseName.isEmpty { throw invalid("the lease name is empty") }
            if identity.isEmpty { throw invalid("the identity is empty") }
            if retryPeriod <= .zero { throw invalid("the retry period must be positive") }
            if renewDeadline <= .zero { throw invalid("the renew deadline must be positive") }
            if leaseDuration <= renewDeadline {
                throw invalid("the lease duration (\(leaseDuration)) must be longer than the renew deadline (\(renewDeadline))")
            }
            if renewDeadline <= retryPeriod * LeaderElector.jitterFactor {
                throw invalid(
                    "the renew deadline (\(renewDeadline)) must be longer than \(LeaderElector.jitterFactor) × the retry period (\(retryPeriod))")
            }
        }

        /// `leaseDuration` in whole seconds, rounded up: never claim less than configured.
        var leaseDurationSeconds: Int {
            let (seconds, attoseconds) = leaseDuration.components
            return max(1, Int(seconds) + (attoseconds > 0 ? 1 : 0))
        }
    }

    /// What can stop an elector before it starts.
    public enum Error: Swift.Error, Sendable, Hashable, CustomStringConvertible {
        /// The configuration breaks a rule of ``Configuration/validate()``.
        case invalidConfiguration(String)
        /// ``LeaderElector/run()`` was called while a run was under way, or after one ended.
        case alreadyRunning

        public var description: String {
            switch self {
            case .invalidConfiguration(let reason): "leader election: invalid configuration: \(reason)"
            case .alreadyRunning: "leader election: this elector has already run; make a new one"
            }
        }
    }
}

/// Elects one leader among the candidates that share a Lease, as client-go's `leaderelection` does.
///
/// ``run()`` loops until its task is cancelled. As a candidate it reads the Lease every retry period
/// (jittered): it creates the Lease when there is none, and takes it over when the holder is empty or the
/// Lease has not changed for `leaseDurationSeconds` *as this elector observed it*: it notes on its own
/// monotonic clock when it last saw the Lease's spec change, and never trusts the remote `renewTime`.
/// As the leader it renews every retry period with a write conditional on the resource version; it steps
/// down when a renewal finds another holder, or when none succeeded within the renew deadline. A 409
/// Conflict is a lost race, not a failure: it reads the Lease again at the next try.
///
/// Concurrency: the election's bookkeeping (the Lease last read, when it last changed) belongs to the one
/// running ``run()`` call, as plain values. What other tasks see, ``isLeader``, ``leader`` and the
/// ``leadership()`` streams, is kept behind a lock and written only by that call.
///
/// There is no fencing: a leader that stalls past its deadline can act while a successor does. Components
/// that act only while leading should check ``isLeader`` (it turns false by itself at the renew deadline)
/// right before each write, or run inside ``whileLeading(_:)``.
public final class LeaderElector: Sendable {
    /// client-go's `JitterFactor`: a candidate waits the retry period plus up to 1.2 times it between tries.
    public static let jitterFactor = 1.2

    public let configuration: LeaderElection.Configuration
    private let client: KubernetesClient
    private let logger: Logger
    private let shared = SharedLeadership()
    private let clock = ContinuousClock()

    /// An elector for `configuration` (validated here), writing the Lease through `client`.
    public init(
        configuration: LeaderElection.Configuration, client: KubernetesClient,
        logger: Logger = Logger(label: "leader-election")
    ) throws(LeaderElection.Error) {
        try configuration.validate()
        self.configuration = configuration
        self.client = client
        var logger = logger
        logger[metadataKey: "lease"] = "\(configuration.namespace)/\(configuration.leaseName)"
        logger[metadataKey: "identity"] = "\(configuration.identity)"
        self.logger = logger
    }

    /// True while this elector leads: it acquired or renewed the Lease less than the renew deadline ago.
    /// It turns false at that deadline even if the elector's task has not run since.
    public var isLeader: Bool { shared.isLeader(now: clock.now) }

    /// The holder of the Lease as last observed (this identity while leading); nil when nobody holds it or
    /// before the first read.
    public var leader: String? { shared.leader }

    /// This elector's leadership: the current value at once, then each change (true when it starts leading,
    /// false when it steps down). The stream ends when ``run()`` returns. Each call makes a new stream.
    public func leadership() -> AsyncStream<Bool> { shared.subscribe() }

    /// Runs `body` each time this elector starts leading, and cancels it (and waits for it) when it steps
    /// down. Returns when ``run()`` has ended, or when the calling task is cancelled (cancelling `body`).
    public func whileLeading(_ body: @escaping @Sendable () async -> Void) async {
        var running: Task<Void, Never>?
        for await leading in leadership() {
            if leading, running == nil {
                running = Task { await body() }
            } else if !leading, let task = running {
                task.cancel()
                await task.value
                running = nil
            }
        }
        if let task = running {
            task.cancel()
            await task.value
        }
    }

    /// Takes part in the election until the calling task is cancelled; then, if leading and
    /// `releaseOnCancel`, releases the Lease. An elector runs once: a second call throws
    /// ``LeaderElection/Error/alreadyRunning``. API errors never end it: they are logged and retried.
    public func run() async throws(LeaderElection.Error) {
        guard shared.start() else { throw .alreadyRunning }
        defer { shared.end() }
        logger.info("leader election: candidate")
        var observation = Observation()
        while !Task.isCancelled {
            guard let acquiredAt = await acquire(&observation) else { break }
            if Task.isCancelled {
                // Acquired as the task was cancelled: give it back at once rather than leave it to expire.
                if configuration.releaseOnCancel { await release(observation) }
                return
            }
            shared.startLeading(until: acquiredAt + configuration.renewDeadline)
            logger.info("leader election: became the leader")
            let ending = await lead(&observation, since: acquiredAt)
            shared.stopLeading(leader: observation.holder)
            switch ending {
            case .lost(let reason):
                logger.warning("leader election: stepped down", metadata: ["reason": "\(reason)"])
            case .cancelled:
                logger.info("leader election: stopped while leading")
                if configuration.releaseOnCancel { await release(observation) }
                return
            }
        }
    }

    // MARK: The election

    /// The Lease as this elector last saw it, and when its spec last changed: client-go's observed record and
    /// observed time.
    struct Observation: Sendable {
        /// The last copy read or written: its resourceVersion conditions the next write.
        var lease: Lease?
        /// When `lease.spec` was first seen as it is, on this elector's clock.
        var changedAt: ContinuousClock.Instant?

        var holder: String? { lease?.spec.holderIdentity.flatMap { $0.isEmpty ? nil : $0 } }

        /// Takes `lease` as the latest copy; the observation time moves only when its spec changed.
        mutating func observe(_ lease: Lease, at now: ContinuousClock.Instant) {
            if self.lease?.spec != lease.spec || changedAt == nil { changedAt = now }
            self.lease = lease
        }
    }

    /// The result of one try.
    enum Attempt: Sendable {
        /// This elector holds the Lease now (created, taken over or renewed).
        case held
        /// Another candidate holds the Lease and, as observed, it has not expired.
        case heldByOther(String)
        /// The try failed: a transport or API error, a conflict (a lost race), or a timeout.
        case failed(KubernetesError)
    }

    enum Ending: Sendable {
        case lost(String)
        case cancelled
    }

    /// Whether the observed Lease is still live: changed less than its `leaseDurationSeconds` ago (this
    /// elector's own duration when the Lease carries none).
    func isValid(_ observation: Observation, now: ContinuousClock.Instant) -> Bool {
        guard let changedAt = observation.changedAt else { return false }
        let seconds = observation.lease?.spec.leaseDurationSeconds.flatMap { $0 > 0 ? $0 : nil }
            ?? configuration.leaseDurationSeconds
        return changedAt + .seconds(seconds) > now
    }

    /// Tries until the Lease is this elector's; returns the instant the successful try started, or nil when
    /// cancelled.
    private func acquire(_ observation: inout Observation) async -> ContinuousClock.Instant? {
        var failures = 0
        while !Task.isCancelled {
            let start = clock.now
            let attempt = await timedAttempt(&observation, timeout: configuration.renewDeadline)
            shared.observe(leader: observation.holder)
            if case .held = attempt { return start }
            if Task.isCancelled { return nil }
            switch attempt {
            case .held:
                return start
            case .heldByOther(let holder):
                failures = 0
                logger.trace("leader election: held by another", metadata: ["holder": "\(holder)"])
            case .failed(let error):
                failures += 1
                report(error, failures: failures, while: "acquiring")
            }
            let jitter = configuration.retryPeriod * Double.random(in: 0..<Self.jitterFactor)
            do {
                try await Task.sleep(for: configuration.retryPeriod + jitter, clock: clock)
            } catch {
                return nil
            }
        }
        return nil
    }

    /// Renews every retry period until the Lease is lost, a renewal misses the deadline, or cancellation.
    private func lead(_ observation: inout Observation, since acquiredAt: ContinuousClock.Instant) async -> Ending {
        var renewedAt = acquiredAt
        var failures = 0
        var lastError: KubernetesError?
        func missed() -> Ending {
            .lost("no renewal within the renew deadline (\(configuration.renewDeadline))" + (lastError.map { ": \($0)" } ?? ""))
        }
        while true {
            do {
                try await Task.sleep(for: configuration.retryPeriod, clock: clock)
            } catch {
                return .cancelled
            }
            let start = clock.now
            let deadline = renewedAt + configuration.renewDeadline
            if start >= deadline { return missed() }
            let attempt = await timedAttempt(&observation, timeout: deadline - start)
            if Task.isCancelled { return .cancelled }
            switch attempt {
            case .held:
                renewedAt = start
                failures = 0
                lastError = nil
                shared.renewed(until: start + configuration.renewDeadline)
            case .heldByOther(let holder):
                shared.observe(leader: holder)
                return .lost("the lease is held by \(holder)")
            case .failed(let error):
                failures += 1
                lastError = error
                report(error, failures: failures, while: "renewing")
                if clock.now >= deadline { return missed() }
            }
        }
    }

    /// Conflicts are races, at debug level; other errors at warning level, the first of a run of failures
    /// and every 30th after it.
    private func report(_ error: KubernetesError, failures: Int, while doing: String) {
        let metadata: Logger.Metadata = ["error": "\(error)", "failures": "\(failures)"]
        if error.isConflict {
            logger.debug("leader election: lost a race \(doing) the lease; trying again", metadata: metadata)
        } else if failures == 1 || failures % 30 == 0 {
            logger.warning("leader election: failed \(doing) the lease; trying again", metadata: metadata)
        } else {
            logger.debug("leader election: failed \(doing) the lease; trying again", metadata: metadata)
        }
    }

    /// One try, given up after `timeout` (its request is cancelled; the observation stays as it was).
    private func timedAttempt(_ observation: inout Observation, timeout: Duration) async -> Attempt {
        let start = observation
        let outcome = await withTaskGroup(of: (Observation, Attempt)?.self) { group in
            group.addTask { await self.tryAcquireOrRenew(start) }
            group.addTask {
                try? await Task.sleep(for: timeout, clock: self.clock)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        guard let (updated, attempt) = outcome else {
            if Task.isCancelled { return .failed(.cancelled) }
            let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
            return .failed(
                .transport(
                    request: "leader election on \(configuration.namespace)/\(configuration.leaseName)",
                    reason: "gave up after \(String(format: "%.2f", seconds)) s (the renew deadline)"))
        }
        observation = updated
        return attempt
    }

    /// client-go's `tryAcquireOrRenew`: renew on the fast path while leading, otherwise read the Lease (or
    /// create it), and write it when it is ours, free, or expired as observed.
    func tryAcquireOrRenew(_ observation: Observation) async -> (Observation, Attempt) {
        var observation = observation
        let identity = configuration.identity
        let now = MicroTime(Date())
        var record = LeaseSpec(
            holderIdentity: identity, leaseDurationSeconds: configuration.leaseDurationSeconds, acquireTime: now,
            renewTime: now, leaseTransitions: 0)

        // 1. The fast path: the leader renews the copy it holds, assuming nobody wrote since.
        if observation.holder == identity, isValid(observation, now: clock.now), var lease = observation.lease {
            record.acquireTime = lease.spec.acquireTime ?? now
            record.leaseTransitions = lease.spec.leaseTransitions ?? 0
            record.strategy = lease.spec.strategy
            record.preferredHolder = lease.spec.preferredHolder
            lease.spec = record
            do {
                let written = try await write(lease)
                observation.observe(written, at: clock.now)
                return (observation, .held)
            } catch {
                if error == .cancelled { return (observation, .failed(error)) }
                logger.debug("leader election: renewal on the fast path failed; reading the lease", metadata: ["error": "\(error)"])
            }
        }

        // 2. Read the Lease, or create it.
        let current: Lease
        do {
            current = try await client.get(.leases, namespace: configuration.namespace, name: configuration.leaseName)
        } catch where error.isNotFound {
            let lease = Lease(metadata: ObjectMeta(name: configuration.leaseName, namespace: configuration.namespace), spec: record)
            do {
                let created = try await client.create(.leases, namespace: configuration.namespace, object: lease)
                observation.observe(created, at: clock.now)
                return (observation, .held)
            } catch {
                return (observation, .failed(error))
            }
        } catch {
            return (observation, .failed(error))
        }

        // 3. Note when the record last changed; leave a live Lease to its holder.
        observation.observe(current, at: clock.now)
        if let holder = observation.holder, holder != identity, isValid(observation, now: clock.now) {
            return (observation, .heldByOther(holder))
        }

        // 4. Ours (renew), free or expired (take over): write it, conditional on what was just read.
        let transitions = current.spec.leaseTransitions ?? 0
        if observation.holder == identity {
            record.acquireTime = current.spec.acquireTime ?? now
            record.leaseTransitions = transitions
        } else {
            record.leaseTransitions = transitions + 1
        }
        record.strategy = current.spec.strategy
        record.preferredHolder = current.spec.preferredHolder
        var lease = current
        lease.spec = record
        do {
            let written = try await write(lease)
            observation.observe(written, at: clock.now)
            return (observation, .held)
        } catch {
            return (observation, .failed(error))
        }
    }

    /// PUT, conditional on the copy's resourceVersion.
    private func write(_ lease: Lease) async throws(KubernetesError) -> Lease {
        try await client.replace(.leases, namespace: configuration.namespace, name: configuration.leaseName, object: lease)
    }

    /// Gives the Lease up: empty holder, 1 s duration, so a candidate takes it at its next try. Runs in a task
    /// of its own (the caller's is cancelled), bounded by the renew deadline. If the cached copy is stale
    /// (a renewal cut short by the cancellation may have landed), reads the Lease once and tries again.
    private func release(_ observation: Observation) async {
        guard observation.holder == configuration.identity, let lease = observation.lease else { return }
        let timeout = configuration.renewDeadline
        let released = await Task { () -> Bool in
            let outcome = await withTaskGroup(of: Bool?.self) { group in
                group.addTask { await self.releaseAttempts(lease) }
                group.addTask {
                    try? await Task.sleep(for: timeout, clock: self.clock)
                    return nil
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first
            }
            return outcome ?? false
        }.value
        if released {
            logger.info("leader election: released the lease")
        } else {
            logger.warning("leader election: could not release the lease; a successor waits for it to expire")
        }
    }

    private func releaseAttempts(_ cached: Lease) async -> Bool {
        var lease = cached
        for attempt in 0..<2 {
            let now = MicroTime(Date())
            var released = lease
            released.spec = LeaseSpec(
                holderIdentity: "", leaseDurationSeconds: 1, acquireTime: now, renewTime: now,
                leaseTransitions: lease.spec.leaseTransitions ?? 0, strategy: lease.spec.strategy,
                preferredHolder: lease.spec.preferredHolder)
            do {
                _ = try await write(released)
                return true
            } catch where error.isConflict && attempt == 0 {
                do {
                    lease = try await client.get(.leases, namespace: configuration.namespace, name: configuration.leaseName)
                } catch {
                    logger.debug("leader election: reading the lease to release it failed", metadata: ["error": "\(error)"])
                    return false
                }
                // Someone else holds it now: nothing to release.
                guard lease.spec.holderIdentity == configuration.identity else { return true }
            } catch {
                logger.debug("leader election: releasing the lease failed", metadata: ["error": "\(error)"])
                return false
            }
        }
        return false
    }
}

/// What the elector shows other tasks: whether it leads (until when), the holder it observed, and the
/// leadership streams. Written by the running election only; read from anywhere.
final class SharedLeadership: @unchecked Sendable {
    private let lock = NSLock()
    private var started = false
    private var ended = false
    private var leadingUntil: ContinuousClock.Instant?
    private var observedLeader: String?
    private var subscribers: [Int: AsyncStream<Bool>.Continuation] = [:]
    private var nextSubscriber = 0

    private func locked<T>(_ body: () -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body()
    }

    func isLeader(now: ContinuousClock.Instant) -> Bool {
        locked { leadingUntil.map { now < $0 } ?? false }
    }

    var leader: String? { locked { observedLeader } }

    /// Marks the run as started; false when it already had been.
    func start() -> Bool {
        locked {
            if started { return false }
            started = true
            return true
        }
    }

    func observe(leader: String?) {
        locked { observedLeader = leader }
    }

    /// The values are yielded under the lock, so that every stream sees the changes in order.
    func startLeading(until deadline: ContinuousClock.Instant) {
        locked {
            leadingUntil = deadline
            for continuation in subscribers.values { continuation.yield(true) }
        }
    }

    func renewed(until deadline: ContinuousClock.Instant) {
        locked { leadingUntil = deadline }
    }

    func stopLeading(leader: String?) {
        locked {
            leadingUntil = nil
            observedLeader = leader
            for continuation in subscribers.values { continuation.yield(false) }
        }
    }

    /// Ends the run: not leading, every stream finished (outside the lock: finishing calls `onTermination`).
    func end() {
        let finishing = locked {
            ended = true
            if leadingUntil != nil {
                leadingUntil = nil
                for continuation in subscribers.values { continuation.yield(false) }
            }
            defer { subscribers.removeAll() }
            return Array(subscribers.values)
        }
        for continuation in finishing { continuation.finish() }
    }

    func subscribe() -> AsyncStream<Bool> {
        let (stream, continuation) = AsyncStream.makeStream(of: Bool.self, bufferingPolicy: .unbounded)
        let finished = locked { () -> Bool in
            continuation.yield(leadingUntil != nil)
            if ended { return true }
            let id = nextSubscriber
            nextSubscriber += 1
            subscribers[id] = continuation
            continuation.onTermination = { [weak self] _ in
                guard let self else { return }
                self.locked { self.subscribers[id] = nil }
            }
            return false
        }
        if finished { continuation.finish() }
        return stream
    }
}
