import Logging

/// Exponential backoff with jitter: `initial × multiplier^attempt`, capped at `maximum`, each delay
/// randomly shortened by up to `jitter` of itself so that many agents do not retry in step.
public struct Backoff: Sendable, Hashable {
    public var initial: Duration
    public var maximum: Duration
    public var multiplier: Double
    /// 0 ... 1: the part of each delay that is random.
    public var jitter: Double

    public init(
        initial: Duration = .milliseconds(800), maximum: Duration = .seconds(30), multiplier: Double = 2,
        jitter: Double = 0.5
    ) {
        self.initial = initial
        self.maximum = maximum
        self.multiplier = max(1, multiplier)
        self.jitter = min(1, max(0, jitter))
    }

    /// The delay before retry number `attempt` (0 for the first retry); `random` is in 0 ..< 1.
    public func delay(attempt: Int, random: Double = Double.random(in: 0..<1)) -> Duration {
        let initialSeconds = Self.seconds(initial), maximumSeconds = Self.seconds(maximum)
        let grown = initialSeconds * pow(multiplier, Double(min(max(attempt, 0), 64)))
        let capped = min(grown, maximumSeconds)
        let jittered = capped * (1 - jitter * min(max(random, 0), 1))
        return .nanoseconds(Int64(jittered * 1e9))
    }

    static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    private func pow(_ base: Double, _ exponent: Double) -> Double {
        var result = 1.0
        var remaining = Int(exponent)
        while remaining > 0 && result < 1e12 {
            result *= base
            remaining -= 1
        }
        return result
    }
}

/// How an informer lists and watches.
public struct InformerOptions: Sendable {
    /// Items per list page (`limit`); nil lists in one request.
    public var pageSize: Int? = 500
    /// The server ends each watch after this long (`timeoutSeconds`, whole seconds); the informer watches again.
    public var watchTimeout: Duration = .seconds(300)
    /// A watch with no byte for this long is given up and opened again. Nil: the watch timeout plus 30 s.
    public var idleTimeout: Duration?
    /// Delays between failed attempts; the informer never gives up.
    public var backoff = Backoff()
    /// A watch that ends cleanly sooner than this, having delivered nothing, counts as a failure (backoff)
    /// rather than as a server timeout (re-watch at once).
    public var minimumWatchDuration: Duration = .seconds(1)
    /// After 410 Gone or an ERROR event the informer lists again: at once if the watch had lived this long,
    /// otherwise after the backoff, growing with each relist in a row (a good list does not reset it; a
    /// watch that lives this long does), so that a server failing every watch is not relisted back to back.
    public var healthyWatchDuration: Duration = .seconds(30)

    public init() {}

    var effectiveIdleTimeout: Duration { idleTimeout ?? watchTimeout + .seconds(30) }
    var timeoutSeconds: Int { max(1, Int(watchTimeout.components.seconds)) }
}

/// One change, as the informer saw it: a full list, or one object. The informer keeps no cache of
/// its own; its consumer keeps the one cache of these objects.
public struct InformerUpdate<Object: KubernetesObject>: Sendable {
    public enum Change: Sendable, Hashable {
        /// A full list replaces everything before it (the first one, or after 410 Gone / an ERROR event).
        case relisted
        case added(ObjectKey)
        case modified(ObjectKey)
        case deleted(ObjectKey)
    }

    public var change: Change
    /// The objects of the change: every listed object for `.relisted`, else the one object
    /// (as it was last, for `.deleted`).
    public var objects: [ObjectKey: Object]
    /// The resource version the watch is at.
    public var resourceVersion: String

    /// The object an added, modified or deleted event carries.
    public var object: Object? {
        switch change {
        case .relisted: nil
        case .added(let key), .modified(let key), .deleted(let key): objects[key]
        }
    }
}

/// List+watch with informer semantics for one resource: a full list, then ADDED/MODIFIED/DELETED
/// events, each handed on with its object (the consumer keeps the cache); BOOKMARKs advance the
/// resource version; 410 Gone or an ERROR event lists again (a relist replaces everything); a dropped, failed or silent watch is opened again from the last
/// resource version after an exponential backoff with jitter, forever.
public struct Informer<Object: KubernetesObject>: Sendable {
    public let client: KubernetesClient
    public let resource: ResourceDescriptor
    public let namespace: String?
    public let selectors: Selectors
    public let options: InformerOptions
    private let logger: Logger

    public init(
        client: KubernetesClient, resource: ResourceDescriptor, of type: Object.Type = Object.self,
        namespace: String? = nil, selectors: Selectors = Selectors(), options: InformerOptions = InformerOptions(),
        logger: Logger = Logger(label: "kubernetes-informer")
    ) {
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.selectors = selectors
        self.options = options
        var logger = logger
        logger[metadataKey: "resource"] = "\(resource.plural)"
        self.logger = logger
    }

    /// The informer's updates as a stream; the informer runs while the stream is iterated.
    public func updates(
        bufferingPolicy: AsyncStream<InformerUpdate<Object>>.Continuation.BufferingPolicy = .unbounded
    ) -> AsyncStream<InformerUpdate<Object>> {
        let (stream, continuation) = AsyncStream<InformerUpdate<Object>>.makeStream(bufferingPolicy: bufferingPolicy)
        let task = Task {
            await run { continuation.yield($0) }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Lists and watches until the task is cancelled, calling `onUpdate` with each list and each event,
    /// and `onFailure` with each failed list or watch (nil once one works again: a list, or a watch
    /// that opens), so that a source can say how long the API server has been out of reach.
    public func run(
        onUpdate: (InformerUpdate<Object>) async -> Void, onFailure: (KubernetesError?) async -> Void = { _ in }
    ) async {
        var failing = false
        func failed(_ error: KubernetesError) async {
            failing = true
            await onFailure(error)
        }
        func worked() async {
            guard failing else { return }
            failing = false
            await onFailure(nil)
        }
        var resourceVersion: String?  // nil: list first
        var failures = 0
        // Relists since the last watch that lived `healthyWatchDuration`: their backoff.
        var relistsInARow = 0

        func pause() async -> Bool {
            let delay = options.backoff.delay(attempt: failures)
            failures += 1
            do {
                try await Task.sleep(for: delay)
                return true
            } catch {
                return false
            }
        }

        while !Task.isCancelled {
            if resourceVersion == nil {
                do {
                    let (items, listVersion) = try await client.listAll(
                        resource, of: Object.self, namespace: namespace, selectors: selectors,
                        pageSize: options.pageSize)
                    let listed = Dictionary(items.map { ($0.key, $0) }, uniquingKeysWith: { _, last in last })
                    resourceVersion = listVersion
                    failures = 0
                    await worked()
                    logger.debug("listed \(items.count) at resource version \(listVersion)")
                    await onUpdate(InformerUpdate(change: .relisted, objects: listed, resourceVersion: listVersion))
                } catch {
                    if case .cancelled = error { return }
                    await failed(error)
                    logger.warning("list failed (attempt \(failures + 1)): \(error)")
                    if await pause() { continue } else { return }
                }
            }

            let started = ContinuousClock.now
            var received = 0
            do throws(KubernetesError) {
                let stream = try await client.watch(
                    resource, of: Object.self, namespace: namespace, selectors: selectors,
                    resourceVersion: resourceVersion, timeoutSeconds: options.timeoutSeconds,
                    idleTimeout: options.effectiveIdleTimeout)
                await worked()
                for try await event in stream {
                    received += 1
                    failures = 0
                    let change: InformerUpdate<Object>.Change
                    let object: Object
                    switch event {
                    case .added(let added):
                        (change, object) = (.added(added.key), added)
                    case .modified(let modified):
                        (change, object) = (.modified(modified.key), modified)
                    case .deleted(let deleted):
                        (change, object) = (.deleted(deleted.key), deleted)
                    case .bookmark(let version):
                        if !version.isEmpty { resourceVersion = version }
                        continue
                    case .error(let status):
                        throw KubernetesError.watchError(request: stream.request, status: status)
                    }
                    resourceVersion = object.metadata.resourceVersion ?? resourceVersion
                    await onUpdate(
                        InformerUpdate(change: change, objects: [object.key: object], resourceVersion: resourceVersion ?? ""))
                }
                // The server closed the watch: its timeout. Watch again at once, unless it closes at once.
                if received == 0 && ContinuousClock.now - started < options.minimumWatchDuration {
                    logger.debug("watch closed at once with no event; backing off")
                    if await !pause() { return }
                }
            } catch {
                var isWatchError = false
                switch error {
                // An ERROR event; an event over the size cap (watching again from the same version would
                // meet it again; a list gets past it); a consumer that fell behind: list again.
                case .watchError, .eventTooLarge, .watchBacklog: isWatchError = true
                default: break
                }
                if case .cancelled = error {
                    return
                } else if isWatchError || error.isGone {
                    // 410 Expired, or any ERROR event: the watch cannot go on from here. List again, replace the cache.
                    logger.info("watch from resource version \(resourceVersion ?? "-") ended: \(error); listing again")
                    resourceVersion = nil
                    if ContinuousClock.now - started >= options.healthyWatchDuration { relistsInARow = 0 }
                    if relistsInARow > 0 {
                        let delay = options.backoff.delay(attempt: relistsInARow - 1)
                        logger.warning("relisting \(relistsInARow + 1) times in a row; waiting \(delay) first")
                        do {
                            try await Task.sleep(for: delay)
                        } catch {
                            return
                        }
                    }
                    relistsInARow += 1
                } else {
                    await failed(error)
                    logger.warning("watch failed (attempt \(failures + 1)): \(error)")
                    if await !pause() { return }
                }
            }
        }
    }
}
