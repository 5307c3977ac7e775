import CanaryCore
import Foundation
import KubernetesClient

/// The status canary-agent writes on a route: for each Service parent, `Accepted` and
/// `ResolvedRefs` with their reasons and the generation they describe, under its controller
/// name. Entries of other controllers are kept as they are.
public struct RouteStatusEntry: Sendable, Hashable {
    public static let controllerName = "canary-agent.io/gateway-controller"

    public var parentRef: ParentReference
    public var accepted: RouteVerdict.Condition
    public var resolvedRefs: RouteVerdict.Condition
    public var observedGeneration: Int64

    /// The desired entries of every route with a Service parent: a route that lost a port to
    /// another (by GEP-1294's precedence) is not accepted there.
    public static func desired(_ decisions: RouteDecisions) -> [RouteRef: [RouteStatusEntry]] {
        var result: [RouteRef: [RouteStatusEntry]] = [:]
        for (ref, verdict) in decisions.verdicts {
            result[ref] = verdict.parents.map { parent in
                var accepted = parent.accepted
                if let service = parent.service, !parent.ports.isEmpty {
                    let lost = parent.ports.compactMap { port -> RouteRef? in
                        let winner = decisions.winners[RouteEvaluation.PortKey(service: service, portIndex: port)]
                        return winner == ref ? nil : winner
                    }
                    if let other = lost.first, lost.count == parent.ports.count {
                        accepted = .init(
                            status: false, reason: "UnsupportedValue",
                            message: "\(other) takes precedence on Service \(service) (GEP-1294: kind, then the oldest)")
                    }
                }
                return RouteStatusEntry(
                    parentRef: parent.reference, accepted: accepted, resolvedRefs: parent.resolvedRefs,
                    observedGeneration: verdict.generation ?? 0)
            }
        }
        return result
    }

    /// True when `parent` (an entry of `status.parents` as the server holds it) is ours for the
    /// same parent and says the same (conditions' type, status, reason, message, generation).
    func matches(_ parent: JSONValue) -> Bool {
        guard parent["controllerName"]?.string == Self.controllerName, sameParent(parent["parentRef"]) else { return false }
        guard case .array(let conditions)? = parent["conditions"] else { return false }
        return [accepted, resolvedRefs].enumerated().allSatisfy { index, condition in
            let type = index == 0 ? "Accepted" : "ResolvedRefs"
            return conditions.contains {
                $0["type"]?.string == type && $0["status"]?.string == (condition.status ? "True" : "False")
                    && $0["reason"]?.string == condition.reason && $0["message"]?.string == condition.message
                    && $0["observedGeneration"] == .number(Double(observedGeneration))
            }
        }
    }

    func sameParent(_ value: JSONValue?) -> Bool {
        guard let value else { return false }
        return (value["name"]?.string ?? "") == parentRef.name && (value["kind"]?.string ?? "Gateway") == (parentRef.kind ?? "Gateway")
            && (value["group"]?.string ?? RouteKind.group) == (parentRef.group ?? RouteKind.group)
            && value["namespace"]?.string == parentRef.namespace
            && value["port"] == parentRef.port.map { .number(Double($0)) }
            && value["sectionName"]?.string == parentRef.sectionName
    }

    /// The entry as JSON; a condition keeps its `lastTransitionTime` from `previous` while its status holds.
    func json(previous: JSONValue?, now: Date) -> JSONValue {
        func condition(_ type: String, _ condition: RouteVerdict.Condition) -> JSONValue {
            let status = condition.status ? "True" : "False"
            var since = ISO8601DateFormatter().string(from: now)
            if case .array(let old)? = previous?["conditions"],
                let same = old.first(where: { $0["type"]?.string == type && $0["status"]?.string == status }),
                let time = same["lastTransitionTime"]?.string
            {
                since = time
            }
            return .object([
                "type": .string(type), "status": .string(status), "reason": .string(condition.reason),
                "message": .string(condition.message), "observedGeneration": .number(Double(observedGeneration)),
                "lastTransitionTime": .string(since),
            ])
        }
        var reference: [String: JSONValue] = [
            "group": .string(parentRef.group ?? RouteKind.group), "kind": .string(parentRef.kind ?? "Gateway"),
            "name": .string(parentRef.name),
        ]
        if let namespace = parentRef.namespace { reference["namespace"] = .string(namespace) }
        if let port = parentRef.port { reference["port"] = .number(Double(port)) }
        if let section = parentRef.sectionName { reference["sectionName"] = .string(section) }
        return .object([
            "parentRef": .object(reference), "controllerName": .string(Self.controllerName),
            "conditions": .array([condition("Accepted", accepted), condition("ResolvedRefs", resolvedRefs)]),
        ])
    }

    /// The route's `status.parents` with ours replaced by `entries` (other controllers' kept,
    /// ours for parents no longer named dropped); nil when the route already says exactly this.
    public static func parents(for entries: [RouteStatusEntry], current: [JSONValue], now: Date) -> [JSONValue]? {
        let ours = current.filter { $0["controllerName"]?.string == controllerName }
        if ours.count == entries.count && entries.allSatisfy({ entry in ours.contains(where: entry.matches) }) { return nil }
        let others = current.filter { $0["controllerName"]?.string != controllerName }
        return others + entries.map { entry in entry.json(previous: ours.first { entry.sameParent($0["parentRef"]) }, now: now) }
    }
}
