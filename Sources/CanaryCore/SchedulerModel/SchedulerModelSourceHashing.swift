import IPVS

/// The kernel's source-hashing scheduler (net/netfilter/ipvs/ip_vs_sh.c) as Debian's 6.1 kernel
/// builds it (`CONFIG_IP_VS_SH_TAB_BITS=8`: 256 buckets).
///
/// - The table (`ip_vs_sh_reassign`): walking the destination list in order, each destination
///   fills `weight` consecutive buckets (`if (++d_count >= atomic_read(&dest->weight))` moves on,
///   so a weight-0 destination still takes one bucket); after the last destination the walk wraps
///   to the first again until all 256 buckets are filled. Weights summing past 256 leave the
///   destinations late in the list with no bucket at all.
/// - A client's bucket (`ip_vs_sh_hashkey`): `hash_32(ntohs(port) + ntohl(addr), 8)`, the port
///   being 0 unless the service has sh-port.
/// - A bucket whose destination has weight 0 (`is_unavailable`): without sh-fallback the client
///   is refused; with it (`ip_vs_sh_get_fallback`) the kernel tries `hashkey(addr, port, roffset)`
///   for `roffset = ihash + offset`, which is bucket `(2 * ihash + offset) & 255`, offset 0 ... 255,
///   and takes the first available destination.
///
/// The list order is the kernel's: most recently added first.
public struct SourceHashingModel: Hashable, Sendable {
    /// `IP_VS_SH_TAB_SIZE` on Debian 12.
    public static let bucketCount = 256

    /// Destination weights in the kernel's list order.
    public let weights: [Int]
    /// For each bucket, the index of the destination it holds; empty when there is no destination.
    public let buckets: [Int]

    /// The table `ip_vs_sh_reassign` builds for these destinations.
    public init(weights: [Int]) {
        self.weights = weights
        guard !weights.isEmpty else {
            buckets = []
            return
        }
        var table: [Int] = []
        table.reserveCapacity(Self.bucketCount)
        var destination = 0
        var filled = 0
        for _ in 0..<Self.bucketCount {
            table.append(destination)
            filled += 1
            if filled >= weights[destination] {
                destination = (destination + 1) % weights.count
                filled = 0
            }
        }
        buckets = table
    }

    /// The bucket a client hashes to (`ip_vs_sh_hashkey` with offset 0).
    public static func bucket(of client: IPAddress, port: UInt16 = 0) -> Int {
        Int(KernelHash.hash32(UInt32(port) &+ KernelHash.foldedAddress(client), bits: 8))
    }

    /// Whether the kernel schedules to a destination (`is_unavailable` is weight <= 0).
    public func isAvailable(_ index: Int) -> Bool { weights[index] > 0 }

    /// The destination for clients of one bucket: its own if available, otherwise with
    /// `fallback` the first available from bucket `2 * bucket` on, otherwise nil (refused).
    public func destination(ofBucket bucket: Int, fallback: Bool) -> Int? {
        guard !buckets.isEmpty else { return nil }
        let own = buckets[bucket]
        if isAvailable(own) { return own }
        guard fallback else { return nil }
        for offset in 0..<Self.bucketCount {
            let candidate = buckets[(2 * bucket + offset) & (Self.bucketCount - 1)]
            if isAvailable(candidate) { return candidate }
        }
        return nil
    }

    /// The destination a client's new connection goes to, nil when refused.
    public func destination(of client: IPAddress, port: UInt16 = 0, fallback: Bool) -> Int? {
        destination(ofBucket: Self.bucket(of: client, port: port), fallback: fallback)
    }

    /// For each destination, how many of the 256 buckets end at it: its share of uniformly
    /// spread clients is this over 256.
    public func servedBuckets(fallback: Bool) -> [Int] {
        var counts = [Int](repeating: 0, count: weights.count)
        for bucket in 0..<buckets.count {
            if let index = destination(ofBucket: bucket, fallback: fallback) { counts[index] += 1 }
        }
        return counts
    }

    /// For each destination, how many buckets the table gives it (before any fallback).
    public var heldBuckets: [Int] {
        var counts = [Int](repeating: 0, count: weights.count)
        for index in buckets { counts[index] += 1 }
        return counts
    }
}
