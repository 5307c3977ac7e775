import IPVS
import Testing

/// Address text: accepted whole or refused whole, never read in part.
@Suite("IP address text")
struct IPAddressTests {
    @Test(
        "text that is not exactly an address is refused",
        arguments: [
            "10.96.0.10\u{0}evil", "10.96.0.10\u{0}", "\u{0}10.96.0.10", "fd00::1\u{0}:2", "10.96.0.10 ", " 10.96.0.10",
            "10.96.0.10\n", "", "10.96.0.256", "1.2.3", "fd00::1%eth0", "[fd00::1]", String(repeating: "0", count: 4096),
        ])
    func refused(_ text: String) {
        #expect(IPAddress(text) == nil, "\(text.debugDescription)")
    }

    @Test(
        "addresses are read exactly",
        arguments: [
            ("10.96.0.10", [10, 96, 0, 10] as [UInt8]),
            ("fd00::1", [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            ("::ffff:10.1.2.3", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]),
        ])
    func accepted(_ text: String, _ bytes: [UInt8]) {
        #expect(IPAddress(text)?.bytes == bytes)
    }
}

/// Which addresses may carry a virtual service: a hand-written table.
@Suite("virtual address classes")
struct VirtualAddressTests {
    @Test(
        "addresses a virtual service must not take",
        arguments: [
            "0.0.0.0", "0.1.2.3", "127.0.0.1", "127.255.0.9", "169.254.169.254", "169.254.0.1", "224.0.0.1", "239.255.255.250",
            "255.255.255.255", "::", "::1", "fe80::1", "febf::9", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
        ])
    func unusable(_ text: String) throws {
        let address = try #require(IPAddress(text))
        #expect(address.unusableAsVirtualAddress != nil, "\(text)")
    }

    @Test(
        "addresses a virtual service may take",
        arguments: [
            "10.96.0.10", "192.168.1.1", "172.16.0.1", "100.64.0.1", "8.8.8.8", "1.0.0.1", "223.255.255.254", "240.0.0.1",
            "fd00::10", "2001:db8::1", "fec0::1", "::ffff:10.1.2.3", "::2",
        ])
    func usable(_ text: String) throws {
        let address = try #require(IPAddress(text))
        #expect(address.unusableAsVirtualAddress == nil, "\(text)")
    }
}

@Suite("socket address text")
struct SocketAddressTests {
    @Test(
        "a port is decimal digits only",
        arguments: ["10.0.0.1:+80", "10.0.0.1:-80", "10.0.0.1: 80", "10.0.0.1:0x50", "10.0.0.1:8_0", "10.0.0.1:", "10.0.0.1:65536",
                    "10.0.0.1:000080", "[fd00::1]:+80", "10.0.0.1\u{0}:80", "10.0.0.1:80\u{0}"])
    func refused(_ text: String) {
        #expect(SocketAddress(text) == nil, "\(text.debugDescription)")
    }

    @Test("addresses and ports are read exactly", arguments: [("10.0.0.1:80", "10.0.0.1:80"), ("[fd00::1]:8080", "[fd00::1]:8080"), ("10.0.0.1:65535", "10.0.0.1:65535")])
    func accepted(_ text: String, _ printed: String) {
        #expect(SocketAddress(text)?.description == printed)
    }
}
