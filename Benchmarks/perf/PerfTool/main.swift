import CanaryCore
import IPVS
import IPVSNetlink

#if canImport(Glibc)
import Glibc
#endif

// The agent's side of issue 7's measurements, run inside the VM by Benchmarks/perf/guest.sh.
//
//   PerfTool sync    SERVICES ENDPOINTS          the daemon's first full sync: dump, realize, plan, apply
//   PerfTool verify  SERVICES ENDPOINTS [REPEAT] dump the table REPEAT times (timed), check it is exactly
//                                                the desired table; exit 2 when it is not
//   PerfTool rules   SERVICES ENDPOINTS          the same operations as `ipvsadm -R` input (floor.c reads it too)
//   PerfTool config  SERVICES ENDPOINTS          the same services as a static file for `canary-agent run --config`
//   PerfTool watch   [INTERVAL_US]               for the one-change measurement (see `watch`)
//   PerfTool flush                               empty the table
//
// Every measuring command prints one JSON object on standard output.

enum PerfToolError: Error, CustomStringConvertible {
    case usage(String)
    case mismatch(String)

    var description: String {
        switch self {
        case .usage(let text): "usage: \(text)"
        case .mismatch(let text): "table mismatch: \(text)"
        }
    }
}

let clock = ContinuousClock()

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func json(_ fields: [(String, String)]) -> String {
    "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
}

func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        default:
            if scalar.value < 0x20 { out += "\\u" + String(scalar.value, radix: 16).leftPadded(to: 4) } else { out.unicodeScalars.append(scalar) }
        }
    }
    return out + "\""
}

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

func format(_ value: Double) -> String {
    // Microsecond resolution without Foundation.
    let micros = (value * 1_000_000).rounded()
    let whole = Int(micros) / 1_000_000
    let fraction = abs(Int(micros) % 1_000_000)
    return "\(whole).\(String(fraction).leftPadded(to: 6))"
}

func workload(_ arguments: ArraySlice<String>, _ command: String) throws(PerfToolError) -> PerfWorkload {
    guard arguments.count >= 2, let services = Int(arguments[arguments.startIndex]),
        let endpoints = Int(arguments[arguments.startIndex + 1]), services > 0, endpoints > 0, endpoints < 64,
        services < 1 << 20
    else { throw .usage("PerfTool \(command) SERVICES ENDPOINTS (1 ≤ ENDPOINTS < 64)") }
    return PerfWorkload(services: services, endpoints: endpoints)
}

/// The plan a full sync from an empty table makes: what all three contenders send.
func fullPlan(_ workload: PerfWorkload) -> [IPVSOperation] {
    let desired = DesiredTable(workload.desiredState())
    let planner = Planner(ownership: Ownership(boundAddresses: workload.virtualAddresses), drainTimeout: .seconds(300))
    var drains = DrainTracker()
    return planner.plan(desired: desired, current: [:], drains: &drains, now: .now).operations
}

/// The daemon's first full sync (dump, realize, plan, apply), phase by phase.
func sync(_ workload: PerfWorkload) throws -> String {
    let started = clock.now
    let ipvs = try NetlinkIPVS()
    let opened = clock.now
    let current = Planner.index(try ipvs.dumpTable())
    let dumped = clock.now
    let state = workload.desiredState()
    let desired = DesiredTable(state, current: current)
    let realized = clock.now
    let planner = Planner(ownership: Ownership(boundAddresses: workload.virtualAddresses), drainTimeout: .seconds(300))
    var drains = DrainTracker()
    let plan = planner.plan(desired: desired, current: current, drains: &drains, now: .now)
    let planned = clock.now
    let results = try ipvs.apply(plan.operations)
    let applied = clock.now
    var failures = 0
    var firstFailure = ""
    for result in results {
        if case .failure(let error) = result {
            if failures == 0 { firstFailure = "\(error)" }
            failures += 1
        }
    }
    var fields: [(String, String)] = [
        ("operations", "\(plan.operations.count)"),
        ("failures", "\(failures)"),
        ("open_seconds", format(seconds(opened - started))),
        ("dump_seconds", format(seconds(dumped - opened))),
        ("realize_seconds", format(seconds(realized - dumped))),
        ("plan_seconds", format(seconds(planned - realized))),
        ("apply_seconds", format(seconds(applied - planned))),
        ("total_seconds", format(seconds(applied - started))),
    ]
    if failures > 0 { fields.append(("first_failure", jsonString(firstFailure))) }
    return json(fields)
}

/// Dumps the table `repeat` times and checks the last dump against the desired table:
/// every service with its scheduler and flags, every destination with its weight and method.
func verify(_ workload: PerfWorkload, repeat count: Int) throws -> (String, Bool) {
    let ipvs = try NetlinkIPVS()
    var times: [Double] = []
    var dump: [ServiceEntry] = []
    for _ in 0..<max(1, count) {
        let started = clock.now
        dump = try ipvs.dumpTable()
        times.append(seconds(clock.now - started))
    }
    let desired = DesiredTable(workload.desiredState()).entries
    var problems: [String] = []
    let destinations = dump.reduce(0) { $0 + $1.destinations.count }
    var seen = Set<ServiceKey>()
    for entry in dump {
        let key = entry.service.key
        seen.insert(key)
        guard let want = desired[key] else {
            problems.append("unexpected service \(key)")
            continue
        }
        if !entry.service.hasSameConfiguration(as: want.service) {
            problems.append("service \(key): \(entry.service.scheduler) \(entry.service.flags), want \(want.service.scheduler) \(want.service.flags)")
        }
        let have = Dictionary(entry.destinations.map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
        if have.count != entry.destinations.count { problems.append("service \(key): a destination listed twice") }
        for destination in want.destinations {
            guard let got = have[destination.address] else {
                problems.append("service \(key): destination \(destination.address) missing")
                continue
            }
            if !got.hasSameConfiguration(as: destination) {
                problems.append("service \(key): destination \(destination.address) weight \(got.weight), want \(destination.weight)")
            }
        }
        if have.count > want.destinations.count { problems.append("service \(key): \(have.count - want.destinations.count) extra destinations") }
        if problems.count > 20 { break }
    }
    let missing = desired.keys.filter { !seen.contains($0) }.count
    if missing > 0 { problems.append("\(missing) services missing") }
    let wantDestinations = desired.values.reduce(0) { $0 + $1.destinations.count }
    let sorted = times.sorted()
    let fields: [(String, String)] = [
        ("services", "\(dump.count)"),
        ("destinations", "\(destinations)"),
        ("expected_services", "\(desired.count)"),
        ("expected_destinations", "\(wantDestinations)"),
        ("match", problems.isEmpty ? "true" : "false"),
        ("problems", "[" + problems.prefix(5).map(jsonString).joined(separator: ", ") + "]"),
        ("dump_seconds", "[" + times.map(format).joined(separator: ", ") + "]"),
        ("dump_median_seconds", format(sorted[sorted.count / 2])),
    ]
    return (json(fields), problems.isEmpty)
}

/// `ipvsadm -R` input for the operations (only the adds a full sync makes).
func rules(_ operations: [IPVSOperation]) -> String {
    var out = ""
    out.reserveCapacity(operations.count * 48)
    for operation in operations {
        switch operation {
        case .addService(let service):
            guard case .inet(let proto, let address) = service.key else { continue }
            out += "-A \(protocolOption(proto)) \(address) -s \(service.scheduler.rawValue)"
            if service.flags.contains(.persistent) { out += " -p \(service.timeout)" }
            var schedulerFlags: [String] = []
            if service.flags.contains(.shFallback) { schedulerFlags.append("flag-1") }
            if service.flags.contains(.shPort) { schedulerFlags.append("flag-2") }
            if !schedulerFlags.isEmpty { out += " -b " + schedulerFlags.joined(separator: ",") }
            out += "\n"
        case .addDestination(let key, let destination):
            guard case .inet(let proto, let address) = key else { continue }
            let method =
                switch destination.forwarding {
                case .masquerade: "-m"
                case .directRoute, .local: "-g"
                case .tunnel: "-i"
                }
            out += "-a \(protocolOption(proto)) \(address) -r \(destination.address) \(method) -w \(destination.weight)\n"
        default:
            continue
        }
    }
    return out
}

func protocolOption(_ proto: IPProtocol) -> String {
    switch proto {
    case .tcp: "-t"
    case .udp: "-u"
    case .sctp: "--sctp-service"
    }
}

/// The same services as a static configuration file (README "Static mode").
func staticConfiguration(_ workload: PerfWorkload) -> String {
    var out = "scheduler: \(workload.scheduler.rawValue)\nservices:\n"
    for index in 0..<workload.services {
        let service = workload.desiredService(index)
        guard case .inet(_, let address) = service.key else { continue }
        out += "  - name: perf-\(index)\n    address: \(address.address)\n    port: \(address.port)\n"
        out += "    stable: [" + service.stable.map { "\($0.address)" }.joined(separator: ", ") + "]\n"
        out += "    canary:\n      weight: \(service.canaryShare.basisPoints / 100)\n"
        out += "      endpoints: [" + service.canary.map { "\"\($0.address)\"" }.joined(separator: ", ") + "]\n"
    }
    return out
}

/// CLOCK_MONOTONIC in seconds: the clock Python's time.monotonic() reads, so that the guest can
/// subtract its own timestamps from ours.
func monotonicSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// For the one-change measurement: reads lines `VIP:PORT DEST:PORT` on standard input, answers
/// `ready`, then polls that service's destinations (one small netlink dump every `interval`) until
/// DEST is there with a weight above 0, and answers `seen MONOTONIC_SECONDS POLLS` (or `timeout`).
/// The guest stamps the time just after `ready`, then changes the object at the API server.
func watch(intervalMicroseconds: UInt32) throws {
    let ipvs = try NetlinkIPVS()
    while let line = readLine() {
        let words = line.split(separator: " ")
        guard words.count == 2, let service = SocketAddress(String(words[0])),
            let destination = SocketAddress(String(words[1]))
        else {
            print("bad line")
            fflush(nil)
            continue
        }
        let key = ServiceKey.inet(.tcp, service)
        print("ready")
        fflush(nil)
        let deadline = monotonicSeconds() + 30
        var polls = 0
        var answer = "timeout"
        while monotonicSeconds() < deadline {
            polls += 1
            let found = try ipvs.destinations(of: key).contains { $0.address == destination && $0.weight > 0 }
            if found {
                answer = "seen \(format(monotonicSeconds())) \(polls)"
                break
            }
            usleep(intervalMicroseconds)
        }
        print(answer)
        fflush(nil)
    }
}

func run(_ arguments: [String]) throws -> Int32 {
    guard arguments.count >= 2 else { throw PerfToolError.usage("PerfTool sync|verify|rules|config|flush ...") }
    let command = arguments[1]
    let rest = arguments[2...]
    switch command {
    case "sync":
        print(try sync(workload(rest, command)))
    case "verify":
        let count = rest.count >= 3 ? Int(rest[rest.startIndex + 2]) ?? 1 : 1
        let (report, matches) = try verify(workload(rest, command), repeat: count)
        print(report)
        return matches ? 0 : 2
    case "rules":
        print(rules(fullPlan(try workload(rest, command))), terminator: "")
    case "config":
        print(staticConfiguration(try workload(rest, command)), terminator: "")
    case "watch":
        try watch(intervalMicroseconds: rest.first.flatMap { UInt32($0) } ?? 1000)
    case "flush":
        try NetlinkIPVS().flush()
    default:
        throw PerfToolError.usage("PerfTool sync|verify|rules|config|flush ...")
    }
    return 0
}

do {
    exit(try run(CommandLine.arguments))
} catch {
    let message = "PerfTool: \(error)\n"
    _ = message.withCString { write(2, $0, strlen($0)) }
    exit(1)
}
