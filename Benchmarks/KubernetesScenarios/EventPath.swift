import CanaryCore
import Foundation
import HostScenarios
import IPVS
import KubernetesClient
@_spi(Benchmarks) import KubernetesSource

/// The agent's state after the first full sync, kept by the watch-event benchmark and mutated in
/// place by each of its iterations, as the source and the reconciler keep theirs.
package struct EventPath {
    var framer = NewlineDelimitedFramer()
    let decoder = JSONDecoder()
    var cache: TranslationCache
    var state = DesiredState()
    var table = DesiredTable()
    var applied: IPVSTableIndex = [:]
    var drains = DrainTracker()
    let planner: Planner
    /// Two MODIFIED events of the same slice, one endpoint apart: the iterations alternate them.
    let lines: [[UInt8]]
    var next = 0

    package init(size: HostSize) {
        cache = TranslationCache(endpointsAPI: .endpointSlices, defaultScheduler: .weightedRoundRobin)
        cache.replaceServices(HostWorkload.services(size: size))
        cache.replaceSlices(HostWorkload.slices(size: size))
        planner = Planner(ownership: HostWorkload.ownership(size: size), drainTimeout: .seconds(300))
        let changed = size.services / 2
        lines = [true, false].enumerated().map { offset, variant in
            HostWorkload.watchEventLine(changed, size: size, variant: variant, resourceVersion: 100 + offset)
        }
        // The first update: every service; the full sync.
        let (changes, problems) = cache.translate()
        guard problems.isEmpty, changes.count == size.services else {
            fatalError("the cluster should translate to \(size.services) services without problems: \(changes.count), \(problems)")
        }
        _ = state.apply(.update(changes))
        table = DesiredTable(state)
        let plan = planner.plan(desired: table, current: [:], drains: &drains, now: HostWorkload.now)
        Planner.record(plan.operations, results: Array(repeating: .success(()), count: plan.operations.count), into: &applied)
    }

    /// One watch event, as the agent takes it: framed and decoded (the watch stream), applied to the
    /// source's cache and translated (the source), applied to the desired state, the changed
    /// services realized and planned against the table, and the operations recorded as applied
    /// (the reconciler). Returns the operations.
    package mutating func take() -> [IPVSOperation] {
        let bytes = lines[next]
        next = 1 - next
        guard let line = try? framer.append(bytes).first,
            let event = try? decoder.decode(WatchEvent<EndpointSlice>.self, from: Data(line)),
            case .modified(let slice) = event
        else { fatalError("the watch event should decode") }
        cache.changeSlice(slice.key, to: slice)
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

