import IPVS
import Testing

/// The model's sizes matter at 10,000 services × 10 destinations, held in several copies (desired,
/// planned, as applied): a destination keeps the kernel's counters out of line.
@Suite("Model layout")
struct ModelLayoutTests {
    @Test("a destination is small, and its counters survive a copy and compare by value")
    func destinationLayout() {
        #expect(MemoryLayout<Destination>.stride <= 56, "\(MemoryLayout<Destination>.stride) bytes")
        var stats = DestinationStats()
        stats.activeConnections = 3
        stats.traffic.connections = 42
        let address = SocketAddress("10.9.1.2:80")!
        let counted = Destination(address: address, weight: 5, stats: stats)
        var copy = counted
        #expect(copy == Destination(address: address, weight: 5, stats: stats))
        #expect(copy.stats?.traffic.connections == 42)
        copy.stats?.activeConnections = 0
        #expect(counted.stats?.activeConnections == 3)
        #expect(copy != counted)
        copy.stats = nil
        #expect(copy == Destination(address: address, weight: 5))
        #expect(Set([counted, Destination(address: address, weight: 5, stats: stats)]).count == 1)
    }
}
