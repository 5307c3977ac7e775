import IPVS

/// The kernel's Maglev-hashing scheduler (net/netfilter/ipvs/ip_vs_mh.c) as Debian's 6.1 kernel
/// builds it: `CONFIG_IP_VS_MH_TAB_INDEX=12` (/boot/config-6.1.0-56-amd64), so
/// `IP_VS_MH_TAB_BITS = 12 / 2 = 6` and `IP_VS_MH_TAB_SIZE = primes[12 - 8] = 4093` entries.
///
/// - Quantisation (`ip_vs_mh_gcd_weight`, `ip_vs_mh_shift_weight`, `ip_vs_mh_permutate`): the
///   weights used are each destination's `last_weight` (its latest non-zero weight, kept when it
///   is set to 0: `__ip_vs_update_dest`). They are divided by their gcd, and shifted right by
///   `fls(max / gcd) - 6` when that is positive, so at most 63 "turns" survive; a destination
///   whose shifted weight is 0 still gets 1 turn (`?: (lw != 0)`). 99:1 becomes 49:1 and 90:10
///   becomes 9:1.
/// - Population (`ip_vs_mh_populate`): in rounds over the list, each destination claims `turns`
///   entries, each its next free preferred position (`offset`, then `+ skip` modulo the size),
///   until all 4093 entries are taken. So a destination holds about `turns / sum(turns)` of the
///   table; the last, partial round favours destinations early in the list, and destinations
///   whose turns come after the table is full get nothing.
/// - Lookup (`ip_vs_mh_get`): `hsiphash(ntohs(port) + ntohl(addr), hash1) % 4093`, with the fixed
///   keys `hash1 = {2654435761, 2654435761}`, `hash2 = {2654446892, 2654446892}`; a weight-0
///   destination refuses, or with mh-fallback (`IP_VS_SVC_F_SCHED1`, the sh-fallback bit) the
///   kernel rehashes with `roffset = (offset + ihash) % 4093` added until an available one.
public struct MaglevHashingModel: Hashable, Sendable {
    /// `IP_VS_MH_TAB_SIZE` on Debian 12.
    public static let tableSize = 4093
    /// `IP_VS_MH_TAB_BITS` on Debian 12.
    public static let tableBits = 6
    /// The most turns a destination can have after the shift: `2^6 - 1`.
    public static let maximumTurns = (1 << tableBits) - 1

    /// `generate_hash_secret`: the fixed keys of every mh service.
    public static let hash1 = KernelHash.Key(2_654_435_761, 2_654_435_761)
    public static let hash2 = KernelHash.Key(2_654_446_892, 2_654_446_892)

    /// One destination as the scheduler sees it.
    public struct Destination: Hashable, Sendable {
        public var address: SocketAddress
        /// The current weight: 0 makes it unavailable for new connections.
        public var weight: Int
        /// The latest non-zero weight, which the table is built from.
        public var lastWeight: Int

        public init(address: SocketAddress, weight: Int, lastWeight: Int? = nil) {
            self.address = address
            self.weight = weight
            self.lastWeight = lastWeight ?? weight
        }
    }

    /// The turns each destination gets per round from these last weights, in list order.
    public static func turns(lastWeights: [Int]) -> [Int] {
        var divisor = 0
        for weight in lastWeights where weight > 0 {
            divisor = divisor == 0 ? weight : greatestCommonDivisor(weight, divisor)
        }
        guard divisor >= 1 else { return lastWeights.map { _ in 0 } }
        let largest = lastWeights.max() ?? 0
        let shift = max(0, bitWidth(largest / divisor) - tableBits)
        return lastWeights.map { weight in
            let shifted = (weight / divisor) >> shift
            return shifted != 0 ? shifted : (weight != 0 ? 1 : 0)
        }
    }

    /// `fls()`: the position of the highest set bit, 1-based; 0 for 0.
    static func bitWidth(_ value: Int) -> Int { value <= 0 ? 0 : Int.bitWidth - value.leadingZeroBitCount }

    /// How many table entries each destination claims with these turns (positions aside): whole
    /// rounds of `sum(turns)`, then a partial round in list order.
    public static func entryCounts(turns: [Int], tableSize: Int = tableSize) -> [Int] {
        let total = turns.reduce(0) { $0 + max(0, $1) }
        guard total > 0 else { return turns.map { _ in 0 } }
        let rounds = tableSize / total
        var remaining = tableSize % total
        return turns.map { turn in
            let extra = min(max(0, turn), remaining)
            remaining -= extra
            return rounds * max(0, turn) + extra
        }
    }

    /// The destinations in list order.
    public let destinations: [Destination]
    /// For each table entry, the index of the destination holding it; -1 when none does.
    public let lookup: [Int]

    /// The lookup table `ip_vs_mh_populate` builds for these destinations (in list order).
    public init(destinations: [Destination]) {
        self.destinations = destinations
        let size = Self.tableSize
        let turns = Self.turns(lastWeights: destinations.map(\.lastWeight))
        var table = [Int](repeating: -1, count: size)
        guard turns.contains(where: { $0 > 0 }) else {
            lookup = table
            return
        }
        var next = destinations.map { destination -> Int in
            Int(Self.hash(destination.address.address, port: destination.address.port, key: Self.hash1) % UInt32(size))
        }
        let skips = destinations.map { destination -> Int in
            Int(Self.hash(destination.address.address, port: destination.address.port, key: Self.hash2) % UInt32(size - 1)) + 1
        }
        var filled = 0
        fill: while true {
            for index in destinations.indices where turns[index] >= 1 {
                for _ in 0..<turns[index] {
                    var candidate = next[index]
                    while table[candidate] != -1 {
                        candidate += skips[index]
                        if candidate >= size { candidate -= size }
                    }
                    next[index] = candidate
                    table[candidate] = index
                    filled += 1
                    if filled == size { break fill }
                }
            }
        }
        lookup = table
    }

    /// `ip_vs_mh_hashkey(af, addr, port, key, offset)`.
    public static func hash(_ address: IPAddress, port: UInt16, key: KernelHash.Key, offset: UInt32 = 0) -> UInt32 {
        KernelHash.hsiphash(offset &+ UInt32(port) &+ KernelHash.foldedAddress(address), key: key)
    }

    /// The table entry a client looks up first.
    public static func entry(of client: IPAddress, port: UInt16 = 0) -> Int {
        Int(hash(client, port: port, key: hash1) % UInt32(tableSize))
    }

    /// The destination a client's new connection goes to, nil when refused
    /// (`ip_vs_mh_get`, or `ip_vs_mh_get_fallback` with `fallback`).
    public func destination(of client: IPAddress, port: UInt16 = 0, fallback: Bool) -> Int? {
        let first = Self.entry(of: client, port: port)
        let own = lookup[first]
        guard own >= 0 else { return nil }
        if destinations[own].weight > 0 { return own }
        guard fallback else { return nil }
        for offset in 0..<Self.tableSize {
            let rotated = UInt32((offset + first) % Self.tableSize)
            let entry = Int(Self.hash(client, port: port, key: Self.hash1, offset: rotated) % UInt32(Self.tableSize))
            let candidate = lookup[entry]
            guard candidate >= 0 else { return nil }
            if destinations[candidate].weight > 0 { return candidate }
        }
        return nil
    }

    /// How many table entries each destination holds.
    public var heldEntries: [Int] {
        var counts = [Int](repeating: 0, count: destinations.count)
        for index in lookup where index >= 0 { counts[index] += 1 }
        return counts
    }
}
