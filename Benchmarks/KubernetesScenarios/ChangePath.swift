import CanaryCore
import Foundation
import HostScenarios
import IPVS
import KubernetesClient
@_spi(Benchmarks) import KubernetesSource

/// One weight change from the watch stream to the operations, two ways over the same cluster of
/// `size` services, for a side-by-side comparison:
/// - `.annotation`: a MODIFIED Service whose `canary-agent.io/canary-weight` goes 10 ↔ 20;
/// - `.route`: every service governed by a TCPRoute (backends: the Service's own pods and its
///   canary Service), and a MODIFIED TCPRoute whose weights go 90/10 ↔ 80/20, as Argo Rollouts'
///   plugin writes a step.
package struct ChangePath {
    package enum Kind: String, Sendable { case annotation, route }

    let kind: Kind
    var framer = NewlineDelimitedFramer()
    let decoder = JSONDecoder()
    var cache: TranslationCache
    var state = DesiredState()
    var table = DesiredTable()
    var applied: IPVSTableIndex = [:]
    var drains = DrainTracker()
    let planner: Planner
    let lines: [[UInt8]]
    var next = 0

    package init(size: HostSize, kind: Kind) {
        self.kind = kind
        cache = TranslationCache(endpointsAPI: .endpointSlices, defaultScheduler: .weightedRoundRobin)
        cache.replaceServices(HostWorkload.services(size: size))
        cache.replaceSlices(HostWorkload.slices(size: size))
        if kind == .route {
            var routes: [ObjectKey: Route] = [:]
            for index in 0..<size.services {
                guard let route = try? JSONDecoder().decode(Route.self, from: Data(Self.routeJSON(index, canaryWeight: 10, generation: 1).utf8))
                else { fatalError("the route should decode") }
                routes[ObjectKey(namespace: HostWorkload.namespace, name: HostWorkload.stableName(index))] = route
            }
            cache.replaceRoutes(.tcp, routes)
        }
        planner = Planner(ownership: HostWorkload.ownership(size: size), drainTimeout: .seconds(300))
        let changed = size.services / 2
        lines = [20, 10].enumerated().map { offset, weight in
            let object =
                kind == .route
                ? Self.routeJSON(changed, canaryWeight: weight, generation: 2 + offset)
                : Self.serviceJSON(changed, canaryWeight: weight, resourceVersion: 100 + offset)
            return Array("{\"type\":\"MODIFIED\",\"object\":\(object)}\n".utf8)
        }
        let (changes, problems) = cache.translate()
        guard problems.isEmpty, changes.count == size.services else {
            fatalError("the cluster should translate to \(size.services) services without problems: \(changes.count), \(problems)")
        }
        _ = state.apply(.update(changes))
        table = DesiredTable(state)
        let plan = planner.plan(desired: table, current: [:], drains: &drains, now: HostWorkload.now)
        Planner.record(plan.operations, results: Array(repeating: .success(()), count: plan.operations.count), into: &applied)
    }

    /// A TCPRoute on service i: its own pods at `100 − w`, its canary Service at `w`.
    static func routeJSON(_ index: Int, canaryWeight: Int, generation: Int) -> String {
        let name = HostWorkload.stableName(index), namespace = HostWorkload.namespace
        return """
            {"apiVersion":"gateway.networking.k8s.io/v1","kind":"TCPRoute","metadata":{"name":"\(name)","namespace":"\(namespace)",\
            "uid":"route-\(index)","resourceVersion":"\(generation)","generation":\(generation),"creationTimestamp":"2026-12-01T10:00:00Z",\
            "labels":{"rollouts.argoproj.io/gatewayapi-canary":"in-progress"}},\
            "spec":{"parentRefs":[{"group":"","kind":"Service","name":"\(name)"}],\
            "rules":[{"backendRefs":[{"group":"","kind":"Service","name":"\(name)","port":80,"weight":\(100 - canaryWeight)},\
            {"group":"","kind":"Service","name":"\(HostWorkload.canaryName(index))","port":80,"weight":\(canaryWeight)}]}]}}
            """
    }

    /// Service i as the cluster has it, with `canary-weight` w.
    static func serviceJSON(_ index: Int, canaryWeight: Int, resourceVersion: Int) -> String {
        let name = HostWorkload.stableName(index), namespace = HostWorkload.namespace
        let address = HostWorkload.virtualAddress(index)
        return """
            {"kind":"Service","apiVersion":"v1","metadata":{"name":"\(name)","namespace":"\(namespace)","uid":"uid-s-\(index)",\
            "resourceVersion":"\(resourceVersion)","creationTimestamp":"2026-12-01T10:00:00Z",\
            "labels":{"\(CanaryScheme.serviceProxyNameLabel)":"\(CanaryScheme.serviceProxyName)"},\
            "annotations":{"\(CanaryScheme.canaryServiceAnnotation)":"\(HostWorkload.canaryName(index))",\
            "\(CanaryScheme.canaryWeightAnnotation)":"\(canaryWeight)"}},\
            "spec":{"clusterIP":"\(address)","clusterIPs":["\(address)"],"type":"ClusterIP",\
            "ports":[{"name":"http","protocol":"TCP","port":80,"targetPort":8080}]}}
            """
    }

    /// One change, as the agent takes it (see `EventPath.take`). Returns the operations.
    package mutating func take() -> [IPVSOperation] {
        let bytes = lines[next]
        next = 1 - next
        guard let line = try? framer.append(bytes).first else { fatalError("one line") }
        switch kind {
        case .route:
            guard let event = try? decoder.decode(WatchEvent<Route>.self, from: Data(line)), case .modified(let route) = event
            else { fatalError("the route event should decode") }
            cache.changeRoute(.tcp, ObjectKey(namespace: route.metadata.namespace, name: route.metadata.name ?? ""), to: route)
        case .annotation:
            guard let event = try? decoder.decode(WatchEvent<Service>.self, from: Data(line)), case .modified(let service) = event
            else { fatalError("the Service event should decode") }
            cache.changeService(service.key, to: service)
        }
        let (changes, _) = cache.translate()
        let changed = state.apply(.update(changes))
        for key in changed {
            if let service = state.services[key] {
                table.update(service, kernelOrder: applied[key]?.destinations.map(\.address))
            } else {
                table.remove(key)
            }
        }
        let plan = planner.plan(changed: changed, desired: table, current: applied, drains: &drains, now: HostWorkload.now)
        Planner.record(plan.operations, results: Array(repeating: .success(()), count: plan.operations.count), into: &applied)
        return plan.operations
    }
}
