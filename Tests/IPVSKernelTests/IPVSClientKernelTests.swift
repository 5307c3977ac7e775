import Foundation
import IPVS
import IPVSNetlink
import Testing

extension Result where Success == Void {
    /// The error, or nil for a success.
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

private func socket(_ text: String) -> SocketAddress { SocketAddress(text)! }

/// Service keys of every kind the client must handle: IPv4 and IPv6, TCP, UDP, SCTP, firewall marks.
let kernelTestKeys: [ServiceKey] = [
    .inet(.tcp, socket("10.96.0.1:80")),
    .inet(.udp, socket("10.96.0.2:53")),
    .inet(.sctp, socket("10.96.0.3:3868")),
    .inet(.tcp, socket("[fd00::10]:443")),
    .inet(.udp, socket("[fd00::11]:53")),
    .inet(.sctp, socket("[fd00::12]:3868")),
    .firewallMark(7, .inet),
    .firewallMark(8, .inet6),
]

/// Destinations of the key's family.
func kernelTestDestinations(for key: ServiceKey, count: Int, forwarding: ForwardingMethod = .masquerade) -> [Destination] {
    (1...count).map { index in
        let address = key.family == .inet ? socket("10.244.1.\(index):8080") : socket("[fd00:1::\(index)]:8080")
        return Destination(address: address, forwarding: forwarding, weight: Int32(index))
    }
}

@Suite("IPVS client against the real kernel", .requiresIPVS, .serialized)
struct IPVSClientKernelTests {
    @Test("version and connection table size")
    func info() throws {
        try KernelTable.exclusive { ipvs in
            let info = try ipvs.info()
            #expect(info.version == "1.2.1")
            #expect(info.connectionTableSize > 0)
        }
    }

    @Test(
        "add, dump, edit and delete a service and its destinations",
        arguments: kernelTestKeys, [Scheduler.roundRobin, .weightedRoundRobin, .sourceHashing, .maglevHashing, .leastConnection])
    func lifecycle(key: ServiceKey, scheduler: Scheduler) throws {
        try KernelTable.exclusive { ipvs in
            let flags: ServiceFlags = scheduler == .sourceHashing || scheduler == .maglevHashing ? [.shFallback] : []
            let service = VirtualService(key: key, scheduler: scheduler, flags: flags)
            let destinations = kernelTestDestinations(for: key, count: 3)
            let results = try ipvs.apply([.addService(service)] + destinations.map { .addDestination(key, $0) })
            #expect(results.allSatisfy { (try? $0.get()) != nil }, "\(results)")

            let dumped = try #require(try ipvs.service(key))
            #expect(dumped.service.hasSameConfiguration(as: service), "\(dumped.service) vs \(service)")
            #expect(dumped.service.flags.contains(.hashed))
            // The kernel lists the most recently added destination first.
            #expect(dumped.destinations.map(\.address) == destinations.reversed().map(\.address))
            for destination in destinations {
                let match = try #require(dumped.destinations.first { $0.address == destination.address })
                #expect(match.hasSameConfiguration(as: destination))
                #expect(match.stats == DestinationStats())
            }
            #expect(try ipvs.dumpTable().map(\.service.key) == [key])

            // Scheduler and persistence change in place; a weight changes in place.
            var edited = service
            edited.scheduler = scheduler == .weightedRoundRobin ? .sourceHashing : .weightedRoundRobin
            edited.flags = edited.scheduler == .sourceHashing ? [.shFallback, .shPort, .persistent] : [.persistent]
            edited.timeout = 600
            edited.netmask = key.family == .inet ? 0xFFFF_FF00 : 64
            var reweighted = destinations[1]
            reweighted.weight = 0
            try ipvs.apply(.editService(edited))
            try ipvs.apply(.editDestination(key, reweighted))
            let afterEdit = try #require(try ipvs.service(key))
            #expect(afterEdit.service.hasSameConfiguration(as: edited), "\(afterEdit.service) vs \(edited)")
            #expect(afterEdit.destinations.first { $0.address == reweighted.address }?.weight == 0)
            #expect(afterEdit.destinations.count == 3)

            try ipvs.apply(.deleteDestination(key, destinations[0].address))
            #expect(try ipvs.destinations(of: key).map(\.address).sorted() == [destinations[1].address, destinations[2].address].sorted())
            try ipvs.apply(.deleteService(key))
            #expect(try ipvs.service(key) == nil)
            #expect(try ipvs.services().isEmpty)
        }
    }

    @Test("every forwarding method, with thresholds", arguments: [ForwardingMethod.masquerade, .directRoute, .tunnel], [IPAddress.Family.inet, .inet6])
    func forwardingMethods(method: ForwardingMethod, family: IPAddress.Family) throws {
        try KernelTable.exclusive { ipvs in
            let key: ServiceKey = .inet(.tcp, family == .inet ? socket("10.96.1.1:80") : socket("[fd00::20]:80"))
            var destination = kernelTestDestinations(for: key, count: 1, forwarding: method)[0]
            destination.upperThreshold = 100
            destination.lowerThreshold = 10
            try ipvs.apply(.addService(VirtualService(key: key, scheduler: .weightedRoundRobin)))
            try ipvs.apply(.addDestination(key, destination))
            let dumped = try #require(try ipvs.destinations(of: key).first)
            #expect(dumped.forwarding == method)
            #expect(dumped.upperThreshold == 100 && dumped.lowerThreshold == 10)
            #expect(dumped.hasSameConfiguration(as: destination))
        }
    }

    @Test("one-packet scheduling and persistence are read back")
    func flagsAndPersistence() throws {
        try KernelTable.exclusive { ipvs in
            let udp = VirtualService(key: .inet(.udp, socket("10.96.2.1:53")), scheduler: .roundRobin, flags: [.onePacket])
            let sticky = VirtualService(
                key: .inet(.tcp, socket("10.96.2.2:443")), scheduler: .weightedRoundRobin, flags: [.persistent],
                timeout: 10_800, netmask: 0xFFFF_0000)
            let sticky6 = VirtualService(
                key: .inet(.tcp, socket("[fd00::30]:443")), scheduler: .roundRobin, flags: [.persistent], timeout: 60, netmask: 48)
            for result in try ipvs.apply([.addService(udp), .addService(sticky), .addService(sticky6)]) { try result.get() }
            let table = comparable(try ipvs.dumpTable())
            #expect(table[udp.key] == ComparableEntry(ServiceEntry(service: udp)))
            #expect(table[sticky.key] == ComparableEntry(ServiceEntry(service: sticky)))
            #expect(table[sticky6.key] == ComparableEntry(ServiceEntry(service: sticky6)))
        }
    }

    @Test("timeouts are read and set")
    func timeouts() throws {
        try KernelTable.exclusive { ipvs in
            let original = try ipvs.timeouts()
            defer { try? ipvs.setTimeouts(original) }
            #expect(original.tcp > 0 && original.tcpFin > 0 && original.udp > 0)
            try ipvs.setTimeouts(IPVSTimeouts(tcp: 901, tcpFin: 121, udp: 301))
            #expect(try ipvs.timeouts() == IPVSTimeouts(tcp: 901, tcpFin: 121, udp: 301))
            // Zero leaves a timeout as it is.
            try ipvs.setTimeouts(IPVSTimeouts(tcp: 0, tcpFin: 0, udp: 302))
            #expect(try ipvs.timeouts() == IPVSTimeouts(tcp: 901, tcpFin: 121, udp: 302))
        }
    }

    @Test("flush empties the table")
    func flush() throws {
        try KernelTable.exclusive { ipvs in
            for key in kernelTestKeys {
                try ipvs.apply(.addService(VirtualService(key: key, scheduler: .roundRobin)))
            }
            #expect(try ipvs.services().count == kernelTestKeys.count)
            try ipvs.flush()
            #expect(try ipvs.dumpTable().isEmpty)
        }
    }

    @Test("errors name the service or destination they are about")
    func errors() throws {
        try KernelTable.exclusive { ipvs in
            let key: ServiceKey = .inet(.tcp, socket("10.96.3.1:80"))
            let missing: ServiceKey = .inet(.tcp, socket("10.96.3.2:80"))
            let service = VirtualService(key: key, scheduler: .weightedRoundRobin)
            let destination = Destination(address: socket("10.244.3.1:80"))
            try ipvs.apply(.addService(service))
            try ipvs.apply(.addDestination(key, destination))

            #expect(throws: IPVSError.serviceExists(key)) { try ipvs.apply(.addService(service)) }
            #expect(throws: IPVSError.serviceNotFound(missing)) { try ipvs.apply(.deleteService(missing)) }
            #expect(throws: IPVSError.serviceNotFound(missing)) {
                try ipvs.apply(.editService(VirtualService(key: missing, scheduler: .roundRobin)))
            }
            #expect(throws: IPVSError.serviceNotFound(missing)) { try ipvs.apply(.addDestination(missing, destination)) }
            #expect(throws: IPVSError.destinationExists(key, destination.address)) {
                try ipvs.apply(.addDestination(key, destination))
            }
            let absent = socket("10.244.3.9:80")
            #expect(throws: IPVSError.destinationNotFound(key, absent)) { try ipvs.apply(.deleteDestination(key, absent)) }
            #expect(throws: IPVSError.destinationNotFound(key, absent)) {
                try ipvs.apply(.editDestination(key, Destination(address: absent)))
            }
            let unknown = VirtualService(key: missing, scheduler: "nosuch")
            #expect(throws: IPVSError.unknownScheduler("nosuch", missing)) { try ipvs.apply(.addService(unknown)) }
            #expect(throws: IPVSError.unknownScheduler("nosuch", key)) {
                try ipvs.apply(.editService(VirtualService(key: key, scheduler: "nosuch")))
            }
            // An IPv6 persistence prefix past 128 is refused as an invalid argument, said about that service.
            let badMask = VirtualService(
                key: .inet(.tcp, socket("[fd00::3]:80")), scheduler: .roundRobin, flags: [.persistent], timeout: 60, netmask: 200)
            let error = try #require(throws: IPVSError.self) { try ipvs.apply(.addService(badMask)) }
            guard case .invalidArgument(let operation, let subject) = error else {
                Issue.record("expected invalidArgument, got \(error)")
                return
            }
            #expect(operation == "add-service")
            #expect(subject.contains("TCP [fd00::3]:80"), "\(error)")
            // The readable text of an error says what it is about.
            #expect("\(IPVSError.destinationNotFound(key, absent))" == "destination 10.244.3.9:80 of service TCP 10.96.3.1:80 does not exist")
        }
    }

    @Test("one failure in a batch hides none of the other results")
    func batchResults() throws {
        try KernelTable.exclusive { ipvs in
            let first = VirtualService(key: .inet(.tcp, socket("10.96.4.1:80")), scheduler: .roundRobin)
            let second = VirtualService(key: .inet(.tcp, socket("10.96.4.2:80")), scheduler: .roundRobin)
            let destination = Destination(address: socket("10.244.4.1:80"))
            let results = try ipvs.apply([
                .addService(first), .addService(first), .addDestination(second.key, destination), .addService(second),
                .addDestination(second.key, destination), .addService(VirtualService(key: .inet(.udp, socket("10.96.4.3:53")), scheduler: "nosuch")),
            ])
            #expect(results.count == 6)
            #expect((try? results[0].get()) != nil)
            #expect(results[1].failure == .serviceExists(first.key))
            #expect(results[2].failure == .serviceNotFound(second.key))
            #expect((try? results[3].get()) != nil)
            #expect((try? results[4].get()) != nil)
            #expect(results[5].failure == .unknownScheduler("nosuch", .inet(.udp, socket("10.96.4.3:53"))))
            #expect(try ipvs.destinations(of: second.key).map(\.address) == [destination.address])
        }
    }

    @Test("a batch of 1,000 services × 10 destinations goes in one call")
    func largeBatch() throws {
        try KernelTable.exclusive { ipvs in
            var operations: [IPVSOperation] = []
            var expected: [ServiceEntry] = []
            for index in 0..<1_000 {
                let key: ServiceKey = .inet(.tcp, socket("10.97.\(index / 250).\(index % 250 + 1):80"))
                let service = VirtualService(key: key, scheduler: .weightedRoundRobin)
                let destinations = (1...10).map { Destination(address: socket("10.245.\(index / 250).\(index % 250 + 1):\(8000 + $0)"), weight: Int32($0)) }
                operations.append(.addService(service))
                operations += destinations.map { .addDestination(key, $0) }
                expected.append(ServiceEntry(service: service, destinations: destinations))
            }
            let results = try ipvs.apply(operations)
            #expect(results.count == 11_000)
            #expect(results.filter { (try? $0.get()) == nil }.count == 0)
            let dumped = try ipvs.dumpTable()
            #expect(dumped.count == 1_000)
            #expect(dumped.reduce(0) { $0 + $1.destinations.count } == 10_000)
            #expect(comparable(dumped) == comparable(expected))
        }
    }
}

extension ServiceEntry {
    /// The entry with every destination's thresholds at 0.
    var withoutThresholds: ServiceEntry {
        var copy = self
        for index in copy.destinations.indices {
            copy.destinations[index].upperThreshold = 0
            copy.destinations[index].lowerThreshold = 0
        }
        return copy
    }
}

@Suite("ipvsadm and canary-agent read each other's tables", .requiresIPVS, .serialized)
struct IPVSAdmCrossCheckTests {
    /// A varied table: every key kind, scheduler, flag, persistence and forwarding method.
    static func variedTable() -> [ServiceEntry] {
        let schedulers: [Scheduler] = [.roundRobin, .weightedRoundRobin, .sourceHashing, .maglevHashing, .leastConnection, .weightedLeastConnection]
        let methods: [ForwardingMethod] = [.masquerade, .directRoute, .tunnel]
        return kernelTestKeys.enumerated().map { index, key in
            let scheduler = schedulers[index % schedulers.count]
            var flags: ServiceFlags = []
            if scheduler == .sourceHashing { flags = [.shFallback, .shPort] }
            if scheduler == .maglevHashing { flags = [.shFallback] }
            if key.family == .inet, case .inet(.udp, _) = key { flags.insert(.onePacket) }
            var service = VirtualService(key: key, scheduler: scheduler, flags: flags)
            if index % 3 == 0 {
                service.flags.insert(.persistent)
                service.timeout = UInt32(300 + index)
                service.netmask = key.family == .inet ? 0xFFFF_FF00 : 64
            }
            var destinations = kernelTestDestinations(for: key, count: 1 + index % 4, forwarding: methods[index % methods.count])
            for position in destinations.indices {
                // Direct routing and tunnels cannot change the port: ipvsadm gives such a destination
                // the service's port, so the table does too.
                if destinations[position].forwarding != .masquerade, case .inet(_, let virtual) = key {
                    destinations[position].address.port = virtual.port
                }
                destinations[position].weight = Int32(position * 7 % 5)
                if position == 0 && index % 2 == 0 {
                    destinations[position].upperThreshold = 500
                    destinations[position].lowerThreshold = 50
                }
            }
            return ServiceEntry(service: service, destinations: destinations)
        }
    }

    @Test("what the client programs, ipvsadm -Sn reads back exactly")
    func ipvsadmReadsOurTable() throws {
        try KernelTable.exclusive { ipvs in
            let table = Self.variedTable()
            var operations: [IPVSOperation] = []
            for entry in table {
                operations.append(.addService(entry.service))
                operations += entry.destinations.map { .addDestination(entry.service.key, $0) }
            }
            for result in try ipvs.apply(operations) { try result.get() }
            let saved = try run(ipvsadmPath, ["-Sn"])
            let theirs = try IPVSAdmRules.parse(saved).mapValues(ComparableEntry.init)
            // ipvsadm -S writes no thresholds: those are compared with `ipvsadm -Ln --thresholds` below.
            let ours = comparable(table.map(\.withoutThresholds))
            #expect(theirs == ours, "ipvsadm -Sn:\n\(saved)\nexpected:\n\(ours.values.map(\.description).sorted().joined(separator: "\n"))")

            // "  -> ADDRESS:PORT  UTHRESHOLD LTHRESHOLD ACTIVECONN INACTCONN", per destination of each service.
            let listing = try run(ipvsadmPath, ["-Ln", "--thresholds"])
            let rows: [[String]] = listing.split(separator: "\n").map { line in line.split(separator: " ").map(String.init) }
            let thresholdRows: [[String]] = rows.filter { row in row.count >= 4 && row[0] == "->" }
            let listed: [String] = thresholdRows.map { row in "\(row[1]) \(row[2]) \(row[3])" }.sorted()
            let programmed: [String] = table.flatMap { entry in
                entry.destinations.map { destination in
                    "\(destination.address) \(destination.upperThreshold) \(destination.lowerThreshold)"
                }
            }.sorted()
            #expect(listed == programmed, "ipvsadm -Ln --thresholds:\n\(listing)")
        }
    }

    @Test("what ipvsadm -R programs, the client's dump reads back exactly")
    func clientReadsIpvsadmTable() throws {
        try KernelTable.exclusive { ipvs in
            let table = Self.variedTable()
            let rules = IPVSAdmRules.render(table)
            _ = try run(ipvsadmPath, ["-R"], input: rules)
            let ours = comparable(try ipvs.dumpTable())
            let expected = comparable(table)
            for key in Set(ours.keys).union(expected.keys) {
                #expect(ours[key] == expected[key], "ipvsadm -R:\n\(rules)")
            }
        }
    }
}
