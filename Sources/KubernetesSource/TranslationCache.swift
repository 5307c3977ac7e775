import CanaryCore
import IPVS
import KubernetesClient

/// The informers' caches and the translation of them, kept up to date one object at a time.
///
/// A watch event changes one Service, one slice (or Endpoints) or the Node. A Service's desired
/// entries depend only on that Service, its endpoints, the canary Service it names and that
/// Service's endpoints, and the Node's scheduler label. So after an event only the Services it can
/// touch are translated again (the object itself, and the stable Services naming it as their
/// canary), instead of every Service of the cluster: with 10,000 Services one change costs one
/// Service's work. A relist, a Node change, an address conflict, or a problem on a touched Service
/// translates everything with `Translator.translate`, whose result this equals in every case (a
/// property the tests check over random event sequences).
///
/// Internal to the agent; `@_spi(Benchmarks)` opens the few members the host benchmarks
/// (`Benchmarks/Benchmarks/HostBenchmarks`) drive, one watch event at a time, without a cluster.
/// A release build has no `@testable import`, so they cannot reach it otherwise.
@_spi(Benchmarks) public struct TranslationCache: Sendable {
    let endpointsAPI: KubernetesSource.EndpointsAPI
    let defaultScheduler: Scheduler
    let acceptExternalIPs: Bool

    private(set) var services: [ObjectKey: Service] = [:]
    private(set) var slices: [ObjectKey: EndpointSlice] = [:]
    private(set) var endpoints: [ObjectKey: Endpoints] = [:]
    private(set) var node: Node?
    /// Gateway API routes (every kind) and ReferenceGrants, and what they decide.
    private(set) var routes: [RouteRef: Route] = [:]
    private(set) var grants: [ObjectKey: ReferenceGrant] = [:]
    private(set) var decisions = RouteDecisions()
    /// For each backend Service of a programmable route, the parent Services it feeds.
    private var routesOfBackend: [ObjectKey: Set<RouteRef>] = [:]
    /// Each route's problem now (few; compared with the last translation's in the incremental path).
    private var routeProblems: [RouteRef: InputProblem] = [:]
    /// For each Service, the routes that name it (as parent or backend), whether it exists or not.
    private var routesNaming: [ObjectKey: Set<RouteRef>] = [:]

    /// The last translation; nil before the first.
    private(set) var last: Translation?
    /// How many translations took the touched Services only (for tests: the fast path is taken).
    private(set) var incrementalTranslations = 0
    /// The Services to translate again; nil: all of them.
    private var touched: Set<ObjectKey>?

    // Indexes, kept with the caches.
    private var slicesOfService: [ObjectKey: Set<ObjectKey>] = [:]
    private var serviceOfSlice: [ObjectKey: ObjectKey] = [:]
    private var canaryOf: [ObjectKey: ObjectKey] = [:]
    private var canaryUsers: [ObjectKey: Set<ObjectKey>] = [:]
    // What the last translation made of each Service object, and which object owns each virtual service.
    private var outputs: [InputObject: [ServiceKey]] = [:]
    private var owners: [ServiceKey: InputObject] = [:]

    /// Empty caches: nothing is translated until the first `translate()`.
    @_spi(Benchmarks) public init(
        endpointsAPI: KubernetesSource.EndpointsAPI, defaultScheduler: Scheduler, acceptExternalIPs: Bool = false
    ) {
        self.endpointsAPI = endpointsAPI
        self.defaultScheduler = defaultScheduler
        self.acceptExternalIPs = acceptExternalIPs
    }

    // MARK: - Changes

    /// A relist of the Services: the cache holds exactly these; the next translation is a full one.
    @_spi(Benchmarks) public mutating func replaceServices(_ all: [ObjectKey: Service]) {
        services = all
        canaryOf = [:]
        canaryUsers = [:]
        for (key, service) in all { indexCanary(of: key, service) }
        if !routes.isEmpty { decideAllRoutes() }
        touched = nil
    }

    @_spi(Benchmarks) public mutating func changeService(_ key: ObjectKey, to service: Service?) {
        touch(affected(by: key))
        services[key] = service
        indexCanary(of: key, service)
        touch(affected(by: key))
        // A Service is a route's parent or backend: those routes' verdicts may change with it.
        if let named = routesNaming[key] { decideRoutes(named) }
    }

    // MARK: - Gateway API

    /// A relist of one route kind: the cache holds exactly these of that kind.
    @_spi(Benchmarks) public mutating func replaceRoutes(_ kind: RouteKind, _ all: [ObjectKey: Route]) {
        routes = routes.filter { $0.key.kind != kind }
        for (key, route) in all { routes[RouteRef(kind: kind, namespace: key.namespace, name: key.name)] = route }
        decideAllRoutes()
        touched = nil
    }

    /// One watch event on a route (nil: deleted): that route is evaluated again, and the parents
    /// whose ports it governed or governs are touched.
    @_spi(Benchmarks) public mutating func changeRoute(_ kind: RouteKind, _ key: ObjectKey, to route: Route?) {
        let ref = RouteRef(kind: kind, namespace: key.namespace, name: key.name)
        if let old = routes[ref] { unindex(ref, old) }
        routes[ref] = route
        if let route { index(ref, route) }
        decideRoutes([ref])
    }

    mutating func replaceGrants(_ all: [ObjectKey: ReferenceGrant]) {
        grants = all
        decideAllRoutes()
        touched = nil
    }

    /// A ReferenceGrant can allow or forbid any route's backend: every route is evaluated again.
    mutating func changeGrant(_ key: ObjectKey, to grant: ReferenceGrant?) {
        grants[key] = grant
        decideAllRoutes()
    }

    /// The Services each route names (its Service parents in its namespace, its backend Services).
    private static func servicesNamed(by ref: RouteRef, _ route: Route) -> Set<ObjectKey> {
        var named = Set<ObjectKey>()
        for parent in route.spec?.parentRefs ?? [] where parent.isService {
            named.insert(ObjectKey(namespace: parent.namespace ?? ref.namespace, name: parent.name))
        }
        for rule in route.spec?.rules ?? [] {
            for backend in rule.backendRefs ?? [] where backend.isService {
                named.insert(ObjectKey(namespace: backend.namespace ?? ref.namespace, name: backend.name))
            }
        }
        return named
    }

    private mutating func index(_ ref: RouteRef, _ route: Route) {
        for service in Self.servicesNamed(by: ref, route) { routesNaming[service, default: []].insert(ref) }
    }

    private mutating func unindex(_ ref: RouteRef, _ route: Route) {
        for service in Self.servicesNamed(by: ref, route) {
            routesNaming[service]?.remove(ref)
            if routesNaming[service]?.isEmpty == true { routesNaming[service] = nil }
        }
    }

    /// Every route evaluated again (a relist, a grant): the next translation is a full one.
    private mutating func decideAllRoutes() {
        routesNaming = [:]
        for (ref, route) in routes { index(ref, route) }
        decisions = RouteDecisions(routes: routes, services: services, grants: Array(grants.values))
        routesOfBackend = [:]
        routeProblems = [:]
        for (ref, verdict) in decisions.verdicts { index(ref, verdict: verdict) }
        touched = nil
    }

    /// These routes evaluated again; their parents' ports decided again; the parents whose verdict
    /// or winner changed are touched.
    private mutating func decideRoutes(_ refs: Set<RouteRef>) {
        var parents = Set<ObjectKey>()
        var changed = false
        let grantList = Array(grants.values)
        for ref in refs {
            let before = decisions.verdicts[ref]
            let after = routes[ref].map { RouteEvaluation.evaluate($0, kind: ref.kind, services: services, grants: grantList) }
            guard before != after else { continue }
            changed = true
            if let before { unindex(ref, verdict: before) }
            if let after { index(ref, verdict: after) }
            decisions.update(ref, after)
            for verdict in [before, after].compactMap({ $0 }) { parents.formUnion(verdict.parents.compactMap(\.service)) }
        }
        guard changed else { return }
        for parent in parents {
            decisions.redecide(parent: parent, candidates: routesNaming[parent] ?? [])
        }
        touch(parents)
    }

    /// What a verdict adds to the indexes: its backends (whose changes touch its parents), its problem.
    private mutating func index(_ ref: RouteRef, verdict: RouteVerdict) {
        for backend in verdict.backends ?? [] { routesOfBackend[backend.service, default: []].insert(ref) }
        routeProblems[ref] = verdict.problem
    }

    private mutating func unindex(_ ref: RouteRef, verdict: RouteVerdict) {
        for backend in verdict.backends ?? [] {
            routesOfBackend[backend.service]?.remove(ref)
            if routesOfBackend[backend.service]?.isEmpty == true { routesOfBackend[backend.service] = nil }
        }
        routeProblems[ref] = nil
    }


    /// A relist of the EndpointSlices: the cache holds exactly these; the next translation is a full one.
    @_spi(Benchmarks) public mutating func replaceSlices(_ all: [ObjectKey: EndpointSlice]) {
        slices = all
        slicesOfService = [:]
        serviceOfSlice = [:]
        for (key, slice) in all { indexSlice(key, slice) }
        touched = nil
    }

    /// One watch event on a slice (nil: deleted): the Services it belongs to, before and after, are touched.
    @_spi(Benchmarks) public mutating func changeSlice(_ key: ObjectKey, to slice: EndpointSlice?) {
        if let old = serviceOfSlice[key] { touch(affected(by: old)) }
        slices[key] = slice
        indexSlice(key, slice)
        if let new = serviceOfSlice[key] { touch(affected(by: new)) }
    }

    mutating func replaceEndpoints(_ all: [ObjectKey: Endpoints]) {
        endpoints = all
        touched = nil
    }

    mutating func changeEndpoints(_ key: ObjectKey, to object: Endpoints?) {
        endpoints[key] = object
        touch(affected(by: key))
    }

    /// The Node's labels decide every Service's scheduler: everything is translated again.
    mutating func setNode(_ node: Node?) {
        self.node = node
        touched = nil
    }

    // MARK: - Translation

    /// Translates what changed since the last call: only the touched Services when that is exact,
    /// else everything. Returns the virtual services whose entries differ from the previous
    /// translation's, each with its new entry (nil: gone), and every problem now. The first call
    /// returns every service.
    @_spi(Benchmarks) public mutating func translate() -> (changes: [ServiceKey: DesiredService?], problems: [InputProblem]) {
        defer { touched = [] }
        if let touched, last != nil, let changed = translateTouched(touched), let last {
            incrementalTranslations += 1
            let services = last.desiredState.services
            return (Dictionary(uniqueKeysWithValues: changed.map { ($0, services[$0]) }), last.problems)
        }
        let previous = last
        last = nil
        let translation = Translator.translate(
            TranslationInput(
                services: Array(services.values),
                endpoints: endpointsAPI == .endpointSlices ? .slices(Array(slices.values)) : .endpoints(Array(endpoints.values)),
                node: node, defaultScheduler: defaultScheduler, acceptExternalIPs: acceptExternalIPs, routes: routes,
                grants: Array(grants.values)),
            previous: previous?.desiredState ?? DesiredState())
        last = translation
        outputs = [:]
        owners = [:]
        for service in translation.desiredState.services.values {
            outputs[service.origin.object, default: []].append(service.key)
            owners[service.key] = service.origin.object
        }
        return ((previous?.desiredState ?? DesiredState()).changes(to: translation.desiredState), translation.problems)
    }

    /// Translates the touched Services into `last` in place and returns the virtual services that
    /// changed; nil (with `last` untouched) when only a full translation is exact: a problem on a
    /// touched Service (before or after), on the Node, an address conflict, or a Node whose
    /// scheduler label is invalid.
    private mutating func translateTouched(_ touched: Set<ObjectKey>) -> Set<ServiceKey>? {
        guard let problems = last?.problems else { return nil }
        // A route's problem appears or goes with the route's verdict: only a full translation lists them exactly.
        let lastRouteProblems = problems.filter { $0.object.isRoute }
        guard lastRouteProblems.count == routeProblems.count, lastRouteProblems == routeProblems.values.sorted() else { return nil }
        if touched.isEmpty { return [] }
        let touchedNames = Set(touched.map(\.reference))
        // A problem on a touched Service, on the Node, or an address conflict anywhere (the Service
        // that lost may win once the touched one lets the address go): only a full translation is exact.
        guard !problems.contains(where: { $0.object.kind == .node || $0.reason == "AddressConflict" || touchedNames.contains($0.object) })
        else { return nil }
        var nodeScheduler: Scheduler?
        if let value = node?.metadata.labels?[CanaryScheme.nodeSchedulerLabel] {
            guard let scheduler = Translator.parseScheduler(value) else { return nil }
            nodeScheduler = scheduler
        }
        // Everything is decided before anything is changed.
        var results: [(name: InputObject, desired: [DesiredService])] = []
        var claimed = Set<ServiceKey>()
        for key in touched.sorted() {
            guard let service = services[key],
                service.metadata.labels?[CanaryScheme.serviceProxyNameLabel] == CanaryScheme.serviceProxyName
            else { continue }
            let result = Translator.translateService(
                service, services: services, endpoints: endpointIndex(for: key),
                fallbackScheduler: nodeScheduler ?? defaultScheduler, acceptExternalIPs: acceptExternalIPs,
                routes: decisions.governing(key, portCount: service.spec?.ports?.count ?? 0))
            guard case .success(let desired) = result else { return nil }
            for item in desired {
                if let owner = owners[item.key], !touchedNames.contains(owner) { return nil }
                guard claimed.insert(item.key).inserted else { return nil }
            }
            results.append((key.reference, desired))
        }
        // In place: `last` gives up its reference first, so that its 10,000 entries are not copied.
        var translation = last!
        last = nil
        var before: [ServiceKey: DesiredService] = [:]
        for name in touchedNames {
            for key in outputs[name] ?? [] {
                before[key] = translation.desiredState.services.removeValue(forKey: key)
                owners[key] = nil
            }
            outputs[name] = nil
        }
        for (name, desired) in results {
            for item in desired {
                translation.desiredState.services[item.key] = item
                owners[item.key] = name
            }
            outputs[name] = desired.map(\.key)
        }
        last = translation
        let keys = Set(before.keys).union(claimed)
        return keys.filter { before[$0] != translation.desiredState.services[$0] }
    }

    /// The endpoints of a Service and of its canary, indexed as the translator reads them.
    private func endpointIndex(for key: ObjectKey) -> EndpointIndex {
        let keys = [key] + (canaryOf[key].map { [$0] } ?? [])
            + decisions.backendServices(of: key, portCount: services[key]?.spec?.ports?.count ?? 0)
        switch endpointsAPI {
        case .endpointSlices:
            return EndpointIndex(.slices(keys.flatMap { (slicesOfService[$0] ?? []).compactMap { slices[$0] } }))
        case .endpoints:
            return EndpointIndex(.endpoints(keys.compactMap { endpoints[$0] }))
        }
    }

    // MARK: - Indexes

    /// Marks Services to translate again (nothing to do when everything will be).
    private mutating func touch(_ keys: Set<ObjectKey>) {
        touched?.formUnion(keys)
    }

    /// The Service itself, the stable Services that name it as their canary, and the parents of
    /// the routes it is a backend of.
    private func affected(by key: ObjectKey) -> Set<ObjectKey> {
        var keys = (canaryUsers[key] ?? []).union([key])
        for ref in routesOfBackend[key] ?? [] {
            keys.formUnion(decisions.verdicts[ref]?.parents.compactMap(\.service) ?? [])
        }
        return keys
    }

    private mutating func indexCanary(of key: ObjectKey, _ service: Service?) {
        if let old = canaryOf.removeValue(forKey: key) {
            canaryUsers[old]?.remove(key)
            if canaryUsers[old]?.isEmpty == true { canaryUsers[old] = nil }
        }
        guard let name = service?.metadata.annotations?[CanaryScheme.canaryServiceAnnotation]?.trimmingSpaces, !name.isEmpty
        else { return }
        let canary = ObjectKey(namespace: key.namespace, name: name)
        canaryOf[key] = canary
        canaryUsers[canary, default: []].insert(key)
    }

    private mutating func indexSlice(_ key: ObjectKey, _ slice: EndpointSlice?) {
        if let old = serviceOfSlice.removeValue(forKey: key) {
            slicesOfService[old]?.remove(key)
            if slicesOfService[old]?.isEmpty == true { slicesOfService[old] = nil }
        }
        guard let slice, let name = slice.metadata.labels?[EndpointSlice.serviceNameLabel] else { return }
        let service = ObjectKey(namespace: slice.metadata.namespace, name: name)
        serviceOfSlice[key] = service
        slicesOfService[service, default: []].insert(key)
    }
}
