import CanaryCore
import Foundation
import IPVS
import IPVSNetlink
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The weight solver's effective share against traffic counted through the real kernel.
///
/// Each test programs one service with `NetlinkIPVS` (as the agent would: `DesiredTable.realize`,
/// then add the service and its destinations in order), opens TCP connections to the virtual
/// address from distinct client addresses (the clients are an AnyIP route on `lo`, the real
/// servers a route into a dummy interface: no backend answers, but IPVS schedules every SYN in
/// LOCAL_OUT and counts it in the destination's `conns`), and reads the counts from the dump.
///
/// - wrr and rr are deterministic: the counts must equal the `WeightedRoundRobinModel` replay of
///   the same programming, and over whole cycles the solver's share exactly.
/// - sh and mh are deterministic given the client addresses: every client must land where
///   `SourceHashingModel` / `MaglevHashingModel` (built from the dump's list order) say, and the
///   observed share must be within 3 binomial standard deviations (sqrt(p(1-p)/n)) of the solver's
///   effective share, which is a share of the hash space, not of these n clients.
@Suite("Solver shares through the real kernel", .serialized, .requiresIPVS)
struct SolverTrafficTests {
    // MARK: wrr

    /// 3 stable and 1 canary at 20 % solve to 4:4:4:3 (cycle 15), and the canary gets its
    /// share of the first 1,024 connections at once (1 + 68 × 3 = 205: the first pass at cw = 1
    /// left by the adds, then 68 whole cycles). With 2667:2667:2667:2000 the same adds leave that
    /// pass at cw = 1 (the first destination alone has gcd 2667, so mw = 1), then cw restarts at
    /// 2667 and the canary waits 2,001 connections: 1 of the first 1,024 on the kernel.
    @Test func wrrFirst1024Connections() throws {
        let service = Self.service(.weightedRoundRobin, virtualIndex: 1, stable: 3, canary: 1, basisPoints: 2000)
        let assignment = WeightSolver.solve(service)
        #expect(assignment.cycleLength == 15)
        let run = try Self.run(service, connections: 1024, clientBlock: 0)
        let expected = Self.wrrReplay(run.addOrderWeights, connections: 1024)
        #expect(run.countsInAddOrder == expected)
        let canary = run.canaryCount
        Self.report("wrr 3+1 at 20%, first 1024", run, effective: assignment.effectiveCanaryShare)
        #expect(canary == 205)
        #expect(abs(Double(canary) - 1024 * assignment.effectiveCanaryShare) <= 1)

        // The same service with the weights scaled up: the canary waits 2,001 connections.
        var scaled = try Self.entry(service)
        for index in scaled.destinations.indices {
            scaled.destinations[index].weight = service.canary.contains { $0.address == scaled.destinations[index].address } ? 2000 : 2667
        }
        let scaledRun = try Self.run(service, entry: scaled, connections: 1024, clientBlock: 4)
        #expect(scaledRun.countsInAddOrder == Self.wrrReplay(scaledRun.addOrderWeights, connections: 1024))
        Self.report("wrr 2667:2667:2667:2000, first 1024", scaledRun, effective: 2000.0 / 10001)
        #expect(scaledRun.canaryCount == 1)
    }

    /// Whole cycles give exactly the solver's share.
    @Test(arguments: [(9, 1, 1000, 2), (2, 3, 3333, 2)])
    func wrrWholeCycles(stable: Int, canary: Int, basisPoints: Int, virtualIndex: Int) throws {
        let service = Self.service(
            .weightedRoundRobin, virtualIndex: 10 + virtualIndex + stable, stable: stable, canary: canary,
            basisPoints: basisPoints)
        let assignment = WeightSolver.solve(service)
        let cycle = try #require(assignment.cycleLength)
        let connections = cycle * max(1, 256 / cycle)
        let run = try Self.run(service, connections: connections, clientBlock: 8 + stable)
        #expect(run.countsInAddOrder == Self.wrrReplay(run.addOrderWeights, connections: connections))
        Self.report("wrr \(stable)+\(canary) at \(service.canaryShare), \(connections) connections", run, effective: assignment.effectiveCanaryShare)
        #expect(Double(run.canaryCount) == Double(connections) * assignment.effectiveCanaryShare)
    }

    // MARK: rr

    @Test func rrFollowsTheEndpointCount() throws {
        let service = Self.service(.roundRobin, virtualIndex: 20, stable: 3, canary: 1, basisPoints: 1000)
        let assignment = WeightSolver.solve(service)
        let run = try Self.run(service, connections: 400, clientBlock: 20)
        Self.report("rr 3+1 at 10%", run, effective: assignment.effectiveCanaryShare)
        #expect(run.canaryCount == 100)
        #expect(Double(run.canaryCount) / 400 == assignment.effectiveCanaryShare)
    }

    // MARK: sh

    /// 9 stable, 1 draining stable and 1 canary at 10 %: every client lands where the model of the
    /// kernel's 256-bucket table and sh-fallback walk says.
    @Test func shClientsLandWhereTheModelSays() throws {
        let service = Self.service(
            .sourceHashing, virtualIndex: 30, stable: 9, canary: 1, basisPoints: 1000, drainingStable: 1)
        let assignment = WeightSolver.solve(service)
        let run = try Self.run(service, connections: 512, clientBlock: 24)
        Self.report("sh 9+1 (+1 draining) at 10%", run, effective: assignment.effectiveCanaryShare)
        let model = SourceHashingModel(weights: run.listOrder.map { Int($0.weight) })
        let predicted = run.clients.map { client in model.destination(of: client, fallback: true).map { run.listOrder[$0].address } }
        #expect(Self.mismatches(run, predicted) == [])
        let observed = Double(run.canaryCount) / Double(run.clients.count)
        #expect(abs(observed - assignment.effectiveCanaryShare) <= Self.threeSigma(assignment.effectiveCanaryShare, run.clients.count))
    }

    /// Starvation: 9 stable at 90 and 1 canary at 10, the canary added last. The six
    /// stable destinations the model gives no bucket get no connection.
    @Test func shWeightsPast256Starve() throws {
        let service = Self.service(.sourceHashing, virtualIndex: 31, stable: 9, canary: 1, basisPoints: 1000)
        var entry = try Self.entry(service)
        for index in entry.destinations.indices {
            entry.destinations[index].weight = service.canary.contains { $0.address == entry.destinations[index].address } ? 10 : 90
        }
        let run = try Self.run(service, entry: entry, connections: 512, clientBlock: 26)
        Self.report("sh 9 x 90 + 10", run, effective: 10.0 / 256)
        let model = SourceHashingModel(weights: run.listOrder.map { Int($0.weight) })
        #expect(model.heldBuckets.filter { $0 == 0 }.count == 6)
        let counts = run.listOrder.map { Int($0.stats?.traffic.connections ?? 0) }
        #expect(zip(counts, model.heldBuckets).allSatisfy { ($0 == 0) == ($1 == 0) }, "\(counts)")
        let predicted = run.clients.map { client in model.destination(of: client, fallback: true).map { run.listOrder[$0].address } }
        #expect(Self.mismatches(run, predicted) == [])
    }

    // MARK: mh

    /// The solver's mh weights and the naive ones (the target's basis points against the rest):
    /// every client lands where the model of the kernel's Maglev table says, and the solver's
    /// share is within sampling of its effective share.
    @Test(arguments: [(1, 1, 100, false), (1, 1, 100, true), (1, 1, 1000, true), (9, 1, 1000, false), (9, 1, 1000, true)])
    func mhClientsLandWhereTheModelSays(stable: Int, canary: Int, basisPoints: Int, naive: Bool) throws {
        let virtualIndex = 40 + stable + basisPoints / 100 + (naive ? 100 : 0)
        let service = Self.service(.maglevHashing, virtualIndex: virtualIndex, stable: stable, canary: canary, basisPoints: basisPoints)
        let assignment = WeightSolver.solve(service)
        var entry = try Self.entry(service)
        if naive {
            for index in entry.destinations.indices {
                let isCanary = service.canary.contains { $0.address == entry.destinations[index].address }
                entry.destinations[index].weight = Int32(isCanary ? basisPoints / canary : (10_000 - basisPoints) / stable)
            }
        }
        let run = try Self.run(service, entry: entry, connections: 512, clientBlock: 28 + (virtualIndex % 100) / 2)
        Self.report(
            "mh \(stable)+\(canary) at \(service.canaryShare)\(naive ? " naive weights" : "")", run,
            effective: assignment.effectiveCanaryShare)
        let model = MaglevHashingModel(
            destinations: run.listOrder.map { MaglevHashingModel.Destination(address: $0.address, weight: Int($0.weight)) })
        let predicted = run.clients.map { client in model.destination(of: client, fallback: true).map { run.listOrder[$0].address } }
        #expect(Self.mismatches(run, predicted) == [])
        if !naive {
            let observed = Double(run.canaryCount) / Double(run.clients.count)
            #expect(abs(observed - assignment.effectiveCanaryShare) <= Self.threeSigma(assignment.effectiveCanaryShare, run.clients.count))
        }
    }

    /// A destination set to weight 0 keeps its table entries from its last weight
    /// (`__ip_vs_update_dest` keeps `last_weight`); with mh-fallback its clients rehash to the
    /// others, exactly as the model's fallback walk says.
    @Test func mhDrainingDestinationKeepsItsEntries() throws {
        let service = Self.service(.maglevHashing, virtualIndex: 90, stable: 3, canary: 1, basisPoints: 2500)
        let entry = try Self.entry(service)
        var drained = entry.destinations[0]
        let lastWeight = Int(drained.weight)
        drained.weight = 0
        let run = try Self.run(
            service, entry: entry, then: [.editDestination(entry.service.key, drained)], connections: 512, clientBlock: 90)
        Self.report("mh 3+1 at 25%, one stable drained", run, effective: 0.25)
        let model = MaglevHashingModel(
            destinations: run.listOrder.map { destination in
                MaglevHashingModel.Destination(
                    address: destination.address, weight: Int(destination.weight),
                    lastWeight: destination.address == drained.address ? lastWeight : Int(destination.weight))
            })
        #expect(model.heldEntries[run.listOrder.firstIndex { $0.address == drained.address } ?? 0] > 0)
        let predicted = run.clients.map { client in model.destination(of: client, fallback: true).map { run.listOrder[$0].address } }
        #expect(Self.mismatches(run, predicted) == [])
        #expect(!run.destinationOfClient.contains(drained.address))
    }

    // MARK: Any number of groups

    /// A service of weighted groups: group g's endpoints on 10.250.(10 + g).0/24.
    static func groupService(
        _ scheduler: Scheduler, virtualIndex: Int, groups: [(weight: Int, live: Int)]
    ) -> DesiredService {
        let virtualAddress = SocketAddress(address: IPAddress(bytes: [10, 96, 77, UInt8(virtualIndex)])!, port: 80)
        return DesiredService(
            origin: .staticService("solver-traffic/groups-\(virtualIndex)"), key: .inet(.tcp, virtualAddress), scheduler: scheduler,
            backends: groups.enumerated().map { g, group in
                BackendGroup(
                    name: "g\(g)", weight: group.weight,
                    endpoints: (0..<group.live).map {
                        Endpoint(SocketAddress(address: IPAddress(bytes: [10, 250, UInt8(10 + g), UInt8($0 + 1)])!, port: 8080))
                    })
            })
    }

    /// Connections per group, from the kernel's per-destination counts.
    static func groupCounts(_ run: Run, _ service: DesiredService) -> [Int] {
        service.backends.map { group in
            let addresses = Set(group.endpoints.map(\.address))
            return run.listOrder.filter { addresses.contains($0.address) }.reduce(0) { $0 + Int($1.stats?.traffic.connections ?? 0) }
        }
    }

    /// Each group's counted share within 4 binomial standard deviations of its effective share.
    static func expectShares(_ label: String, _ run: Run, _ service: DesiredService, _ assignment: WeightAssignment) {
        let counts = groupCounts(run, service)
        let total = counts.reduce(0, +)
        #expect(total == run.clients.count, "every connection was scheduled")
        for (group, count) in zip(assignment.groups, counts) {
            let observed = Double(count) / Double(max(1, total))
            let sigma = (group.effective * (1 - group.effective) / Double(max(1, total))).squareRoot()
            #expect(abs(observed - group.effective) <= 4 * sigma + 1e-9, "\(label): \(group.name) got \(count) of \(total), effective \(group.effective)")
        }
        print("solver-traffic: \(label): counts \(counts) of \(total), effective \(assignment.groups.map(\.effective))")
    }

    /// 70/20/10 over 1, 2 and 1 endpoints, 2,000 connections from 2,000 client addresses: wrr
    /// exactly as the kernel model replays it, sh and mh each client where the model's table says;
    /// every group within 4σ of its effective share.
    @Test(arguments: [(Scheduler.weightedRoundRobin, 100), (.sourceHashing, 101), (.maglevHashing, 102)])
    func threeGroups(scheduler: Scheduler, virtualIndex: Int) throws {
        let service = Self.groupService(scheduler, virtualIndex: virtualIndex, groups: [(70, 1), (20, 2), (10, 1)])
        let assignment = WeightSolver.solve(service)
        let run = try Self.run(service, connections: 2000, clientBlock: 100 + (virtualIndex - 100) * 8)
        switch scheduler {
        case .weightedRoundRobin:
            #expect(run.countsInAddOrder == Self.wrrReplay(run.addOrderWeights, connections: 2000))
        case .sourceHashing:
            let model = SourceHashingModel(weights: run.listOrder.map { Int($0.weight) })
            let predicted = run.clients.map { client in model.destination(of: client, fallback: true).map { run.listOrder[$0].address } }
            #expect(Self.mismatches(run, predicted) == [])
        default:
            let model = MaglevHashingModel(
                destinations: run.listOrder.map { MaglevHashingModel.Destination(address: $0.address, weight: Int($0.weight)) })
            let predicted = run.clients.map { client in model.destination(of: client, fallback: true).map { run.listOrder[$0].address } }
            #expect(Self.mismatches(run, predicted) == [])
        }
        Self.expectShares("\(scheduler) 70/20/10", run, service, assignment)
    }

    /// 50/30/0/20 where the weight-0 group has an endpoint and the weight-20 group none: the
    /// weight-0 endpoint gets no connection, the others 62.5 % and 37.5 %.
    @Test func fourGroupsWithWeightZeroAndAnEmptyGroup() throws {
        let service = Self.groupService(.weightedRoundRobin, virtualIndex: 103, groups: [(50, 2), (30, 1), (0, 1), (20, 0)])
        let assignment = WeightSolver.solve(service)
        #expect(assignment.groups.map(\.effective) == [0.625, 0.375, 0, 0])
        let run = try Self.run(service, connections: 2000, clientBlock: 132)
        #expect(run.countsInAddOrder == Self.wrrReplay(run.addOrderWeights, connections: 2000))
        #expect(Self.groupCounts(run, service)[2] == 0, "weight 0 takes no new connection")
        Self.expectShares("wrr 50/30/0/20 (empty)", run, service, assignment)
    }

    // MARK: Harness

    /// What one run saw.
    struct Run {
        /// The service's destinations as the kernel lists them (most recently added first), with counts.
        var listOrder: [Destination]
        /// The weights in the order the destinations were added.
        var addOrderWeights: [Int]
        /// Connections per destination, in the order they were added.
        var countsInAddOrder: [Int]
        /// The clients, in the order they connected, and where the kernel sent each.
        var clients: [IPAddress]
        var destinationOfClient: [SocketAddress?]
        var canaryCount: Int
    }

    static func service(
        _ scheduler: Scheduler, virtualIndex: Int, stable: Int, canary: Int, basisPoints: Int, drainingStable: Int = 0
    ) -> DesiredService {
        func endpoint(_ group: UInt8, _ index: Int, _ state: Endpoint.State = .live) -> Endpoint {
            Endpoint(SocketAddress(address: IPAddress(bytes: [10, 250, group, UInt8(index + 1)])!, port: 8080), state: state)
        }
        let virtualAddress = SocketAddress(address: IPAddress(bytes: [10, 96, 77, UInt8(virtualIndex)])!, port: 80)
        return DesiredService(
            name: "solver-traffic/\(scheduler)-\(virtualIndex)", key: .inet(.tcp, virtualAddress), scheduler: scheduler,
            stable: (0..<stable).map { endpoint(1, $0) } + (0..<drainingStable).map { endpoint(1, stable + $0, .draining) },
            canary: (0..<canary).map { endpoint(2, $0) }, canaryShare: CanaryShare(basisPoints: basisPoints)!)
    }

    static func entry(_ service: DesiredService) throws -> ServiceEntry { DesiredTable.realize(service).entry }

    static func run(_ service: DesiredService, connections: Int, clientBlock: Int) throws -> Run {
        try run(service, entry: entry(service), connections: connections, clientBlock: clientBlock)
    }

    /// Programs the entry on an empty table, connects from `connections` clients of
    /// 198.18.0.0/15 starting at block `clientBlock` (256 addresses a block), and collects.
    static func run(
        _ service: DesiredService, entry: ServiceEntry, then changes: [IPVSOperation] = [], connections: Int, clientBlock: Int
    ) throws -> Run {
        return try KernelTable.exclusive { ipvs in
            try TrafficNetwork.prepare()
            defer { TrafficNetwork.tearDown() }
            let operations =
                [IPVSOperation.addService(entry.service)] + entry.destinations.map { .addDestination(entry.service.key, $0) }
                + changes
            for (operation, result) in zip(operations, try ipvs.apply(operations)) {
                guard case .success = result else {
                    Issue.record("\(operation): \(result)")
                    throw TrafficError.programming
                }
            }
            guard case .inet(_, let virtualAddress) = entry.service.key else { throw TrafficError.programming }
            let clients = (0..<connections).map { index in
                let value = UInt32(0xC612_0000) + UInt32(clientBlock * 256 + index + 1)
                return IPAddress(bytes: [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: value >> $0) })!
            }
            for client in clients { try TrafficNetwork.connect(from: client, to: virtualAddress) }

            let listed = try waitForCounts(ipvs, entry.service.key, total: connections)
            // /proc/net/ip_vs_conn is walked by position: entries of earlier tests expiring between
            // two reads shift it and skip some lines, so read again until every client is found.
            var destinationByClient: [IPAddress: SocketAddress] = [:]
            for _ in 0..<8 where destinationByClient.count < clients.count {
                for connection in try TrafficNetwork.connectionTable() where connection.virtual == virtualAddress {
                    destinationByClient[connection.client] = connection.destination
                }
            }
            let destinationOfClient = clients.map { destinationByClient[$0] }
            let addOrder = entry.destinations.map(\.address)
            let counts = addOrder.map { address in
                Int(listed.first { $0.address == address }?.stats?.traffic.connections ?? 0)
            }
            let canaryAddresses = Set(service.canary.map(\.address))
            let canaryCount = zip(addOrder, counts).filter { canaryAddresses.contains($0.0) }.map(\.1).reduce(0, +)
            #expect(listed.map(\.address) == addOrder.reversed(), "the kernel lists the last added first")
            return Run(
                listOrder: listed, addOrderWeights: entry.destinations.map { Int($0.weight) }, countsInAddOrder: counts,
                clients: clients, destinationOfClient: destinationOfClient, canaryCount: canaryCount)
        }
    }

    /// The dump's counters come from the kernel's estimator, which folds the per-CPU counters
    /// every 2 seconds: poll until they add up.
    static func waitForCounts(_ ipvs: NetlinkIPVS, _ key: ServiceKey, total: Int) throws -> [Destination] {
        var destinations: [Destination] = []
        for _ in 0..<40 {
            destinations = try ipvs.destinations(of: key)
            let counted = destinations.reduce(0) { $0 + Int($1.stats?.traffic.connections ?? 0) }
            if counted >= total { return destinations }
            usleep(500_000)
        }
        Issue.record("the kernel counted \(destinations.map { $0.stats?.traffic.connections ?? 0 }) of \(total) connections")
        return destinations
    }

    /// Destination counts of the kernel's wrr order for weights added in this order.
    static func wrrReplay(_ addOrderWeights: [Int], connections: Int) -> [Int] {
        var model = WeightedRoundRobinModel.programmed(addOrder: addOrderWeights)
        var counts = [Int](repeating: 0, count: addOrderWeights.count)
        // The model lists the last added first.
        for index in model.schedule(connections) { counts[addOrderWeights.count - 1 - index] += 1 }
        return counts
    }

    /// The clients the kernel sent elsewhere than predicted (at most 5 shown).
    static func mismatches(_ run: Run, _ predicted: [SocketAddress?]) -> [String] {
        zip(run.clients, zip(run.destinationOfClient, predicted)).filter { $0.1.0 != $0.1.1 }.prefix(5).map {
            "\($0.0): kernel \($0.1.0.map(\.description) ?? "none"), model \($0.1.1.map(\.description) ?? "none")"
        }
    }

    /// One line in the VM log: what the kernel did against what the solver said.
    static func report(_ label: String, _ run: Run, effective: Double) {
        let observed = Double(run.canaryCount) / Double(run.clients.count)
        print(
            "solver-traffic: \(label): canary \(run.canaryCount) of \(run.clients.count) (\(observed * 100)%), "
                + "solver's effective share \(effective * 100)%, counts \(run.listOrder.map { $0.stats?.traffic.connections ?? 0 }) "
                + "for weights \(run.listOrder.map(\.weight)) in list order")
    }

    static func threeSigma(_ share: Double, _ count: Int) -> Double {
        3 * (share * (1 - share) / Double(count)).squareRoot() + 1e-9
    }
}

enum TrafficError: Error {
    case programming
    case command(String)
    case socket(call: String, errno: Int32)
}

/// The network for the traffic tests, set up for each run and removed after it: clients on an
/// AnyIP route, real servers and virtual addresses routed into a dummy interface.
enum TrafficNetwork {
    static let interface = "canary-solver"
    static let clientRange = "198.18.0.0/15"

    static func prepare() throws {
        tearDown()
        try ip(["link", "add", interface, "type", "dummy"])
        try ip(["link", "set", interface, "up"])
        try ip(["route", "replace", "local", clientRange, "dev", "lo"])
        try ip(["route", "replace", "10.250.0.0/16", "dev", interface])
        try ip(["route", "replace", "10.96.77.0/24", "dev", interface])
    }

    /// Removes what `prepare` added (the interface takes its routes with it).
    static func tearDown() {
        _ = try? ip(["link", "del", interface])
        _ = try? ip(["route", "del", "local", clientRange, "dev", "lo"])
    }

    @discardableResult
    static func ip(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TrafficError.command("ip \(arguments.joined(separator: " ")): \(output)") }
        return output
    }

    /// Opens a TCP connection from `client` (any port) to `target` without waiting: the SYN leaves
    /// inside connect(), so IPVS has scheduled it when this returns. The socket is closed at once
    /// (a socket in SYN-SENT closes without a packet; the IPVS connection entry stays).
    static func connect(from client: IPAddress, to target: SocketAddress) throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard descriptor >= 0 else { throw TrafficError.socket(call: "socket", errno: errno) }
        defer { close(descriptor) }
        var source = sockaddr_in(address: client, port: 0)
        var destination = sockaddr_in(address: target.address, port: target.port)
        let bound = withUnsafePointer(to: &source) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw TrafficError.socket(call: "bind \(client)", errno: errno) }
        let connected = withUnsafePointer(to: &destination) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 || errno == EINPROGRESS else {
            throw TrafficError.socket(call: "connect \(client) -> \(target)", errno: errno)
        }
    }

    /// One line of /proc/net/ip_vs_conn.
    struct Connection {
        var client: IPAddress
        var virtual: SocketAddress
        var destination: SocketAddress
    }

    /// The kernel's IPVS connection entries: who each client was sent to.
    static func connectionTable() throws -> [Connection] {
        let text = try readProcFile("/proc/net/ip_vs_conn")
        return text.split(separator: "\n").dropFirst().compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 7, fields[0] == "TCP",
                let client = ipv4(fields[1]), let virtualAddress = ipv4(fields[3]), let virtualPort = UInt16(fields[4], radix: 16),
                let destination = ipv4(fields[5]), let destinationPort = UInt16(fields[6], radix: 16)
            else { return nil }
            return Connection(
                client: client, virtual: SocketAddress(address: virtualAddress, port: virtualPort),
                destination: SocketAddress(address: destination, port: destinationPort))
        }
    }

    /// A /proc file read to its end (its size reads as 0, and it comes a page at a time).
    static func readProcFile(_ path: String) throws -> String {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { throw TrafficError.socket(call: "open \(path)", errno: errno) }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4 << 20)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            guard count >= 0 else { throw TrafficError.socket(call: "read \(path)", errno: errno) }
            if count == 0 { break }
            bytes.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func ipv4(_ hex: Substring) -> IPAddress? {
        guard hex.count == 8, let value = UInt32(hex, radix: 16) else { return nil }
        return IPAddress(bytes: [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: value >> $0) })
    }
}

extension sockaddr_in {
    fileprivate init(address: IPAddress, port: UInt16) {
        self.init()
        sin_family = sa_family_t(AF_INET)
        sin_port = port.bigEndian
        sin_addr.s_addr = (address.ipv4Value ?? 0).bigEndian
    }
}
