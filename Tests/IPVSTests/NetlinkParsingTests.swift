import IPVS
import Netlink
import Testing

@testable import IPVSNetlink

/// Builds netlink bytes by hand, the way the kernel lays them out.
private enum Bytes {
    static func u16(_ value: UInt16) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }
    static func u32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }
    static func u64(_ value: UInt64) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }

    static func attribute(_ type: UInt16, _ payload: [UInt8], nested: Bool = false) -> [UInt8] {
        let length = 4 + payload.count
        let padding = [UInt8](repeating: 0, count: align4(length) - length)
        return u16(UInt16(length)) + u16(type | (nested ? 0x8000 : 0)) + payload + padding
    }

    static func message(type: UInt16, flags: UInt16 = 0, sequence: UInt32, portID: UInt32 = 0, _ payload: [UInt8]) -> [UInt8] {
        u32(UInt32(16 + payload.count)) + u16(type) + u16(flags) + u32(sequence) + u32(portID) + payload
    }

    /// An IPVS_CMD_NEW_SERVICE dump message body (genl header + attributes) for TCP 10.0.0.1:80, wrr.
    static func serviceBody(extra: [UInt8] = [], schedulerAttribute: [UInt8]? = nil) -> [UInt8] {
        let service =
            attribute(1, u16(2))  // AF_INET
            + attribute(2, u16(6))  // TCP
            + attribute(3, [10, 0, 0, 1] + [UInt8](repeating: 0, count: 12))
            + attribute(4, u16(UInt16(80).bigEndian))
            + (schedulerAttribute ?? attribute(6, Array("wrr".utf8) + [0]))
            + attribute(7, u32(0x2) + u32(0xFFFF_FFFF))
            + attribute(8, u32(0))
            + attribute(9, u32(UInt32(0xFFFF_FFFF).bigEndian))
            + attribute(12, attribute(1, u64(42)) + attribute(4, u64(4096)), nested: true)
            + extra
        return [IPVSCommand.newService.rawValue, 1, 0, 0] + attribute(1, service, nested: true)
    }
}

@Suite("Netlink parsing checks every length")
struct NetlinkParsingTests {
    @Test("a well-formed service dump message decodes")
    func decodesService() throws {
        let body = Bytes.serviceBody()
        let service = try IPVSDecoder.service(fromMessagePayload: body[4...])
        #expect(service.key == .inet(.tcp, SocketAddress("10.0.0.1:80")!))
        #expect(service.scheduler == .weightedRoundRobin)
        #expect(service.flags == .hashed)
        #expect(service.netmask == 0xFFFF_FFFF)
        #expect(service.stats?.connections == 42)
        #expect(service.stats?.inBytes == 4096)
    }

    @Test("messages are split by their lengths, and the last attribute of a type wins")
    func splitsDatagrams() throws {
        let first = Bytes.message(type: 2, sequence: 7, Bytes.u32(0) + [UInt8](repeating: 0, count: 16))
        let second = Bytes.message(type: 3, sequence: 8, Bytes.u32(0))
        let messages = try NetlinkMessage.split((first + second)[...])
        #expect(messages.map(\.type) == [2, 3])
        #expect(messages.map(\.sequence) == [7, 8])
        let attributes = try NetlinkAttributes(Bytes.attribute(5, Bytes.u32(1)) + Bytes.attribute(5, Bytes.u32(2)))
        #expect(try attributes.uint32(5) == 2)
    }

    @Test(
        "truncated or inconsistent input is an error, never a crash",
        arguments: [
            Array(Bytes.serviceBody().prefix(4)),  // genl header only: no service attribute
            Array(Bytes.serviceBody().dropLast(3)),  // cut inside the last attribute
            Bytes.serviceBody(extra: Bytes.attribute(7, Bytes.u32(1))),  // flags of 4 bytes, 8 needed
            Bytes.serviceBody(extra: Bytes.u16(200) + Bytes.u16(1)),  // attribute longer than what is left
            Bytes.serviceBody(extra: Bytes.u16(2) + Bytes.u16(1)),  // attribute shorter than its header
            Bytes.serviceBody(extra: Bytes.attribute(1, [2])),  // family of 1 byte
            Bytes.serviceBody(extra: Bytes.attribute(1, Bytes.u16(99))),  // unknown family
            Bytes.serviceBody(extra: Bytes.attribute(3, [10, 0])),  // address of 2 bytes
            Bytes.serviceBody(extra: Bytes.attribute(12, [1, 2, 3], nested: true)),  // nested run that is cut
            Bytes.serviceBody(extra: Bytes.attribute(12, Bytes.attribute(1, Bytes.u32(1)), nested: true)),  // u64 of 4 bytes
            Bytes.serviceBody(extra: Bytes.attribute(2, Bytes.u16(99))),  // unknown protocol
        ])
    func rejectsMalformed(body: [UInt8]) {
        #expect(throws: IPVSError.self) { try IPVSDecoder.service(fromMessagePayload: body[min(4, body.count)...]) }
    }

    @Test("a service without a scheduler is an error that names the service")
    func missingScheduler() {
        let body = Bytes.serviceBody(schedulerAttribute: [])
        #expect(throws: IPVSError.malformedMessage("service TCP 10.0.0.1:80 without scheduler")) {
            try IPVSDecoder.service(fromMessagePayload: body[4...])
        }
    }

    @Test("a header claiming more bytes than the datagram holds is an error")
    func rejectsShortDatagram() {
        let message = Bytes.message(type: 2, sequence: 1, Bytes.u32(0))
        var lying = message
        lying[0] = 200
        #expect(throws: IPVSError.self) { try NetlinkMessage.split(lying[...]) }
        #expect(throws: IPVSError.self) { try NetlinkMessage.split((message + [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17])[...]) }
        #expect(throws: IPVSError.self) {
            try NetlinkAcknowledgement(NetlinkMessage(type: 2, flags: 0, sequence: 1, portID: 0, payload: [0, 0]))
        }
    }

    @Test("an error ack carries the errno and the kernel's extended-ack text")
    func acknowledgements() throws {
        let original = Bytes.message(type: 30, sequence: 9, [])
        let text = Bytes.attribute(1, Array("Attribute failed policy validation".utf8) + [0])
        let payload = Bytes.u32(UInt32(bitPattern: -22)) + original + text
        let ack = try NetlinkAcknowledgement(
            NetlinkMessage(type: 2, flags: NetlinkAcknowledgement.ackTLVsFlag | NetlinkAcknowledgement.cappedFlag, sequence: 9, portID: 1, payload: payload))
        #expect(ack.errorCode == 22)
        #expect(ack.message == "Attribute failed policy validation")
        let success = try NetlinkAcknowledgement(NetlinkMessage(type: 2, flags: 0, sequence: 9, portID: 1, payload: Bytes.u32(0) + original))
        #expect(success == NetlinkAcknowledgement(errorCode: 0))
    }
}

@Suite("Requests are encoded as the kernel reads them")
struct NetlinkEncodingTests {
    static let services: [VirtualService] = [
        VirtualService(key: .inet(.tcp, SocketAddress("10.96.0.10:80")!), scheduler: .sourceHashing, flags: [.shFallback]),
        VirtualService(
            key: .inet(.udp, SocketAddress("[fd00::1]:53")!), scheduler: .weightedRoundRobin, flags: [.persistent, .onePacket],
            timeout: 300, netmask: 64),
        VirtualService(key: .inet(.sctp, SocketAddress("192.168.1.1:3868")!), scheduler: .maglevHashing, flags: [.persistent], timeout: 60, netmask: 0xFFFF_FF00),
        VirtualService(key: .firewallMark(42, .inet6), scheduler: .roundRobin),
    ]

    @Test("a service survives encoding with libmnl and decoding with the checked parser", arguments: services)
    func serviceRoundTrip(service: VirtualService) throws {
        let batch = NetlinkBatch(limit: 4096)
        #expect(batch.append(type: 30, flags: 5, sequence: 77) {
            $0.genericNetlinkHeader(command: IPVSCommand.newService.rawValue)
            IPVSEncoder.write(.addService(service), into: $0)
        })
        let messages = try batch.withBytes { bytes throws(IPVSError) in try NetlinkMessage.split(Array(bytes)[...]) }
        let message = try #require(messages.first)
        #expect(messages.count == 1)
        #expect(message.type == 30 && message.flags == 5 && message.sequence == 77)
        #expect(message.payload[0] == IPVSCommand.newService.rawValue)
        let decoded = try IPVSDecoder.service(fromMessagePayload: message.payload[4...])
        #expect(decoded.hasSameConfiguration(as: service))
        #expect(decoded.flags == service.flags)
    }

    @Test("a destination survives encoding and decoding", arguments: [ForwardingMethod.masquerade, .directRoute, .tunnel])
    func destinationRoundTrip(method: ForwardingMethod) throws {
        let key: ServiceKey = .inet(.tcp, SocketAddress("10.96.0.10:80")!)
        let destination = Destination(address: SocketAddress("[fd00::7]:8443")!, forwarding: method, weight: 17, upperThreshold: 9, lowerThreshold: 3)
        let batch = NetlinkBatch(limit: 4096)
        batch.append(type: 30, flags: 5, sequence: 1) {
            $0.genericNetlinkHeader(command: IPVSCommand.newDestination.rawValue)
            IPVSEncoder.write(.addDestination(key, destination), into: $0)
        }
        let messages = try batch.withBytes { bytes throws(IPVSError) in try NetlinkMessage.split(Array(bytes)[...]) }
        let decoded = try IPVSDecoder.destination(fromMessagePayload: messages[0].payload[4...], serviceFamily: .inet)
        #expect(decoded.hasSameConfiguration(as: destination))
    }

    @Test("a full batch holds back the message that overflowed and starts the next batch with it")
    func batchOverflow() throws {
        let batch = NetlinkBatch(limit: 1024)
        let key: ServiceKey = .inet(.tcp, SocketAddress("10.96.0.10:80")!)
        var accepted: [UInt32] = []
        var sequence: UInt32 = 0
        while batch.append(type: 30, flags: 5, sequence: sequence, {
            $0.genericNetlinkHeader(command: 5)
            IPVSEncoder.write(.addDestination(key, Destination(address: SocketAddress("10.1.1.1:80")!)), into: $0)
        }) {
            accepted.append(sequence)
            sequence += 1
        }
        #expect(batch.sequences == accepted)
        let sizes = try batch.withBytes { bytes throws(IPVSError) in bytes.count }
        #expect(sizes <= 1024)
        let parsed = try batch.withBytes { bytes throws(IPVSError) in try NetlinkMessage.split(Array(bytes)[...]) }
        #expect(parsed.map(\.sequence) == accepted)
        batch.reset()
        #expect(batch.sequences == [sequence])
        let carried = try batch.withBytes { bytes throws(IPVSError) in try NetlinkMessage.split(Array(bytes)[...]) }
        #expect(carried.map(\.sequence) == [sequence])
    }
}

@Suite("Without IPVS in the kernel")
struct NoIPVSTests {
    /// This host's kernel has no IPVS: the client says so in one readable line.
    @Test(
        "the client reports IPVS missing as one typed, readable error",
        .enabled(if: (try? NetlinkIPVS.probe().get()) == nil, "this kernel has IPVS; the missing-family path is tested on the host"))
    func familyMissing() {
        #expect(throws: IPVSError.notAvailable) { try NetlinkIPVS() }
        #expect(
            "\(IPVSError.notAvailable)"
                == "IPVS is not available in this kernel: load the ip_vs module or use a kernel built with CONFIG_IP_VS")
    }
}

/// The in-place ack loop (`GenericNetlinkSocket.acknowledgements`) on good and bad datagrams: every length
/// is checked before a read; only messages for this socket (or the kernel's port 0) are handed on.
@Suite("Netlink acks parsed in place")
struct AcknowledgementParsingTests {
    static let port: UInt32 = 4242

    static func parse(_ datagram: [UInt8]) throws(NetlinkError) -> [(UInt32, Int32?)] {
        var seen: [(UInt32, Int32?)] = []
        try GenericNetlinkSocket.acknowledgements(in: datagram[...], portID: port) { sequence, failure in
            seen.append((sequence, failure?.errorCode))
        }
        return seen
    }

    static func ack(sequence: UInt32, error: Int32 = 0, port: UInt32 = port) -> [UInt8] {
        // NLMSG_ERROR (2): the errno (negative) and the request's header (16 bytes, NETLINK_CAP_ACK).
        Bytes.message(type: 2, sequence: sequence, portID: port, Bytes.u32(UInt32(bitPattern: -error)) + [UInt8](repeating: 0, count: 16))
    }

    @Test("successes and errors in one datagram, each with its sequence; another socket's acks skipped")
    func goodDatagram() throws {
        let datagram = Self.ack(sequence: 7) + Self.ack(sequence: 8, error: 17) + Self.ack(sequence: 9, port: 99) + Self.ack(sequence: 10, port: 0)
        let seen = try Self.parse(datagram)
        #expect(seen.map(\.0) == [7, 8, 10])
        #expect(seen.map(\.1) == [nil, 17, nil])
    }

    @Test(
        "a datagram that lies about its lengths is refused, never read past its end",
        arguments: [
            // Length larger than the datagram.
            Bytes.u32(200) + Bytes.u16(2) + Bytes.u16(0) + Bytes.u32(1) + Bytes.u32(4242) + Bytes.u32(0),
            // Length smaller than a header.
            Bytes.u32(8) + Bytes.u16(2) + Bytes.u16(0) + Bytes.u32(1) + Bytes.u32(4242) + Bytes.u32(0),
            // An error message with no room for its errno.
            Bytes.u32(16) + Bytes.u16(2) + Bytes.u16(0) + Bytes.u32(1) + Bytes.u32(4242),
            // A good ack, then a second message cut short.
            AcknowledgementParsingTests.ack(sequence: 1) + Bytes.u32(64) + Bytes.u16(2) + Bytes.u16(0) + Bytes.u32(2) + Bytes.u32(4242),
        ])
    func lyingLengths(_ datagram: [UInt8]) {
        #expect(throws: NetlinkError.self) { _ = try Self.parse(datagram) }
    }

    @Test("trailing bytes shorter than a header are ignored, as the kernel pads")
    func shortTail() throws {
        #expect(try Self.parse(Self.ack(sequence: 3) + [0, 0, 0]).map(\.0) == [3])
        #expect(try Self.parse([]).isEmpty)
    }
}
