/// The kernel's weighted round-robin scheduler (net/netfilter/ipvs/ip_vs_wrr.c), step by step.
///
/// The kernel keeps a mark per service: `cl` the last chosen destination (or the list head),
/// `di` the gcd of the positive weights, `mw` the largest weight minus `di - 1`, and `cw` the
/// current weight. A pass walks the destination list from `cl` and picks the next destination
/// whose weight is at least `cw`; at the end of the list `cw` drops by `di`, and below 1 it
/// starts again at `mw`. So one cycle has `mw / di` passes and destination `i` is chosen in
/// `weight[i] / di` of them: the cycle is `sum(weights) / gcd` connections long, and a small
/// weight is only reached in the last passes of a cycle (with 2667:2667:2667:2000 the first
/// 2,001 connections of a fresh service go to the three 2667s).
///
/// Destinations are in the kernel's list order: most recently added first
/// (`list_add_rcu(&dest->n_list, &svc->destinations)` in `__ip_vs_update_dest`).
/// Overload flags (upper thresholds) are not modelled: the agent sets none.
public struct WeightedRoundRobinModel: Hashable, Sendable {
    /// Destination weights in the kernel's list order.
    public private(set) var weights: [Int]
    /// `mark->cl`: index of the last chosen destination, nil for the list head.
    public private(set) var lastChosen: Int?
    /// `mark->cw`.
    public private(set) var currentWeight: Int
    /// `mark->mw`.
    public private(set) var maximumWeight: Int
    /// `mark->di`.
    public private(set) var step: Int

    /// A service created with these destinations already in its list (`ip_vs_wrr_init_svc`).
    public init(weights: [Int]) {
        self.weights = weights
        lastChosen = nil
        step = Self.gcdOfPositive(weights)
        maximumWeight = (weights.max() ?? 0) - (step - 1)
        currentWeight = maximumWeight
    }

    /// A service created empty and then given its destinations one by one, the way the agent
    /// programs it: `addOrder` lists the weights in the order the destinations were added.
    public static func programmed(addOrder: [Int]) -> WeightedRoundRobinModel {
        var model = WeightedRoundRobinModel(weights: [])
        for weight in addOrder { model.add(weight: weight) }
        return model
    }

    /// Adds a destination: it goes to the front of the list, then `ip_vs_wrr_dest_changed`.
    public mutating func add(weight: Int) {
        weights.insert(weight, at: 0)
        destinationsChanged()
    }

    /// Changes one destination's weight (`ip_vs_edit_dest`, then `ip_vs_wrr_dest_changed`).
    public mutating func update(index: Int, weight: Int) {
        weights[index] = weight
        destinationsChanged()
    }

    /// `ip_vs_wrr_dest_changed`: back to the list head, new gcd and maximum, `cw` kept when it
    /// still fits (rounded onto the new gcd's grid).
    private mutating func destinationsChanged() {
        lastChosen = nil
        step = Self.gcdOfPositive(weights)
        maximumWeight = (weights.max() ?? 0) - (step - 1)
        if currentWeight > maximumWeight || currentWeight == 0 {
            currentWeight = maximumWeight
        } else if step > 1 {
            currentWeight = (currentWeight / step) * step + 1
        }
    }

    /// `ip_vs_wrr_schedule`: the index of the destination the next new connection goes to, or
    /// nil when no destination has a positive weight.
    public mutating func next() -> Int? {
        guard maximumWeight != 0 else { return nil }
        var position = lastChosen  // nil is the list head
        let last = lastChosen
        var stop: Int? = nil
        var lastPass = false
        var restarted = false
        while true {
            // list_for_each_entry_continue_rcu: from the entry after `position` up to the head.
            var index = (position ?? -1) + 1
            while index < weights.count {
                if weights[index] >= currentWeight {
                    lastChosen = index
                    return index
                }
                if index == stop {
                    lastChosen = index
                    return nil
                }
                index += 1
            }
            position = nil
            currentWeight -= step
            if currentWeight <= 0 {
                currentWeight = maximumWeight
                if lastPass || last == nil {
                    lastChosen = nil
                    return nil
                }
                restarted = true
            }
            lastPass = currentWeight <= step
            if lastPass && restarted && last != nil { stop = last }
        }
    }

    /// The destinations of the next `count` connections, in order (fewer if none is available).
    public mutating func schedule(_ count: Int) -> [Int] {
        var chosen: [Int] = []
        chosen.reserveCapacity(count)
        for _ in 0..<count {
            guard let index = next() else { break }
            chosen.append(index)
        }
        return chosen
    }

    /// Connections in one full cycle: `sum(weights) / gcd` over the positive weights.
    public var cycleLength: Int { Self.cycleLength(weights) }

    /// Connections in one full cycle of these weights.
    public static func cycleLength(_ weights: [Int]) -> Int {
        let step = gcdOfPositive(weights)
        return weights.reduce(0) { $0 + max(0, $1) / step }
    }

    /// `ip_vs_wrr_gcd_weight`: the gcd of the positive weights, 1 when there are none.
    public static func gcdOfPositive(_ weights: [Int]) -> Int {
        var divisor = 0
        for weight in weights where weight > 0 { divisor = divisor == 0 ? weight : greatestCommonDivisor(weight, divisor) }
        return divisor == 0 ? 1 : divisor
    }
}

/// Euclid's gcd of two non-negative integers.
func greatestCommonDivisor(_ a: Int, _ b: Int) -> Int {
    var (x, y) = (a, b)
    while y != 0 { (x, y) = (y, x % y) }
    return x
}
