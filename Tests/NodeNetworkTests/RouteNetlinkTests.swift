import CLibmnl
import IPVS
import Netlink
import Testing

@testable import NodeNetwork

#if canImport(Glibc)
import Glibc
#endif

/// RouteNetlink against the real kernel, each test in a network namespace of its own. The host
/// has veth but no dummy link type: address handling is tested on a veth; the dummy interface
/// itself in the VM bench.
@Suite struct RouteNetlinkTests {
    /// A veth pair v0/v1, both up, in the current (test) namespace.
    static func makeVeth() throws {
        try shell("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        try shell("ip", "link", "set", "v0", "up")
        try shell("ip", "link", "set", "v1", "up")
    }

    /// Two dummy interfaces, v0 and v1, up: the only kind whose addresses the agent touches.
    static func makeDummies() throws {
        for name in ["v0", "v1"] {
            try shell("ip", "link", "add", name, "type", "dummy")
            try shell("ip", "link", "set", name, "up")
        }
    }

    static func address(_ text: String) -> IPAddress { IPAddress(text)! }

    @Test(.requiresDummyInterfaces) func addsListsAndRemovesAddressesOfBothFamilies() throws {
        try NetworkNamespace.run {
            try Self.makeDummies()
            // A link-local address besides the kernel's own: never reported.
            try shell("ip", "addr", "add", "fe80::1234/64", "dev", "v0")
            let network = try RouteNetlink()
            #expect(try network.addresses(on: "v0") == [])

            let v4 = Self.address("10.96.0.10"), v6 = Self.address("fd00::10")
            try network.addAddress(v4, to: "v0")
            try network.addAddress(v6, to: "v0")
            #expect(try network.addresses(on: "v0") == [v4, v6])
            // Only on v0: v1 has none of them.
            #expect(try network.addresses(on: "v1") == [])

            // Host prefixes, and the IPv6 one usable at once (no duplicate address detection).
            let listing = try shell("ip", "-o", "addr", "show", "dev", "v0")
            #expect(listing.contains("inet 10.96.0.10/32"))
            let v6Line = listing.split(separator: "\n").first { $0.contains("fd00::10/128") }
            #expect(v6Line != nil)
            #expect(v6Line?.contains("tentative") == false)

            // Idempotent both ways.
            try network.addAddress(v4, to: "v0")
            try network.addAddress(v6, to: "v0")
            #expect(try network.addresses(on: "v0") == [v4, v6])
            try network.removeAddress(v4, from: "v0")
            #expect(try network.addresses(on: "v0") == [v6])
            try network.removeAddress(v4, from: "v0")
            try network.removeAddress(v6, from: "v0")
            try network.removeAddress(v6, from: "v0")
            #expect(try network.addresses(on: "v0") == [])
            #expect(try !shell("ip", "-o", "addr", "show", "dev", "v0").contains("fd00::10"))
        }
    }

    @Test(.requiresDummyInterfaces) func removesAnAddressPutThereWithAnotherPrefixLength() throws {
        try NetworkNamespace.run {
            try Self.makeDummies()
            try shell("ip", "addr", "add", "fd00::20/64", "dev", "v0", "nodad")
            try shell("ip", "addr", "add", "10.1.0.20/24", "dev", "v0")
            let network = try RouteNetlink()
            #expect(try network.addresses(on: "v0") == [Self.address("fd00::20"), Self.address("10.1.0.20")])
            try network.removeAddress(Self.address("fd00::20"), from: "v0")
            try network.removeAddress(Self.address("10.1.0.20"), from: "v0")
            #expect(try network.addresses(on: "v0") == [])
        }
    }

    @Test(.requiresDummyInterfaces) func listsHundredsOfAddressesAcrossDumpDatagrams() throws {
        try NetworkNamespace.run {
            try Self.makeDummies()
            let network = try RouteNetlink()
            var expected: Set<IPAddress> = []
            for index in 0..<300 {
                let v4 = Self.address("10.97.\(index / 200).\(index % 200 + 1)")
                let v6 = Self.address("fd00::1:\(String(index, radix: 16))")
                try network.addAddress(v4, to: "v0")
                try network.addAddress(v6, to: "v0")
                expected.formUnion([v4, v6])
            }
            #expect(try network.addresses(on: "v0") == expected)
            #expect(try network.addresses(on: "v0").count == 600)
        }
    }

    @Test(.requiresDummyInterfaces) func addsThousandsOfAddressesManyPerDatagramWithOneResultEach() throws {
        try NetworkNamespace.run {
            try Self.makeDummies()
            let network = try RouteNetlink()
            var addresses = (0..<2000).map { Self.address("10.98.\($0 / 250).\($0 % 250 + 1)") }
            addresses += (0..<500).map { Self.address("fd00::2:\(String($0, radix: 16))") }
            try network.addAddress(addresses[7], to: "v0")  // already there: a success
            let multicast = Self.address("ff02::1")  // refused by the kernel: one failure, the rest go on
            let results = try network.addAddresses(addresses + [multicast], to: "v0")
            #expect(results.count == addresses.count + 1)
            #expect(results.dropLast().allSatisfy { if case .success = $0 { true } else { false } })
            guard case .failure(let error) = results.last else {
                Issue.record("the multicast address was taken")
                return
            }
            #expect("\(error)".contains("ff02::1"), "\(error)")
            #expect(try network.addresses(on: "v0") == Set(addresses))
            #expect(throws: NodeNetworkError.self) { try network.addAddresses(addresses, to: "missing0") }
        }
    }

    @Test func aMissingInterfaceHasNoAddressesAndCannotTakeOne() throws {
        try NetworkNamespace.run {
            let network = try RouteNetlink()
            #expect(try network.addresses(on: "missing0") == [])
            try network.removeAddress(Self.address("10.0.0.1"), from: "missing0")
            try network.deleteInterface(named: "missing0")
            #expect(throws: NodeNetworkError.netlink(operation: "add address 10.0.0.1 to", subject: "missing0", errno: ENODEV)) {
                try network.addAddress(Self.address("10.0.0.1"), to: "missing0")
            }
        }
    }

    @Test func deletesOnlyDummyInterfaces() throws {
        try NetworkNamespace.run {
            try Self.makeVeth()
            let network = try RouteNetlink()
            #expect(throws: NodeNetworkError.interfaceKindMismatch(name: "v0", kind: "veth")) {
                try network.deleteInterface(named: "v0")
            }
            #expect(throws: NodeNetworkError.interfaceKindMismatch(name: "lo", kind: "none")) {
                try network.deleteInterface(named: "lo")
            }
            #expect(try shell("ip", "-o", "link", "show", "v0").contains("v0@v1"))
        }
    }

    @Test("the addresses of an interface that is not a dummy are never listed, added or removed")
    func leavesTheAddressesOfOtherKindsAlone() throws {
        try NetworkNamespace.run {
            try Self.makeVeth()
            _ = try shell("ip", "addr", "add", "192.0.2.7/24", "dev", "v0")
            let network = try RouteNetlink()
            let refusal = NodeNetworkError.interfaceKindMismatch(name: "v0", kind: "veth")
            #expect(throws: refusal) { try network.addresses(on: "v0") }
            #expect(throws: refusal) { try network.addAddress(Self.address("10.0.0.1"), to: "v0") }
            #expect(throws: refusal) { try network.addAddresses([Self.address("10.0.0.1")], to: "v0") }
            // An IPv4 delete matches whatever the prefix: without the check the node's address would go.
            #expect(throws: refusal) { try network.removeAddress(Self.address("192.0.2.7"), from: "v0") }
            let left = try shell("ip", "-o", "addr", "show", "dev", "v0")
            #expect(left.contains("192.0.2.7/24"), "\(left)")
            #expect(!left.contains("10.0.0.1"), "\(left)")
        }
    }

    @Test func refusesToAdoptAnInterfaceThatIsNotADummy() throws {
        try NetworkNamespace.run {
            try Self.makeVeth()
            #expect(throws: NodeNetworkError.interfaceKindMismatch(name: "v0", kind: "veth")) {
                try RouteNetlink().ensureDummyInterface(named: "v0")
            }
            // Left as it was.
            #expect(try shell("ip", "-d", "-o", "link", "show", "v0").contains("veth"))
        }
    }

    @Test(arguments: ["", "sixteen-bytes-xx", "a/b", "a:b", "a b"])
    func rejectsNamesTheKernelWouldNot(_ name: String) throws {
        try NetworkNamespace.run {
            let network = try RouteNetlink()
            #expect(throws: NodeNetworkError.self) { try network.ensureDummyInterface(named: name) }
            #expect(throws: NodeNetworkError.self) { try network.addresses(on: name) }
        }
    }

    /// Agrees with `ip link add … type dummy` on this kernel: a dummy made and up, or
    /// `.interfaceTypeUnsupported` where ip cannot make one either (the host).
    @Test func createsADummyInterfaceOrSaysTheKernelHasNone() throws {
        try NetworkNamespace.run {
            let network = try RouteNetlink()
            let outcome = Result { () throws(NodeNetworkError) in try network.ensureDummyInterface(named: "canary0") }
            if case .failure(let error) = outcome {
                #expect(error == .interfaceTypeUnsupported("canary0"))
                let oracle = try SpawnCommandRunner().run("ip", ["link", "add", "oracle0", "type", "dummy"], input: "")
                #expect(oracle.status != 0)
                return
            }
            let link = try shell("ip", "-d", "-o", "link", "show", "canary0")
            #expect(link.contains("dummy"))
            #expect(link.contains(",UP"))
        }
    }

    @Test(.requiresDummyInterfaces)
    func ensuresTheDummyInterfaceIdempotentlyAndDeletesItWithItsAddresses() throws {
        try NetworkNamespace.run {
            let network = try RouteNetlink()
            try network.ensureDummyInterface(named: "canary0")
            try network.ensureDummyInterface(named: "canary0")
            #expect(try shell("ip", "-o", "link", "show", "type", "dummy").split(separator: "\n").count == 1)

            // Set down by someone: brought up again. The IPv4 address stays; IPv6 addresses go with
            // the link unless keep_addr_on_down is set, and the agent's repair adds them back.
            let v4 = Self.address("10.96.0.1"), v6 = Self.address("fd00:96::1")
            try network.addAddress(v4, to: "canary0")
            try network.addAddress(v6, to: "canary0")
            #expect(try network.addresses(on: "canary0") == [v4, v6])
            try shell("ip", "link", "set", "canary0", "down")
            try network.ensureDummyInterface(named: "canary0")
            #expect(try shell("ip", "-o", "link", "show", "canary0").contains(",UP"))
            #expect(try network.addresses(on: "canary0").contains(v4))
            try network.addAddress(v6, to: "canary0")
            #expect(try network.addresses(on: "canary0") == [v4, v6])

            // The virtual addresses are local: the kernel accepts packets to them.
            #expect(try shell("ip", "route", "get", "10.96.0.1").hasPrefix("local 10.96.0.1"))
            #expect(try shell("ip", "-6", "route", "get", "fd00:96::1").hasPrefix("local fd00:96::1"))

            try network.deleteInterface(named: "canary0")
            #expect(try network.addresses(on: "canary0") == [])
            #expect(try shell("ip", "-o", "link", "show", "type", "dummy").isEmpty)
            #expect(try !shell("ip", "-o", "addr", "show").contains("10.96.0.1"))
            try network.deleteInterface(named: "canary0")
        }
    }
}

/// The parser of what the kernel sends, on bytes made by hand: lengths are checked, never trusted.
@Suite struct RouteParsingTests {
    static func message(type: UInt16, payload: [UInt8]) -> [UInt8] {
        let length = UInt32(16 + payload.count)
        var bytes = withUnsafeBytes(of: length) { Array($0) } + withUnsafeBytes(of: type) { Array($0) }
        bytes += [0, 0] + [1, 0, 0, 0] + [0, 0, 0, 0] + payload
        return bytes + [UInt8](repeating: 0, count: (4 - bytes.count % 4) % 4)
    }

    static func attribute(_ type: UInt16, _ value: [UInt8]) -> [UInt8] {
        let bytes = withUnsafeBytes(of: UInt16(4 + value.count)) { Array($0) } + withUnsafeBytes(of: type) { Array($0) } + value
        return bytes + [UInt8](repeating: 0, count: (4 - bytes.count % 4) % 4)
    }

    @Test func readsAnIPv4AddressPreferringTheLocalAttribute() throws {
        let fixed: [UInt8] = [UInt8(AF_INET), 32, 0, 0] + withUnsafeBytes(of: Int32(7)) { Array($0) }
        let payload = fixed + Self.attribute(UInt16(IFA_ADDRESS), [10, 0, 0, 2]) + Self.attribute(UInt16(IFA_LOCAL), [10, 0, 0, 1])
        let messages = try RouteMessage.split(Self.message(type: UInt16(RTM_NEWADDR), payload: payload)[...])
        #expect(messages.count == 1)
        let address = try AddressMessage(messages[0])
        #expect(address.interfaceIndex == 7)
        #expect(address.prefixLength == 32)
        #expect(address.address == IPAddress("10.0.0.1"))
    }

    @Test func rejectsAMessageLongerThanTheDatagram() {
        var bytes = Self.message(type: UInt16(RTM_NEWADDR), payload: [0, 0, 0, 0, 0, 0, 0, 0])
        bytes[0] = 200
        #expect(throws: NetlinkError.self) { try RouteMessage.split(bytes[...]) }
    }

    @Test func rejectsAnAttributeRunningPastItsMessage() throws {
        let fixed: [UInt8] = [UInt8(AF_INET6), 128, 0, 0, 1, 0, 0, 0]
        let broken = [UInt8](withUnsafeBytes(of: UInt16(40)) { Array($0) }) + [1, 0] + [UInt8](repeating: 0, count: 16)
        let messages = try RouteMessage.split(Self.message(type: UInt16(RTM_NEWADDR), payload: fixed + broken)[...])
        #expect(throws: NetlinkError.self) { try AddressMessage(messages[0]) }
    }

    @Test func rejectsAnAddressOfTheWrongSizeForItsFamily() throws {
        let fixed: [UInt8] = [UInt8(AF_INET6), 128, 0, 0, 1, 0, 0, 0]
        let messages = try RouteMessage.split(
            Self.message(type: UInt16(RTM_NEWADDR), payload: fixed + Self.attribute(UInt16(IFA_ADDRESS), [1, 2, 3, 4]))[...])
        #expect(throws: NetlinkError.self) { try AddressMessage(messages[0]) }
    }

    @Test func rejectsAShortFixedHeader() throws {
        let messages = try RouteMessage.split(Self.message(type: UInt16(RTM_NEWLINK), payload: [0, 0, 0, 0])[...])
        #expect(throws: NetlinkError.self) { try LinkMessage(messages[0]) }
    }

    @Test func readsALinkWithItsKind() throws {
        let fixed: [UInt8] = [0, 0, 1, 0] + withUnsafeBytes(of: Int32(3)) { Array($0) } + withUnsafeBytes(of: UInt32(1)) { Array($0) } + [0, 0, 0, 0]
        let info = Self.attribute(UInt16(IFLA_INFO_KIND), Array("dummy".utf8) + [0])
        let payload = fixed + Self.attribute(UInt16(IFLA_IFNAME), Array("canary0".utf8) + [0]) + Self.attribute(UInt16(IFLA_LINKINFO), info)
        let link = try LinkMessage(try RouteMessage.split(Self.message(type: UInt16(RTM_NEWLINK), payload: payload)[...])[0])
        #expect(link.index == 3)
        #expect(link.flags == 1)
        #expect(link.name == "canary0")
        #expect(link.kind == "dummy")
    }

    @Test(arguments: [("fe80::1", true), ("febf::1", true), ("fec0::1", false), ("fd00::1", false), ("10.0.0.1", false)])
    func recognisesIPv6LinkLocalAddresses(_ text: String, _ linkLocal: Bool) {
        #expect(IPAddress(text)!.isIPv6LinkLocal == linkLocal)
    }
}
