import CanaryCore
import Foundation
import IPVS

extension HostWorkload {
    /// The planner's clock: the same instant for every plan (drains start then).
    package static let now = ContinuousClock.now
}

/// The desired state and the table after a full sync, for the whole-table benchmarks.
package struct WholeTable {
    package let state: DesiredState
    package let table: DesiredTable
    package let applied: IPVSTableIndex
    package let planner: Planner

    package init(size: HostSize) {
        state = HostWorkload.desiredState(size: size)
        table = DesiredTable(state)
        planner = Planner(ownership: HostWorkload.ownership(size: size), drainTimeout: .seconds(300))
        var drains = DrainTracker()
        let plan = planner.plan(desired: table, current: [:], drains: &drains, now: HostWorkload.now)
        var applied: IPVSTableIndex = [:]
        Planner.record(plan.operations, results: Array(repeating: .success(()), count: plan.operations.count), into: &applied)
        self.applied = applied
    }

    /// Services that the weight solver sees alike: scheduler, counts of live and draining stable
    /// and canary endpoints, share, persistence. A cache of solutions by shape would solve each once.
    package var shapes: Int {
        struct Shape: Hashable {
            var scheduler: Scheduler
            var stable: [Endpoint.State]
            var canary: [Endpoint.State]
            var share: CanaryShare
            var persistent: Bool
        }
        return Set(
            state.services.values.map {
                Shape(
                    scheduler: $0.scheduler, stable: $0.stable.map(\.state), canary: $0.canary.map(\.state),
                    share: $0.canaryShare, persistent: $0.persistence != nil)
            }
        ).count
    }
}

