import CanaryCore
import Foundation
import IPVS
import KubernetesClient
import Logging
import Metrics

/// Watches the cluster and turns it into desired states: three informers (Services, their endpoints,
/// the agent's Node), the ``Translator`` after every change, and a Kubernetes Event on the object for
/// each new problem.
///
/// What is watched: all Services and all EndpointSlices (or core/v1 Endpoints) of the cluster, filtered
/// here, and the agent's own Node by name. A canary Service carries no label of ours and its name is only
/// known from the stable Service's annotation, which can change at any time; a label-selected watch
/// could not follow it without being restarted with a new selector (and missing events while it is),
/// so the agent keeps every Service and slice, decoded down to the fields it uses, as kube-proxy does.
/// That way a canary Service created later, or renamed in the annotation, is picked up at once.
public actor KubernetesSource {
    /// Which API the endpoints come from.
    public enum EndpointsAPI: String, Sendable, CaseIterable {
        /// discovery.k8s.io/v1 EndpointSlices (the default).
        case endpointSlices = "endpointslices"
        /// core/v1 Endpoints, for old clusters.
        case endpoints
    }

    public struct Configuration: Sendable {
        /// The agent's Node (NODE_NAME, from the downward API); nil watches no Node.
        public var nodeName: String?
        /// The `--scheduler` flag: the scheduler when neither the Service nor the Node names one.
        public var defaultScheduler: Scheduler = .weightedRoundRobin
        public var endpointsAPI: EndpointsAPI = .endpointSlices
        /// Program Services' `spec.externalIPs` too (`--external-ips`); off by default.
        public var acceptExternalIPs = false
        public var informer = InformerOptions()
        /// Record a Kubernetes Event on the object for each new problem.
        public var recordEvents = true
        /// The Events' source component.
        public var component = "canary-agent"
        /// Where `canary_agent_source_problems_total` is counted; nil is the bootstrapped `MetricsSystem`.
        public var metricsFactory: (any MetricsFactory)?
        /// Watch Gateway API routes with a Service parent (GAMMA), when the server serves them.
        public var gatewayAPI = true
        /// How often API discovery is read again for Gateway API CRDs installed or removed.
        public var rediscoveryInterval: Duration = .seconds(30)
        /// Route status is the cluster's: written by the one agent holding this Lease. nil writes
        /// no status unless `writeRouteStatusUnelected` (a single agent, tests).
        public var leaderElection: LeaderElection.Configuration?
        public var writeRouteStatusUnelected = false

        public init(nodeName: String? = nil, defaultScheduler: Scheduler = .weightedRoundRobin) {
            self.nodeName = nodeName
            self.defaultScheduler = defaultScheduler
        }
    }

    /// One result: what changed in what the cluster asks for. The first update holds every
    /// virtual service; each next one exactly those whose entries changed, with their new entries.
    public struct Update: Sendable, Hashable {
        /// The virtual services that changed, each with its new entry (nil: gone).
        public var changes: [ServiceKey: DesiredService?]
        /// Every problem now, sorted.
        public var problems: [InputProblem]
        /// The problems that were not in the previous update (each logged and recorded as an Event once).
        public var newProblems: [InputProblem]
        /// When the first watch event folded into this update arrived: where event-to-kernel latency starts.
        public var changedAt: ContinuousClock.Instant = .now
    }

    /// Counts each new problem once, by kind of object and reason (`InvalidCanaryWeight`, …).
    static func problemCounter(_ problem: InputProblem, factory: (any MetricsFactory)?) -> Counter {
        Counter(
            label: "canary_agent_source_problems_total",
            dimensions: [("kind", problem.object.kind.rawValue), ("reason", problem.reason)],
            factory: factory ?? MetricsSystem.factory)
    }

    /// Counts the full lists that replaced an informer's cache (the first one included), by resource
    /// (`services`, `endpointslices`, …): a rate above the watch timeout's is a relist storm.
    static func relistCounter(_ resource: ResourceDescriptor, factory: (any MetricsFactory)?) -> Counter {
        Counter(
            label: "canary_agent_informer_relists_total", dimensions: [("resource", resource.plural)],
            factory: factory ?? MetricsSystem.factory)
    }

    public let client: KubernetesClient
    public let configuration: Configuration
    let logger: Logger

    /// The caches and their translation, kept one object at a time.
    private var cache: TranslationCache
    /// Which informers have listed: nothing is translated before all of them have.
    private var servicesListed = false
    private var endpointsListed = false
    private var nodeListed = false
    /// The problems of the last update, and whether there was one (the desired state itself is the
    /// cache's: holding it here too would make each change copy it whole).
    private var lastProblems: [InputProblem]?
    /// When the first change not yet translated arrived.
    private var firstChangeAt: ContinuousClock.Instant?
    /// Rung after each change of the caches; the translating task takes them all at once.
    private let changed = Doorbell()
    /// Gateway API: whether discovery has been read once, and the informers that have not listed yet
    /// (`Kind/version`): nothing is translated before both.
    var gatewayDiscovered = false
    var gatewayListPending: Set<String> = []
    /// The route kinds' versions being watched (their status is written at that version).
    private var routeVersions: [RouteKind: String] = [:]
    /// Rung after each translation and when this agent becomes the leader: route status is due.
    private let statusDue = Doorbell()
    private var elector: LeaderElector?

    public init(client: KubernetesClient, configuration: Configuration, logger: Logger = Logger(label: "kubernetes-source")) {
        self.client = client
        self.configuration = configuration
        self.logger = logger
        cache = TranslationCache(
            endpointsAPI: configuration.endpointsAPI, defaultScheduler: configuration.defaultScheduler,
            acceptExternalIPs: configuration.acceptExternalIPs)
    }

    /// The updates as a stream; the source runs while the stream is iterated.
    public nonisolated func updates() -> AsyncStream<Update> {
        let (stream, continuation) = AsyncStream<Update>.makeStream()
        let task = Task {
            await self.run { continuation.yield($0) }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Runs the informers until the task is cancelled. The first update comes once every informer has
    /// listed; then one after each change that alters the desired state or the problems (changes that
    /// arrive together are folded into one).
    /// - Parameter onUnavailable: told when the API server stops answering any informer (its error)
    ///   and when every informer works again (nil), so that readiness and `status` can say so.
    public func run(
        onUpdate: @escaping @Sendable (Update) async -> Void,
        onUnavailable: @escaping @Sendable (String?) async -> Void = { _ in }
    ) async {
        let (eventStream, eventContinuation) = AsyncStream<EventRecord>.makeStream()
        let changed = changed
        let options = configuration.informer
        let client = client
        let logger = logger

        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await Informer(client: client, resource: .services, of: Service.self, options: options, logger: logger)
                    .run(
                        onUpdate: { await self.received(services: $0) },
                        onFailure: { if let note = await self.informer(.services, failed: $0) { await onUnavailable(note) } })
            }
            switch configuration.endpointsAPI {
            case .endpointSlices:
                group.addTask {
                    await Informer(client: client, resource: .endpointSlices, of: EndpointSlice.self, options: options, logger: logger)
                        .run(
                        onUpdate: { await self.received(slices: $0) },
                        onFailure: { if let note = await self.informer(.endpointSlices, failed: $0) { await onUnavailable(note) } })
                }
            case .endpoints:
                group.addTask {
                    await Informer(client: client, resource: .endpoints, of: Endpoints.self, options: options, logger: logger)
                        .run(
                        onUpdate: { await self.received(endpoints: $0) },
                        onFailure: { if let note = await self.informer(.endpoints, failed: $0) { await onUnavailable(note) } })
                }
            }
            if let nodeName = configuration.nodeName {
                group.addTask {
                    await Informer(
                        client: client, resource: .nodes, of: Node.self,
                        selectors: Selectors(fieldSelector: "metadata.name=\(nodeName)"), options: options, logger: logger
                    ).run(
                        onUpdate: { await self.received(nodes: $0) },
                        onFailure: { if let note = await self.informer(.nodes, failed: $0) { await onUnavailable(note) } })
                }
            }
            if configuration.gatewayAPI {
                group.addTask { await self.watchGatewayAPI(options: options, onUnavailable: onUnavailable) }
                group.addTask { await self.writeRouteStatus() }
                if let election = configuration.leaderElection {
                    do {
                        let elector = try LeaderElector(configuration: election, client: client, logger: logger)
                        await self.setElector(elector)
                        group.addTask {
                            do { try await elector.run() } catch { logger.error("leader election: \(error)") }
                        }
                        group.addTask {
                            for await leading in elector.leadership() {
                                logger.notice(leading ? "leading: this agent writes route status" : "not leading: another agent writes route status")
                                if leading { self.statusDue.ring() }
                            }
                        }
                    } catch {
                        logger.error("leader election not started: \(error); route status is not written")
                    }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    await changed.wait()
                    guard !Task.isCancelled, let update = await self.translate() else { continue }
                    for problem in update.newProblems {
                        logger.warning("\(problem) (keeping its last programmed state)")
                        Self.problemCounter(problem, factory: self.configuration.metricsFactory).increment()
                        if let event = await self.event(for: problem) { eventContinuation.yield(event) }
                    }
                    await onUpdate(update)
                    self.statusDue.ring()
                }
            }
            group.addTask {
                for await event in eventStream {
                    do throws(KubernetesError) {
                        try await client.recordEvent(event)
                    } catch where error.statusCode == 409 {
                        logger.debug("event \(event.name) exists already (recorded before a restart)")
                    } catch {
                        logger.warning("cannot record the event \(event.reason) on \(event.involvedObject.kind ?? "") \(event.involvedObject.name ?? ""): \(error)")
                    }
                }
            }
            // Everything runs until cancelled; then end the event stream the informers do not end.
            await withTaskCancellationHandler {
                await group.next()
            } onCancel: {
                eventContinuation.finish()
            }
            group.cancelAll()
        }
    }

    // Each change is applied to the one cache of objects (`TranslationCache`) by key: a relist
    // replaces the resource's objects, an event changes one.

    private func received(services update: InformerUpdate<Service>) {
        servicesListed = true
        receive(update, .services, replace: { $0.replaceServices($1) }, change: { $0.changeService($1, to: $2) })
    }

    private func received(slices update: InformerUpdate<EndpointSlice>) {
        endpointsListed = true
        receive(update, .endpointSlices, replace: { $0.replaceSlices($1) }, change: { $0.changeSlice($1, to: $2) })
    }

    private func received(endpoints update: InformerUpdate<Endpoints>) {
        endpointsListed = true
        receive(update, .endpoints, replace: { $0.replaceEndpoints($1) }, change: { $0.changeEndpoints($1, to: $2) })
    }

    /// A relist replaces the resource's objects in the cache (and is counted); an event changes one.
    private func receive<Object>(
        _ update: InformerUpdate<Object>, _ resource: ResourceDescriptor,
        replace: (inout TranslationCache, [ObjectKey: Object]) -> Void,
        change: (inout TranslationCache, ObjectKey, Object?) -> Void
    ) {
        switch update.change {
        case .relisted:
            Self.relistCounter(resource, factory: configuration.metricsFactory).increment()
            replace(&cache, update.objects)
        case .added(let key), .modified(let key): change(&cache, key, update.object)
        case .deleted(let key): change(&cache, key, nil)
        }
        noteChange()
    }

    private func received(nodes update: InformerUpdate<Node>) {
        guard let nodeName = configuration.nodeName else { return }
        let key = ObjectKey(namespace: nil, name: nodeName)
        switch update.change {
        case .relisted:
            Self.relistCounter(.nodes, factory: configuration.metricsFactory).increment()
            cache.setNode(update.objects[key])
        case .added(key), .modified(key): cache.setNode(update.object)
        case .deleted(key): cache.setNode(nil)
        case .added, .modified, .deleted: return  // another Node: the field selector lets none through
        }
        nodeListed = true
        noteChange()
    }

    func received(routes update: InformerUpdate<Route>, kind: RouteKind) {
        if case .relisted = update.change {
            Self.relistCounter(kind.resource(version: routeVersions[kind] ?? ""), factory: configuration.metricsFactory).increment()
            cache.replaceRoutes(kind, update.objects)
            gatewayListPending = gatewayListPending.filter { !$0.hasPrefix(kind.rawValue + "/") }
            if let name = update.objects.first?.value.apiVersion?.split(separator: "/").last { routeVersions[kind] = String(name) }
        }
        switch update.change {
        case .relisted: break
        case .added(let key), .modified(let key): cache.changeRoute(kind, key, to: update.object)
        case .deleted(let key): cache.changeRoute(kind, key, to: nil)
        }
        noteChange()
    }

    func received(grants update: InformerUpdate<ReferenceGrant>) {
        switch update.change {
        case .relisted:
            cache.replaceGrants(update.objects)
            gatewayListPending = gatewayListPending.filter { !$0.hasPrefix("ReferenceGrant/") }
        case .added(let key), .modified(let key): cache.changeGrant(key, to: update.object)
        case .deleted(let key): cache.changeGrant(key, to: nil)
        }
        noteChange()
    }

    /// A Gateway API kind no longer served (`Kind/version`): its objects are gone.
    func forgetGatewayResource(_ name: String) {
        gatewayListPending.remove(name)
        if name.hasPrefix("ReferenceGrant/") {
            cache.replaceGrants([:])
        } else if let kind = RouteKind.allCases.first(where: { name.hasPrefix($0.rawValue + "/") }) {
            cache.replaceRoutes(kind, [:])
            routeVersions[kind] = nil
        }
        noteChange()
    }

    /// Which version of a route kind is watched (set when its informer starts).
    func watching(_ kind: RouteKind, version: String) { routeVersions[kind] = version }

    private func setElector(_ elector: LeaderElector) { self.elector = elector }

    /// Writes route status while this agent leads: each route whose `status.parents` (ours) differ
    /// from what the routes decide, with a merge patch conditional on the route's resourceVersion
    /// (a 409 means the route moved on: its watch event brings it, and the next pass writes).
    private func writeRouteStatus() async {
        while !Task.isCancelled {
            await statusDue.wait()
            guard !Task.isCancelled else { return }
            let leading = elector?.isLeader ?? configuration.writeRouteStatusUnelected
            guard leading, gatewayDiscovered else { continue }
            let desired = RouteStatusEntry.desired(cache.decisions)
            var failed = false
            for (ref, entries) in desired.sorted(by: { $0.key < $1.key }) {
                guard let route = cache.routes[ref], let version = routeVersions[ref.kind] ?? ref.kind.versions.first,
                    let parents = RouteStatusEntry.parents(for: entries, current: route.status?.parents ?? [], now: Date())
                else { continue }
                let patch = StatusPatch(
                    metadata: .init(resourceVersion: route.metadata.resourceVersion), status: .init(parents: parents))
                do throws(KubernetesError) {
                    // The route's watch event brings the result into the cache (never the answer
                    // here: a newer spec may have arrived meanwhile, and the cache must not go back).
                    let _: Route = try await client.patchStatus(
                        ref.kind.resource(version: version), namespace: ref.namespace, name: ref.name, patch: patch)
                    logger.info("route status written: \(ref) (generation \(route.metadata.generation ?? 0))")
                } catch where error.isConflict || error.isNotFound {
                    logger.debug("route status of \(ref): \(error) (its next watch event brings it again)")
                } catch {
                    failed = true
                    logger.warning("cannot write the status of \(ref): \(error)")
                }
            }
            if failed {
                try? await Task.sleep(for: .seconds(2))
                statusDue.ring()
            }
        }
    }

    /// A merge patch of a route's status, conditional on its resourceVersion.
    struct StatusPatch: Encodable, Sendable {
        struct Metadata: Encodable, Sendable { var resourceVersion: String? }
        struct Status: Encodable, Sendable { var parents: [JSONValue] }
        var metadata: Metadata
        var status: Status
    }

    /// The informers whose last list or watch failed, with the error.
    private var failingInformers: [String: String] = [:]

    /// Records an informer's failure (or its recovery, nil). Returns what to report when the source
    /// as a whole changes: the first failure's message, or nil (as `.some(nil)`) once none fails.
    private func informer(_ resource: ResourceDescriptor, failed error: KubernetesError?) -> String?? {
        let wasFailing = !failingInformers.isEmpty
        failingInformers[resource.plural] = error.map { "\($0)" }
        switch (wasFailing, failingInformers.isEmpty) {
        case (false, false): return .some("\(resource.plural): \(error.map { "\($0)" } ?? "")")
        case (true, true): return .some(nil)
        default: return nil
        }
    }

    func noteChange() {
        firstChangeAt = firstChangeAt ?? .now
        changed.ring()
    }

    /// The translation of the caches now; nil before every informer has listed, or when nothing changed.
    private func translate() -> Update? {
        guard servicesListed, endpointsListed, nodeListed || configuration.nodeName == nil else { return nil }
        guard !configuration.gatewayAPI || (gatewayDiscovered && gatewayListPending.isEmpty) else { return nil }
        let changedAt = firstChangeAt ?? .now
        firstChangeAt = nil
        let (changes, problems) = cache.translate()
        if let lastProblems, lastProblems == problems, changes.isEmpty { return nil }
        let known = Set(lastProblems ?? [])
        let update = Update(
            changes: changes, problems: problems, newProblems: problems.filter { !known.contains($0) }, changedAt: changedAt)
        lastProblems = problems
        return update
    }

    private func event(for problem: InputProblem) -> EventRecord? {
        guard configuration.recordEvents else { return nil }
        let object = problem.object
        let reference: ObjectReference
        switch object.kind {
        case .service:
            let service = cache.services[ObjectKey(object)]
            reference = ObjectReference(
                kind: "Service", namespace: object.namespace, name: object.name, uid: service?.metadata.uid,
                resourceVersion: service?.metadata.resourceVersion)
        case .node:
            let node = cache.node?.metadata.name == object.name ? cache.node : nil
            reference = ObjectReference(
                kind: "Node", namespace: nil, name: object.name, uid: node?.metadata.uid ?? object.name)
        case .tcpRoute, .udpRoute, .httpRoute, .grpcRoute:
            let route = RouteKind(rawValue: object.kind.rawValue).flatMap {
                cache.routes[RouteRef(kind: $0, namespace: object.namespace ?? "", name: object.name)]
            }
            reference = ObjectReference(
                apiVersion: route?.apiVersion ?? "\(RouteKind.group)/v1", kind: object.kind.rawValue, namespace: object.namespace,
                name: object.name, uid: route?.metadata.uid, resourceVersion: route?.metadata.resourceVersion)
        case .file, .staticService:
            return nil
        }
        // One name per problem and node: an agent that restarts does not record the same Event again
        // (the server answers 409 while the first one lives, an hour by default).
        let identity = [
            configuration.nodeName ?? "", object.kind.rawValue, object.qualifiedName, problem.field, problem.message,
        ]
        let name = "\(reference.name ?? "object").canary-agent.\(Self.fnv1a(identity.joined(separator: "\u{0}")))"
        return EventRecord(
            involvedObject: reference, reason: problem.reason, message: "\(problem.field): \(problem.message)",
            type: .warning, component: configuration.component, host: configuration.nodeName, name: name)
    }

    /// A stable 64-bit FNV-1a hash in hexadecimal (Swift's `Hasher` is seeded anew in every process).
    static func fnv1a(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
