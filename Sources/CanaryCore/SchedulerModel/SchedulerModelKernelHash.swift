import IPVS

/// The hash functions the kernel's hashing schedulers use, as a 64-bit x86 kernel computes them.
///
/// - `hash32` is `hash_32()` of include/linux/hash.h: multiply by `GOLDEN_RATIO_32` (0x61C88647)
///   and keep the top `bits` bits. `ip_vs_sh_hashkey` uses it with 8 bits.
/// - `hsiphash` is `hsiphash()` of lib/siphash.c on a 64-bit kernel, where "HalfSipHash-1-3" is
///   really SipHash-1-3 (one compression round, three finalisation rounds) over a 4-byte input,
///   returning the low 32 bits of `v0 ^ v1 ^ v2 ^ v3`. `ip_vs_mh_hashkey` uses it.
public enum KernelHash {
    /// `GOLDEN_RATIO_32` of include/linux/hash.h.
    public static let goldenRatio32: UInt32 = 0x61C8_8647

    /// `hash_32(value, bits)`: the top `bits` bits of `value * GOLDEN_RATIO_32` (bits in 1 ... 32).
    public static func hash32(_ value: UInt32, bits: Int) -> UInt32 {
        precondition((1...32).contains(bits), "hash_32 takes 1 ... 32 bits")
        return (value &* goldenRatio32) >> UInt32(32 - bits)
    }

    /// The address the IPVS hashing schedulers hash, in host order: the IPv4 address, or for
    /// IPv6 the exclusive or of its four 32-bit words (`addr->ip6[0] ^ ... ^ addr->ip6[3]`,
    /// then `ntohl`, which commutes with the exclusive or).
    public static func foldedAddress(_ address: IPAddress) -> UInt32 {
        if let value = address.ipv4Value { return value }
        let bytes = address.bytes
        var folded: UInt32 = 0
        for word in 0..<4 {
            var value: UInt32 = 0
            for byte in bytes[(word * 4)..<(word * 4 + 4)] { value = value << 8 | UInt32(byte) }
            folded ^= value
        }
        return folded
    }

    /// A 128-bit `hsiphash_key_t` of a 64-bit kernel: two `unsigned long` words.
    public struct Key: Hashable, Sendable {
        public var first: UInt64
        public var second: UInt64
        public init(_ first: UInt64, _ second: UInt64) {
            self.first = first
            self.second = second
        }
    }

    /// `hsiphash(&value, 4, key)` on a 64-bit little-endian kernel (SipHash-1-3 of 4 bytes).
    public static func hsiphash(_ value: UInt32, key: Key) -> UInt32 {
        var state = SipState(key: key)
        let lastBlock = UInt64(4) << 56 | UInt64(value)
        state.v3 ^= lastBlock
        state.round()
        state.v0 ^= lastBlock
        state.v2 ^= 0xFF
        state.round()
        state.round()
        state.round()
        return UInt32(truncatingIfNeeded: state.v0 ^ state.v1 ^ state.v2 ^ state.v3)
    }

    /// SipHash-2-4 of a byte string, 64-bit result: the reference PRF, with the same round as
    /// `hsiphash`; kept so the round can be checked against the published test vectors.
    public static func siphash24(_ bytes: [UInt8], key: Key) -> UInt64 {
        var state = SipState(key: key)
        let wholeWords = bytes.count / 8
        for word in 0..<wholeWords {
            var message: UInt64 = 0
            for index in 0..<8 { message |= UInt64(bytes[word * 8 + index]) << (8 * UInt64(index)) }
            state.v3 ^= message
            state.round()
            state.round()
            state.v0 ^= message
        }
        var lastBlock = UInt64(truncatingIfNeeded: bytes.count) << 56
        for index in (wholeWords * 8)..<bytes.count {
            lastBlock |= UInt64(bytes[index]) << (8 * UInt64(index - wholeWords * 8))
        }
        state.v3 ^= lastBlock
        state.round()
        state.round()
        state.v0 ^= lastBlock
        state.v2 ^= 0xFF
        for _ in 0..<4 { state.round() }
        return state.v0 ^ state.v1 ^ state.v2 ^ state.v3
    }

    /// The four SipHash state words, initialised from the key as lib/siphash.c's PREAMBLE does.
    private struct SipState {
        var v0: UInt64 = 0x736f_6d65_7073_6575
        var v1: UInt64 = 0x646f_7261_6e64_6f6d
        var v2: UInt64 = 0x6c79_6765_6e65_7261
        var v3: UInt64 = 0x7465_6462_7974_6573

        init(key: Key) {
            v3 ^= key.second
            v2 ^= key.first
            v1 ^= key.second
            v0 ^= key.first
        }

        /// SIPROUND.
        mutating func round() {
            v0 &+= v1; v1 = v1.rotatedLeft(13); v1 ^= v0; v0 = v0.rotatedLeft(32)
            v2 &+= v3; v3 = v3.rotatedLeft(16); v3 ^= v2
            v0 &+= v3; v3 = v3.rotatedLeft(21); v3 ^= v0
            v2 &+= v1; v1 = v1.rotatedLeft(17); v1 ^= v2; v2 = v2.rotatedLeft(32)
        }
    }
}

extension UInt64 {
    fileprivate func rotatedLeft(_ count: UInt64) -> UInt64 { self << count | self >> (64 - count) }
}
