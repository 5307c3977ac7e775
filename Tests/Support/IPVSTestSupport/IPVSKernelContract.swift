import IPVS
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What every `IPVSKernel` must do, as the kernel does it: one list of cases, run on the host against
/// `InMemoryIPVS` (Tests/IPVSTests/IPVSKernelContractTests.swift) and in the VM against
/// `NetlinkIPVS` on Debian's kernel (Tests/IPVSKernelTests/IPVSKernelContractKernelTests.swift), so
/// that the fake every planner and reconciler test runs on is proven to behave like the kernel,
/// errors included. Where they differ, the fake is fixed, never the case.
///
/// Each case starts from an empty table. The service order of `dumpTable` is the kernel's hash
/// order, so cases compare services by key; destinations are compared in list order.
public struct IPVSKernelContractCase: Sendable, CustomTestStringConvertible {
    public let name: String
    let body: @Sendable (any IPVSKernel) throws -> Void

    public var testDescription: String { name }

    /// Runs the case; a difference is recorded as a test issue.
    public func run(on kernel: any IPVSKernel) throws { try body(kernel) }
}

public enum IPVSKernelContract {
    static func socket(_ text: String) -> SocketAddress { SocketAddress(text)! }

    static let v4: ServiceKey = .inet(.tcp, socket("10.96.50.1:80"))
    static let v6: ServiceKey = .inet(.udp, socket("[fd00::50]:53"))
    static let mark4: ServiceKey = .firewallMark(50, .inet)
    static let mark6: ServiceKey = .firewallMark(50, .inet6)
    static let missing: ServiceKey = .inet(.tcp, socket("10.96.50.99:80"))

    /// A destination of the key's family.
    static func destination(_ key: ServiceKey, _ index: Int, port: UInt16 = 8080, weight: Int32 = 1) -> Destination {
        let text = key.family == .inet ? "10.244.50.\(index):\(port)" : "[fd00:50::\(index)]:\(port)"
        return Destination(address: socket(text), weight: weight)
    }

    /// The one result of one operation: nil for a success.
    static func failure(_ kernel: any IPVSKernel, _ operation: IPVSOperation) throws -> IPVSError? {
        let results = try kernel.apply([operation])
        #expect(results.count == 1)
        guard case .failure(let error) = results.first else { return nil }
        return error
    }

    /// Applies operations that must all succeed.
    static func succeed(_ kernel: any IPVSKernel, _ operations: [IPVSOperation], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let results = try kernel.apply(operations)
        #expect(results.count == operations.count, sourceLocation: sourceLocation)
        for (operation, result) in zip(operations, results) {
            if case .failure(let error) = result { Issue.record("\(operation): \(error)", sourceLocation: sourceLocation) }
        }
    }

    /// The service as the kernel holds one it was given: `hashed` added, counters at zero.
    static func held(_ service: VirtualService) -> VirtualService {
        var held = service
        held.flags = service.flags.intersection(.configurable).union(.hashed)
        held.stats = TrafficStats()
        return held
    }

    /// The destination as the kernel holds a new one: counters at zero.
    static func held(_ destination: Destination) -> Destination {
        var held = destination
        held.stats = DestinationStats()
        return held
    }

    /// Whether reading it back gives exactly `expected`, through `service(_:)` and `dumpTable()` alike.
    static func expectEntry(
        _ kernel: any IPVSKernel, _ expected: ServiceEntry, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let key = expected.service.key
        #expect(try kernel.service(key) == expected, sourceLocation: sourceLocation)
        #expect(try kernel.dumpTable().first { $0.service.key == key } == expected, sourceLocation: sourceLocation)
    }

    public static let cases: [IPVSKernelContractCase] = [
        IPVSKernelContractCase(name: "add, edit and delete a service of each kind") { (kernel: any IPVSKernel) throws in
            for key in [v4, v6, mark4, mark6] {
                let service = VirtualService(key: key, scheduler: .weightedRoundRobin)
                try succeed(kernel, [.addService(service)])
                try expectEntry(kernel, ServiceEntry(service: held(service)))
                let edited = VirtualService(key: key, scheduler: .sourceHashing, flags: [.shFallback])
                try succeed(kernel, [.editService(edited)])
                try expectEntry(kernel, ServiceEntry(service: held(edited)))
            }
            // The IPv4 and IPv6 services of one firewall mark are two services.
            #expect(Set(try kernel.dumpTable().map(\.service.key)) == [v4, v6, mark4, mark6])
            for key in [v4, v6, mark4, mark6] { try succeed(kernel, [.deleteService(key)]) }
            #expect(try kernel.dumpTable().isEmpty)
            #expect(try kernel.service(v4) == nil)
        },

        IPVSKernelContractCase(name: "destinations: the most recently added is listed first; an edit keeps its place") { (kernel: any IPVSKernel) throws in
            for key in [v4, v6, mark4] {
                let service = VirtualService(key: key, scheduler: .weightedRoundRobin)
                let (a, b, c) = (destination(key, 1), destination(key, 2), destination(key, 3))
                try succeed(kernel, [.addService(service), .addDestination(key, a), .addDestination(key, b), .addDestination(key, c)])
                try expectEntry(kernel, ServiceEntry(service: held(service), destinations: [c, b, a].map(held)))

                var edited = b
                edited.weight = 7
                edited.upperThreshold = 100
                edited.lowerThreshold = 10
                try succeed(kernel, [.editDestination(key, edited)])
                try expectEntry(kernel, ServiceEntry(service: held(service), destinations: [c, edited, a].map(held)))

                // Deleted and added again: at the head, as any new one.
                try succeed(kernel, [.deleteDestination(key, a.address), .addDestination(key, a)])
                try expectEntry(kernel, ServiceEntry(service: held(service), destinations: [a, c, edited].map(held)))

                // The same address on another port is another destination.
                let otherPort = destination(key, 1, port: 9090)
                try succeed(kernel, [.addDestination(key, otherPort)])
                #expect(try kernel.service(key)?.destinations.map(\.address) == [otherPort.address, a.address, c.address, b.address])

                // Editing the service keeps its destinations and their order.
                try succeed(kernel, [.editService(VirtualService(key: key, scheduler: .roundRobin))])
                #expect(try kernel.service(key)?.destinations.map(\.address) == [otherPort.address, a.address, c.address, b.address])

                // A service deleted and added again has none.
                try succeed(kernel, [.deleteService(key), .addService(service)])
                try expectEntry(kernel, ServiceEntry(service: held(service)))
            }
        },

        IPVSKernelContractCase(name: "forwarding methods, thresholds and weights from 0 to Int32.max round trip") { (kernel: any IPVSKernel) throws in
            let service = VirtualService(key: v4, scheduler: .weightedRoundRobin)
            var destinations: [Destination] = []
            for (index, method) in [ForwardingMethod.masquerade, .directRoute, .tunnel].enumerated() {
                var destination = destination(v4, index + 1, weight: [0, 1, Int32.max][index])
                destination.forwarding = method
                destination.upperThreshold = UInt32(100 * index)
                destination.lowerThreshold = UInt32(10 * index)
                destinations.append(destination)
            }
            try succeed(kernel, [.addService(service)] + destinations.map { .addDestination(v4, $0) })
            try expectEntry(kernel, ServiceEntry(service: held(service), destinations: destinations.reversed().map(held)))
        },

        IPVSKernelContractCase(name: "persistence: flags, timeout and netmask round trip, and are kept as given when not persistent") { (kernel: any IPVSKernel) throws in
            let services = [
                VirtualService(key: v4, scheduler: .weightedRoundRobin, flags: [.persistent], timeout: 10_800, netmask: 0xFFFF_FF00),
                VirtualService(key: v6, scheduler: .roundRobin, flags: [.persistent], timeout: 60, netmask: 64),
                VirtualService(key: mark4, scheduler: .roundRobin, flags: [.persistent], timeout: 1, netmask: 0),
                VirtualService(key: mark6, scheduler: .roundRobin, flags: [], timeout: 300, netmask: 1),
                VirtualService(key: .inet(.tcp, socket("10.96.50.2:80")), scheduler: .roundRobin, timeout: 600, netmask: 0xFFFF_0000),
            ]
            try succeed(kernel, services.map { .addService($0) })
            for service in services { try expectEntry(kernel, ServiceEntry(service: held(service))) }
            // Persistence off again.
            let plain = VirtualService(key: v4, scheduler: .weightedRoundRobin)
            try succeed(kernel, [.editService(plain)])
            try expectEntry(kernel, ServiceEntry(service: held(plain)))
        },

        IPVSKernelContractCase(name: "a timeout is kept in 32-bit jiffies: above 2^32 / HZ seconds it reads back wrapped (HZ 250)") { (kernel: any IPVSKernel) throws in
            // Debian's kernel has CONFIG_HZ=250: 17,179,869 s is the longest timeout that survives.
            for (index, (given, held)) in [(UInt32(17_179_869), UInt32(17_179_869)), (17_179_870, 0), (4_000_000_000, 14_270_349)].enumerated() {
                let key: ServiceKey = .inet(.tcp, socket("10.96.52.\(index + 1):80"))
                try succeed(kernel, [.addService(VirtualService(key: key, scheduler: .roundRobin, flags: [.persistent], timeout: given))])
                #expect(try kernel.service(key)?.service.timeout == held, "timeout \(given)")
                try succeed(kernel, [.editService(VirtualService(key: key, scheduler: .roundRobin, timeout: given))])
                #expect(try kernel.service(key)?.service.timeout == held, "timeout \(given) after an edit")
            }
        },

        IPVSKernelContractCase(name: "scheduler flags round trip: sh-fallback, sh-port, flag-3, one-packet; hashed is the kernel's") { (kernel: any IPVSKernel) throws in
            let services = [
                VirtualService(key: v4, scheduler: .sourceHashing, flags: [.shFallback, .shPort]),
                VirtualService(key: v6, scheduler: .roundRobin, flags: [.onePacket]),
                VirtualService(key: mark4, scheduler: .maglevHashing, flags: [.shFallback, .schedulerFlag3]),
                // A caller's `hashed` is not sent: the kernel sets it on every service it holds.
                VirtualService(key: mark6, scheduler: .sourceHashing, flags: [.hashed, .persistent, .shFallback], timeout: 30),
            ]
            try succeed(kernel, services.map { .addService($0) })
            for service in services { try expectEntry(kernel, ServiceEntry(service: held(service))) }
            let cleared = VirtualService(key: v4, scheduler: .sourceHashing)
            try succeed(kernel, [.editService(cleared)])
            #expect(try kernel.service(v4)?.service.flags == .hashed)
        },

        IPVSKernelContractCase(name: "every scheduler the fake knows is one the kernel has, none (no scheduler) included") { (kernel: any IPVSKernel) throws in
            #expect(InMemoryIPVS.knownSchedulers.contains("none"))
            for (index, scheduler) in InMemoryIPVS.knownSchedulers.sorted().enumerated() {
                let key: ServiceKey = .inet(.tcp, socket("10.96.51.\(index + 1):80"))
                let service = VirtualService(key: key, scheduler: scheduler)
                try succeed(kernel, [.addService(service)])
                #expect(try kernel.service(key)?.service.scheduler == scheduler)
            }
        },

        IPVSKernelContractCase(name: "adding a service or destination that exists") { (kernel: any IPVSKernel) throws in
            let service = VirtualService(key: v4, scheduler: .weightedRoundRobin)
            let a = destination(v4, 1)
            try succeed(kernel, [.addService(service), .addDestination(v4, a)])
            #expect(try failure(kernel, .addService(service)) == .serviceExists(v4))
            // The service is found before the scheduler is looked up.
            #expect(try failure(kernel, .addService(VirtualService(key: v4, scheduler: "nosuch"))) == .serviceExists(v4))
            var again = a
            again.weight = 9
            #expect(try failure(kernel, .addDestination(v4, again)) == .destinationExists(v4, a.address))
            // Nothing changed.
            try expectEntry(kernel, ServiceEntry(service: held(service), destinations: [held(a)]))
        },

        IPVSKernelContractCase(name: "every operation on a missing service") { (kernel: any IPVSKernel) throws in
            let a = destination(missing, 1)
            #expect(try failure(kernel, .editService(VirtualService(key: missing, scheduler: .roundRobin))) == .serviceNotFound(missing))
            // The service is looked up before the scheduler.
            #expect(try failure(kernel, .editService(VirtualService(key: missing, scheduler: "nosuch"))) == .serviceNotFound(missing))
            #expect(try failure(kernel, .deleteService(missing)) == .serviceNotFound(missing))
            #expect(try failure(kernel, .addDestination(missing, a)) == .serviceNotFound(missing))
            #expect(try failure(kernel, .editDestination(missing, a)) == .serviceNotFound(missing))
            #expect(try failure(kernel, .deleteDestination(missing, a.address)) == .serviceNotFound(missing))
            // Before the destination's own checks, too.
            var negative = a
            negative.weight = -1
            #expect(try failure(kernel, .addDestination(missing, negative)) == .serviceNotFound(missing))
            #expect(try kernel.service(missing) == nil)
            #expect(try kernel.dumpTable().isEmpty)
        },

        IPVSKernelContractCase(name: "editing or deleting a missing destination") { (kernel: any IPVSKernel) throws in
            let a = destination(v6, 1)
            try succeed(kernel, [.addService(VirtualService(key: v6, scheduler: .roundRobin)), .addDestination(v6, a)])
            let absent = destination(v6, 9)
            #expect(try failure(kernel, .editDestination(v6, absent)) == .destinationNotFound(v6, absent.address))
            #expect(try failure(kernel, .deleteDestination(v6, absent.address)) == .destinationNotFound(v6, absent.address))
            let otherPort = destination(v6, 1, port: 9)
            #expect(try failure(kernel, .deleteDestination(v6, otherPort.address)) == .destinationNotFound(v6, otherPort.address))
            #expect(try kernel.service(v6)?.destinations == [held(a)])
        },

        IPVSKernelContractCase(name: "a scheduler the kernel has no module for") { (kernel: any IPVSKernel) throws in
            #expect(try failure(kernel, .addService(VirtualService(key: v4, scheduler: "nosuch"))) == .unknownScheduler("nosuch", v4))
            #expect(try failure(kernel, .addService(VirtualService(key: v6, scheduler: ""))) == .unknownScheduler("", v6))
            #expect(try kernel.dumpTable().isEmpty)
            let service = VirtualService(key: v4, scheduler: .weightedRoundRobin, flags: [.persistent], timeout: 60)
            try succeed(kernel, [.addService(service)])
            #expect(try failure(kernel, .editService(VirtualService(key: v4, scheduler: "nosuch"))) == .unknownScheduler("nosuch", v4))
            // The failed edit changed nothing.
            try expectEntry(kernel, ServiceEntry(service: held(service)))
        },

        IPVSKernelContractCase(name: "a scheduler name longer than the kernel's 15 bytes is an invalid argument, whatever the service") { (kernel: any IPVSKernel) throws in
            let long: Scheduler = "weighted-round-robin"
            #expect(
                try failure(kernel, .addService(VirtualService(key: v4, scheduler: long)))
                    == .invalidArgument(operation: "add-service", subject: "service \(v4)"))
            #expect(
                try failure(kernel, .editService(VirtualService(key: missing, scheduler: long)))
                    == .invalidArgument(operation: "edit-service", subject: "service \(missing)"))
            #expect(try kernel.dumpTable().isEmpty)
        },

        IPVSKernelContractCase(name: "an IPv6 persistence prefix outside 1...128 is an invalid argument") { (kernel: any IPVSKernel) throws in
            for netmask: UInt32 in [0, 129, 200] {
                let service = VirtualService(key: v6, scheduler: .roundRobin, flags: [.persistent], timeout: 60, netmask: netmask)
                #expect(try failure(kernel, .addService(service)) == .invalidArgument(operation: "add-service", subject: "service \(v6)"))
                var plain = service
                plain.flags = []
                #expect(try failure(kernel, .addService(plain)) == .invalidArgument(operation: "add-service", subject: "service \(v6)"))
            }
            #expect(try kernel.dumpTable().isEmpty)
            try succeed(kernel, [.addService(VirtualService(key: mark6, scheduler: .roundRobin))])
            #expect(
                try failure(kernel, .editService(VirtualService(key: mark6, scheduler: .roundRobin, netmask: 0)))
                    == .invalidArgument(operation: "edit-service", subject: "service \(mark6)"))
            // The scheduler is looked up first.
            #expect(
                try failure(kernel, .editService(VirtualService(key: mark6, scheduler: "nosuch", netmask: 0)))
                    == .unknownScheduler("nosuch", mark6))
        },

        IPVSKernelContractCase(name: "a negative weight or a lower threshold above the upper one is out of range") { (kernel: any IPVSKernel) throws in
            let a = destination(v4, 1)
            try succeed(kernel, [.addService(VirtualService(key: v4, scheduler: .weightedRoundRobin)), .addDestination(v4, a)])
            func outOfRange(_ operation: IPVSOperation, _ destination: Destination) -> IPVSError {
                .kernel(errno: ERANGE, operation: operation.kind, subject: "destination \(destination.address) of service \(v4)")
            }
            var negative = destination(v4, 2)
            negative.weight = -1
            var inverted = destination(v4, 3)
            inverted.upperThreshold = 5
            inverted.lowerThreshold = 10
            var noUpper = destination(v4, 4)
            noUpper.lowerThreshold = 10
            for refused in [negative, inverted, noUpper] {
                let add = IPVSOperation.addDestination(v4, refused)
                #expect(try failure(kernel, add) == outOfRange(add, refused))
            }
            // On an edit, before the destination is looked up: a missing one is out of range too.
            var negativeEdit = a
            negativeEdit.weight = -5
            let edit = IPVSOperation.editDestination(v4, negativeEdit)
            #expect(try failure(kernel, edit) == outOfRange(edit, negativeEdit))
            let editMissing = IPVSOperation.editDestination(v4, negative)
            #expect(try failure(kernel, editMissing) == outOfRange(editMissing, negative))
            // And before the duplicate check.
            var duplicate = a
            duplicate.weight = -1
            let addDuplicate = IPVSOperation.addDestination(v4, duplicate)
            #expect(try failure(kernel, addDuplicate) == outOfRange(addDuplicate, duplicate))
            #expect(try kernel.service(v4)?.destinations == [held(a)])
        },

        IPVSKernelContractCase(name: "a destination address that is not unicast is an invalid argument") { (kernel: any IPVSKernel) throws in
            try succeed(kernel, [
                .addService(VirtualService(key: v4, scheduler: .roundRobin)), .addService(VirtualService(key: v6, scheduler: .roundRobin)),
            ])
            for (key, text) in [
                (v4, "0.0.0.0:80"), (v4, "255.255.255.255:80"), (v4, "224.0.0.1:80"), (v6, "[::]:80"), (v6, "[ff02::1]:80"),
                (v6, "[fe80::1]:80"), (v6, "[::ffff:10.1.1.1]:80"),
            ] {
                let refused = Destination(address: socket(text))
                #expect(
                    try failure(kernel, .addDestination(key, refused))
                        == .invalidArgument(operation: "add-destination", subject: "destination \(refused.address) of service \(key)"))
            }
            #expect(try kernel.service(v4)?.destinations == [])
            #expect(try kernel.service(v6)?.destinations == [])
            // Unicast or local: class E and the loopback are taken.
            let taken = [(v4, "240.0.0.1:80"), (v4, "127.0.0.1:80"), (v6, "[::1]:80")].map { ($0.0, Destination(address: socket($0.1))) }
            try succeed(kernel, taken.map { .addDestination($0.0, $0.1) })
            #expect(try kernel.service(v4)?.destinations == [taken[1].1, taken[0].1].map(held))
            #expect(try kernel.service(v6)?.destinations == [held(taken[2].1)])
        },

        IPVSKernelContractCase(name: "a destination of the other family must be tunnelled") { (kernel: any IPVSKernel) throws in
            try succeed(kernel, [.addService(VirtualService(key: v4, scheduler: .roundRobin))])
            let v6Masquerade = destination(v6, 1)
            #expect(
                try failure(kernel, .addDestination(v4, v6Masquerade))
                    == .invalidArgument(operation: "add-destination", subject: "destination \(v6Masquerade.address) of service \(v4)"))
            // Checked before the weight.
            var negative = v6Masquerade
            negative.weight = -1
            #expect(
                try failure(kernel, .addDestination(v4, negative))
                    == .invalidArgument(operation: "add-destination", subject: "destination \(negative.address) of service \(v4)"))
            var tunnelled = v6Masquerade
            tunnelled.forwarding = .tunnel
            try succeed(kernel, [.addDestination(v4, tunnelled)])
            #expect(
                try failure(kernel, .editDestination(v4, v6Masquerade))
                    == .invalidArgument(operation: "edit-destination", subject: "destination \(v6Masquerade.address) of service \(v4)"))
            try succeed(kernel, [.deleteDestination(v4, tunnelled.address)])
            #expect(try kernel.service(v4)?.destinations == [])
        },

        IPVSKernelContractCase(name: "a batch with failures among many: one result each, in order, the rest applied") { (kernel: any IPVSKernel) throws in
            let first = VirtualService(key: v4, scheduler: .roundRobin)
            let second = VirtualService(key: mark6, scheduler: .roundRobin)
            let a = destination(v4, 1)
            let b = destination(mark6, 2)
            var negative = destination(v4, 3)
            negative.weight = -1
            let results = try kernel.apply([
                .addService(first), .addService(first), .addDestination(second.key, b), .addService(second),
                .addDestination(second.key, b), .addService(VirtualService(key: v6, scheduler: "nosuch")),
                .addDestination(v4, a), .addDestination(v4, negative), .deleteDestination(v4, b.address), .editDestination(second.key, b),
            ])
            let failures: [IPVSError?] = results.map { result in
                if case .failure(let error) = result { return error }
                return nil
            }
            #expect(
                failures == [
                    nil, .serviceExists(v4), .serviceNotFound(mark6), nil,
                    nil, .unknownScheduler("nosuch", v6),
                    nil, .kernel(errno: ERANGE, operation: "add-destination", subject: "destination \(negative.address) of service \(v4)"),
                    .destinationNotFound(v4, b.address), nil,
                ])
            try expectEntry(kernel, ServiceEntry(service: held(first), destinations: [held(a)]))
            try expectEntry(kernel, ServiceEntry(service: held(second), destinations: [held(b)]))
            #expect(Set(try kernel.dumpTable().map(\.service.key)) == [v4, mark6])
        },

        IPVSKernelContractCase(name: "an empty batch has no results") { (kernel: any IPVSKernel) throws in
            #expect(try kernel.apply([]).isEmpty)
        },
    ]
}
