import IPVS

/// What changed in the desired state, as its source knows it. The reconciler holds the one desired
/// state and applies changes to it; a source never hands over a whole state for the reconciler to
/// compare, except where it has nothing finer (a static file read again).
public enum DesiredServiceChanges: Sendable, Hashable {
    /// The whole desired state: services not in it are gone.
    case replaceAll(DesiredState)
    /// These virtual services only: the new entry, or nil when the service is gone. Every other
    /// service stays as it is.
    case update([ServiceKey: DesiredService?])

    /// No change at all.
    public static let none = DesiredServiceChanges.update([:])
}

/// What a source delivers to the reconciler.
public enum SourceEvent: Sendable {
    /// A change of the desired state, with every problem of the input now (the objects with a
    /// problem keep their last good state). The first event of a source is its first desired state.
    case changed(DesiredServiceChanges, problems: [InputProblem], receivedAt: ContinuousClock.Instant)
    /// The input was rejected whole (a static file with an error): the running table stays.
    case rejected(InputProblem)
    /// The source cannot read its input (the API server is out of reach), with the error; nil once it
    /// can again. The running table stays; the agent is not ready while it lasts too long.
    case unavailable(String?)
}

/// Where the desired state comes from: the cluster or a static file.
public protocol DesiredStateSource: Sendable {
    /// For people: `file /etc/canary-agent/config.yaml`, `kubernetes https://10.0.0.1:443`.
    var summary: String { get }
    /// Delivers events until the task is cancelled.
    func run(deliver: @escaping @Sendable (SourceEvent) async -> Void) async throws
}

extension DesiredState {
    /// Applies a source's change and returns the virtual services whose entries really differ now.
    /// An update costs its own entries' work, in place; a replacement compares every service.
    public mutating func apply(_ changes: DesiredServiceChanges) -> Set<ServiceKey> {
        var changed = Set<ServiceKey>()
        switch changes {
        case .replaceAll(let state):
            for (key, service) in state.services where services[key] != service { changed.insert(key) }
            for key in services.keys where state.services[key] == nil { changed.insert(key) }
            self = state
        case .update(let entries):
            for (key, entry) in entries where services[key] != entry {
                services[key] = entry
                changed.insert(key)
            }
        }
        return changed
    }

    /// The change that turns `self` into `next`: the services that differ, each with its new entry.
    public func changes(to next: DesiredState) -> [ServiceKey: DesiredService?] {
        var entries: [ServiceKey: DesiredService?] = [:]
        for (key, service) in next.services where services[key] != service { entries[key] = .some(service) }
        for key in services.keys where next.services[key] == nil { entries[key] = .some(nil) }
        return entries
    }
}
