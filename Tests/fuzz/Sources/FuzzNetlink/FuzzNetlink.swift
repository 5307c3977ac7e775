import FuzzDriver
import IPVS
import Netlink

@testable import IPVSNetlink

/// One input: a datagram as the kernel might send it. Every parser it reaches must return or throw
/// a typed error: never trap, never read out of bounds (ASan-free builds still trap on Swift's own
/// bounds checks), never hang.
// Also libFuzzer's own entry point, for a debug build (whose executables link libFuzzer's `main`).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzNetlink(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let start else { return 0 }
    let datagram = Array(UnsafeBufferPointer(start: start, count: count))
    // The in-place ack loop, for this socket's port and for any.
    for port: UInt32 in [0, 4242] {
        _ = try? NetlinkSocket.acknowledgements(in: datagram[...], portID: port) { _, _ in }
    }
    // The copying path: split, then each message as an ack, a service and a destination (after
    // the 4-byte generic netlink header).
    guard let messages = try? NetlinkMessage.split(datagram[...]) else { return 0 }
    for message in messages {
        _ = try? NetlinkAcknowledgement(message)
        let body = message.payload.dropFirst(4)
        _ = try? IPVSDecoder.service(fromMessagePayload: body)
        for family in [IPAddress.Family.inet, .inet6] {
            _ = try? IPVSDecoder.destination(fromMessagePayload: body, serviceFamily: family)
        }
    }
    return 0
}

@main
enum Main {
    static func main() { runFuzzer(fuzzNetlink) }
}
