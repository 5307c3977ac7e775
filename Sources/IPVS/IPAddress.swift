#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 or IPv6 address, stored as its 4 or 16 bytes in network order.
public struct IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The address family.
    public enum Family: UInt8, Sendable, Hashable, Comparable, CustomStringConvertible {
        case inet = 4
        case inet6 = 6

        /// The kernel's AF_* value.
        public var kernelValue: UInt16 { self == .inet ? UInt16(AF_INET) : UInt16(AF_INET6) }

        public init?(kernelValue: UInt16) {
            switch Int32(kernelValue) {
            case AF_INET: self = .inet
            case AF_INET6: self = .inet6
            default: return nil
            }
        }

        public var description: String { self == .inet ? "IPv4" : "IPv6" }
        public static func < (l: Family, r: Family) -> Bool { l.rawValue < r.rawValue }
    }

    public let family: Family
    // The 16 bytes in network order; for IPv4 only the first four are used, the rest are zero.
    private let high: UInt64
    private let low: UInt64

    /// Creates an address from 4 (IPv4) or 16 (IPv6) bytes in network order.
    public init?<Bytes: Collection>(bytes: Bytes) where Bytes.Element == UInt8 {
        let count = bytes.count
        guard count == 4 || count == 16 else { return nil }
        var high: UInt64 = 0, low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 { high |= UInt64(byte) << (56 - 8 * UInt64(index)) }
            else { low |= UInt64(byte) << (56 - 8 * UInt64(index - 8)) }
        }
        self.family = count == 4 ? .inet : .inet6
        self.high = high
        self.low = low
    }

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text (no brackets, no zone). Text with a NUL in it
    /// is refused whole: inet_pton would read only up to the NUL ("10.96.0.10\0evil").
    public init?(_ text: String) {
        guard !text.utf8.contains(0), text.utf8.count <= 45 else { return nil }
        var storage = [UInt8](repeating: 0, count: 16)
        if text.contains(":") {
            guard inet_pton(AF_INET6, text, &storage) == 1 else { return nil }
            self.init(bytes: storage)
        } else {
            guard inet_pton(AF_INET, text, &storage) == 1 else { return nil }
            self.init(bytes: storage[0..<4])
        }
    }

    /// The address's bytes in network order: 4 for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        let count = family == .inet ? 4 : 16
        return (0..<count).map { index in
            index < 8 ? UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(index)))
                : UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(index - 8)))
        }
    }

    /// The IPv4 address as a host-order integer, or nil for IPv6.
    public var ipv4Value: UInt32? { family == .inet ? UInt32(truncatingIfNeeded: high >> 32) : nil }

    public var description: String {
        var text = [CChar](repeating: 0, count: 64)
        let raw = bytes
        let af = family == .inet ? AF_INET : AF_INET6
        guard inet_ntop(af, raw, &text, socklen_t(text.count)) != nil else { return "?" }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func < (l: IPAddress, r: IPAddress) -> Bool {
        (l.family, l.high, l.low) < (r.family, r.high, r.low)
    }
}

extension IPAddress: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let address = IPAddress(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an IP address: \(text)")
        }
        self = address
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// An address and port, printed as `10.0.0.1:80` or `[fd00::1]:80`.
public struct SocketAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Parses `10.0.0.1:80` or `[fd00::1]:80`.
    public init?(_ text: String) {
        let hostPart: Substring, portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            hostPart = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portPart = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":"), text.firstIndex(of: ":") == colon else { return nil }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
        }
        // Digits only: `UInt16` alone would take "+80".
        guard !portPart.isEmpty, portPart.utf8.count <= 5, portPart.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            let address = IPAddress(String(hostPart)), let port = UInt16(portPart)
        else { return nil }
        self.init(address: address, port: port)
    }

    public var description: String {
        address.family == .inet ? "\(address):\(port)" : "[\(address)]:\(port)"
    }

    public static func < (l: SocketAddress, r: SocketAddress) -> Bool { (l.address, l.port) < (r.address, r.port) }
}

extension IPAddress {
    /// Why this address cannot be a virtual service's address, or nil when it can: the unspecified
    /// address, loopback, link-local (169.254.169.254, the cloud metadata service, among them),
    /// multicast and the IPv4 broadcast address. Binding one of these on every node would capture
    /// the node's own traffic (the CVE-2020-8554 class) or could never be reached.
    public var unusableAsVirtualAddress: String? {
        let bytes = self.bytes
        switch family {
        case .inet:
            if bytes == [0, 0, 0, 0] { return "the unspecified address" }
            if bytes[0] == 0 { return "in 0.0.0.0/8 (this network)" }
            if bytes[0] == 127 { return "a loopback address" }
            if bytes[0] == 169 && bytes[1] == 254 { return "a link-local address" }
            if bytes[0] >= 224 && bytes[0] <= 239 { return "a multicast address" }
            if bytes == [255, 255, 255, 255] { return "the broadcast address" }
            return nil
        case .inet6:
            if bytes.allSatisfy({ $0 == 0 }) { return "the unspecified address" }
            if bytes.dropLast().allSatisfy({ $0 == 0 }) && bytes[15] == 1 { return "a loopback address" }
            if bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80 { return "a link-local address" }
            if bytes[0] == 0xff { return "a multicast address" }
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff,
                let mapped = IPAddress(bytes: bytes[12..<16]), let reason = mapped.unusableAsVirtualAddress
            {
                return reason + " (IPv4-mapped)"
            }
            return nil
        }
    }
}
