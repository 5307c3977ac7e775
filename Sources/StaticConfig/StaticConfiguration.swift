import CanaryCore
import IPVS
import Yams

/// The static configuration file of a host outside Kubernetes (`canary-agent run --config FILE`):
///
/// ```yaml
/// scheduler: wrr            # default for services that name none
/// services:
///   - name: web
///     address: 10.96.0.10   # IPv4 or IPv6
///     port: 80
///     protocol: tcp         # tcp | udp | sctp
///     scheduler: sh         # optional
///     persistence-timeout: 300   # optional, seconds: clients keep their endpoint
///     stable: [10.9.1.2:80, 10.9.1.3:80]
///     canary:
///       weight: 10          # percent of new connections, 0-100, two decimals
///       endpoints: [10.9.1.9:80]
///   - name: checkout        # any number of weighted groups instead of stable/canary
///     address: 10.96.0.12
///     port: 443
///     backends:             # 1 to 16, as a Gateway API rule's backendRefs
///       - name: blue
///         weight: 70        # 0-1000000 (default 1): share = weight / sum of weights
///         endpoints: [10.9.3.1:443]
///       - name: green
///         weight: 30
///         endpoints: [10.9.4.1:443, 10.9.4.2:443]
/// ```
///
/// With `backends`, weight 0 takes no new connections and a service none of whose weighted
/// backends has an endpoint refuses new connections (Gateway API's rules); with `stable`/`canary`
/// the other group takes them, as it always has. An endpoint in two backends is one destination
/// with the sum of their shares for it.
public struct StaticConfiguration: Hashable, Sendable {

    /// The scheduler of services that name none.
    public var defaultScheduler: Scheduler
    /// The services, in file order.
    public var services: [DesiredService]

    public init(defaultScheduler: Scheduler, services: [DesiredService]) {
        self.defaultScheduler = defaultScheduler
        self.services = services
    }

    /// The desired state the file asks for.
    public var desiredState: DesiredState { DesiredState(services: services) }

    /// Reads a configuration; the first problem found is thrown, naming the file, line and field.
    public init(yaml: String, file: String = "<config>") throws(InputProblem) {
        // Aliases bounded, keys single values, duplicate keys one line: before Yams composes the tree.
        try YAMLShapeCheck(file: file).check(yaml)
        let root: Yams.Node?
        do {
            // No implicit tags: the reader converts each scalar itself (a port with Int.construct, an
            // address by parsing it), and resolving tags runs a regular expression per scalar,
            // most of the parse's time for a file of 10,000 services.
            root = try Yams.compose(yaml: yaml, .basic)
        } catch let error as YamlError {
            throw InputProblem.inFile(file, line: error.line, field: "", message: error.problem)
        } catch {
            throw InputProblem.inFile(file, line: nil, field: "", message: "\(error)")
        }
        let reader = ConfigurationReader(file: file)
        guard let root else { throw reader.error(at: nil, "", "the file is empty") }
        self = try reader.configuration(root)
    }
}

extension InputProblem {
    /// A problem in a configuration file: `config.yaml:7: services[0].port: 70000 is not a port (1-65535)`.
    static func inFile(_ file: String, line: Int?, field: String, message: String) -> InputProblem {
        InputProblem(object: InputObject(kind: .file, name: file), line: line, field: field, message: message, reason: "InvalidConfiguration")
    }
}

extension YamlError {
    fileprivate var line: Int? {
        switch self {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): mark.line
        case .duplicatedKeysInMapping(_, let context): context.mark.line
        default: nil
        }
    }

    fileprivate var problem: String {
        switch self {
        case .scanner(let context, let problem, _, _), .parser(let context, let problem, _, _),
            .composer(let context, let problem, _, _):
            "invalid YAML: " + (context.map { "\($0.text): " } ?? "") + problem
        // The context of this one is the whole file: the keys only, shortened.
        case .duplicatedKeysInMapping(let duplicates, _):
            "invalid YAML: a key is given twice: " + duplicates.prefix(3).map { "'\(excerpt($0))'" }.joined(separator: ", ")
        default: "invalid YAML: " + excerpt("\(self)", limit: 200)
        }
    }
}

private func hex4(_ value: UInt32) -> String {
    let digits = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
}

/// Walks the YAML nodes, keeping each field's path and line for the error it may raise.
private struct ConfigurationReader {
    let file: String

    func error(at node: Node?, _ field: String, _ message: String) -> InputProblem {
        InputProblem.inFile(file, line: node?.mark?.line, field: field, message: message)
    }

    func configuration(_ root: Node) throws(InputProblem) -> StaticConfiguration {
        let fields = try mapping(root, "", allowed: ["scheduler", "services"])
        let defaultScheduler = try fields["scheduler"].map { node throws(InputProblem) in
            try scheduler(node, "scheduler")
        } ?? .weightedRoundRobin
        guard let servicesNode = fields["services"] else { throw error(at: root, "services", "missing") }
        guard case .sequence(let list) = servicesNode else {
            throw error(at: servicesNode, "services", "must be a list of services")
        }
        var services: [DesiredService] = []
        var names: [String: Int] = [:]
        var keys: [ServiceKey: String] = [:]
        for (index, node) in list.enumerated() {
            let path = "services[\(index)]"
            let service = try self.service(node, path, defaultScheduler: defaultScheduler)
            if let other = names[service.name] {
                throw error(at: node, "\(path).name", "'\(excerpt(service.name))' is already the name of services[\(other)]")
            }
            if let other = keys[service.key] {
                throw error(at: node, path, "\(service.key) is already service '\(excerpt(other))'")
            }
            names[service.name] = index
            keys[service.key] = service.name
            services.append(service)
        }
        return StaticConfiguration(defaultScheduler: defaultScheduler, services: services)
    }

    static let serviceFields: Set<String> = [
        "name", "address", "port", "protocol", "scheduler", "persistence-timeout", "stable", "canary", "backends",
    ]
    static let canaryFields: Set<String> = ["weight", "endpoints"]
    static let backendFields: Set<String> = ["name", "weight", "endpoints"]
    /// As many as a Gateway API rule's backendRefs.
    static let maximumBackends = 16

    func service(_ node: Node, _ path: String, defaultScheduler: Scheduler) throws(InputProblem) -> DesiredService {
        let fields = try mapping(
            node, path,
            allowed: Self.serviceFields)
        let nameNode = try required(fields, "name", node, path)
        let name = try string(nameNode, "\(path).name")
        // The name is a label of /metrics and a word of the logs: a CR, LF or NUL in it forges lines.
        if let control = name.unicodeScalars.first(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            throw error(
                at: nameNode, "\(path).name",
                "'\(excerpt(name))' contains a control character (U+\(hex4(control.value))): a name is printable text only")
        }
        let addressNode = try required(fields, "address", node, path)
        guard let address = IPAddress(try string(addressNode, "\(path).address")) else {
            throw error(at: addressNode, "\(path).address", "'\(excerpt(addressNode.string ?? ""))' is not an IPv4 or IPv6 address")
        }
        if let reason = address.unusableAsVirtualAddress {
            throw error(at: addressNode, "\(path).address", "\(address) is \(reason): it cannot be a virtual address")
        }
        let portNode = try required(fields, "port", node, path)
        let portValue = try integer(portNode, "\(path).port", 1...65_535, what: "port") { text in "'\(text)' is not a port (1-65535)" }
        var proto = IPProtocol.tcp
        if let protocolNode = fields["protocol"] {
            switch try string(protocolNode, "\(path).protocol").lowercased() {
            case "tcp": proto = .tcp
            case "udp": proto = .udp
            case "sctp": proto = .sctp
            case let other: throw error(at: protocolNode, "\(path).protocol", "'\(excerpt(other))' is not tcp, udp or sctp")
            }
        }
        let scheduler = try fields["scheduler"].map { node throws(InputProblem) in
            try self.scheduler(node, "\(path).scheduler")
        } ?? defaultScheduler
        var persistence: Persistence?
        if let timeoutNode = fields["persistence-timeout"] {
            let seconds = try integer(timeoutNode, "\(path).persistence-timeout", 1...2_678_400, what: "timeout in seconds") { text in
                "'\(text)' is not a number of seconds (1-2678400)"
            }
            persistence = Persistence(timeout: UInt32(seconds))
        }
        let key = ServiceKey.inet(proto, SocketAddress(address: address, port: UInt16(portValue)))
        if let backendsNode = fields["backends"] {
            if let other = fields["stable"] ?? fields["canary"] {
                throw error(at: other, "\(path).\(fields["stable"] != nil ? "stable" : "canary")", "give either stable (and canary) or backends, not both")
            }
            return DesiredService(
                origin: .staticService(name), key: key, scheduler: scheduler, persistence: persistence,
                backends: try backends(backendsNode, "\(path).backends", address: address),
                unweightedFallback: .refuseNewConnections)
        }
        guard let stableNode = fields["stable"] else {
            throw error(at: node, "\(path).stable", "missing: give stable (and canary), or backends")
        }
        let stable = try endpoints(stableNode, "\(path).stable", family: address.family, virtualAddress: address)
        var canary: [Endpoint] = []
        var share = CanaryShare.zero
        if let canaryNode = fields["canary"] {
            let canaryFields = try mapping(canaryNode, "\(path).canary", allowed: Self.canaryFields)
            let weightNode = try required(canaryFields, "weight", canaryNode, "\(path).canary")
            let weightText = try string(weightNode, "\(path).canary.weight")
            guard let parsed = CanaryShare(percentText: weightText) else {
                throw error(at: weightNode, "\(path).canary.weight", "'\(excerpt(weightText))' is not a percentage from 0 to 100 with at most two decimals")
            }
            share = parsed
            canary = try endpoints(required(canaryFields, "endpoints", canaryNode, "\(path).canary"), "\(path).canary.endpoints", family: address.family, virtualAddress: address)
        }
        let stableAddresses = Set(stable.map(\.address))
        if let both = canary.first(where: { stableAddresses.contains($0.address) }) {
            throw error(at: fields["canary"], "\(path).canary.endpoints", "\(both.address) is also a stable endpoint")
        }
        return DesiredService(
            origin: .staticService(name), key: key, scheduler: scheduler,
            persistence: persistence, stable: stable, canary: canary, canaryShare: share)
    }

    /// `backends:`: 1 to 16 groups, each `name` (unique, printable), `weight` (0-1000000, default
    /// 1, as Gateway API's backendRef weight) and `endpoints`.
    func backends(_ node: Node, _ path: String, address: IPAddress) throws(InputProblem) -> [BackendGroup] {
        guard case .sequence(let list) = node, !list.isEmpty else {
            throw error(at: node, path, "must be a list of 1 to \(Self.maximumBackends) backends (name, weight, endpoints)")
        }
        guard list.count <= Self.maximumBackends else {
            throw error(at: node, path, "\(list.count) backends: at most \(Self.maximumBackends), as in a Gateway API rule")
        }
        var groups: [BackendGroup] = []
        var names: [String: Int] = [:]
        for (index, item) in list.enumerated() {
            let itemPath = "\(path)[\(index)]"
            let fields = try mapping(item, itemPath, allowed: Self.backendFields)
            let nameNode = try required(fields, "name", item, itemPath)
            let name = try string(nameNode, "\(itemPath).name")
            guard !name.isEmpty, name.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F }) else {
                throw error(at: nameNode, "\(itemPath).name", "'\(excerpt(name))' is not a name: printable text, not empty")
            }
            if let other = names[name] {
                throw error(at: nameNode, "\(itemPath).name", "'\(excerpt(name))' is already the name of \(path)[\(other)]")
            }
            names[name] = index
            let weight = try fields["weight"].map { weightNode throws(InputProblem) in
                try integer(weightNode, "\(itemPath).weight", BackendGroup.weightRange, what: "weight") { text in
                    "'\(text)' is not a weight (0-1000000)"
                }
            } ?? 1
            let endpoints = try endpoints(
                required(fields, "endpoints", item, itemPath), "\(itemPath).endpoints", family: address.family,
                virtualAddress: address)
            groups.append(BackendGroup(name: name, weight: weight, endpoints: endpoints))
        }
        return groups
    }

    func endpoints(
        _ node: Node, _ path: String, family: IPAddress.Family, virtualAddress: IPAddress
    ) throws(InputProblem) -> [Endpoint] {
        guard case .sequence(let list) = node else { throw error(at: node, path, "must be a list of ADDRESS:PORT") }
        var seen: Set<SocketAddress> = []
        var result: [Endpoint] = []
        result.reserveCapacity(list.count)
        for (index, item) in list.enumerated() {
            let text = try string(item, "\(path)[\(index)]")
            guard let address = SocketAddress(text) else {
                throw error(at: item, "\(path)[\(index)]", "'\(excerpt(text))' is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)")
            }
            guard address.address.family == family else {
                throw error(at: item, "\(path)[\(index)]", "\(address) is \(address.address.family) but the service address is \(family): IPVS NAT cannot cross address families")
            }
            // On the virtual address itself (any port), the service would forward its traffic into itself.
            guard address.address != virtualAddress else {
                throw error(at: item, "\(path)[\(index)]", "\(address) is on the service's own address \(virtualAddress): an endpoint must be another address")
            }
            guard address.port != 0 else { throw error(at: item, "\(path)[\(index)]", "port 0 is not a port") }
            guard seen.insert(address).inserted else { throw error(at: item, "\(path)[\(index)]", "\(address) is listed twice") }
            result.append(Endpoint(address))
        }
        return result
    }

    func scheduler(_ node: Node, _ path: String) throws(InputProblem) -> Scheduler {
        let name = try string(node, path)
        let scheduler = Scheduler(rawValue: name)
        guard Scheduler.supportedByAgent.contains(scheduler) else {
            throw error(at: node, path, "'\(excerpt(name))' is not a scheduler (\(Scheduler.supportedList))")
        }
        return scheduler
    }

    func mapping(_ node: Node, _ path: String, allowed: Set<String>) throws(InputProblem) -> [String: Node] {
        guard case .mapping(let mapping) = node else {
            throw error(at: node, path, path.isEmpty ? "the file must be a mapping with 'services'" : "must be a mapping")
        }
        var fields: [String: Node] = [:]
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? ""
            var field: String { path.isEmpty ? excerpt(key) : "\(path).\(excerpt(key))" }
            guard allowed.contains(key) else {
                throw error(at: keyNode, field, "unknown field (known: \(allowed.sorted().joined(separator: ", ")))")
            }
            guard fields[key] == nil else { throw error(at: keyNode, field, "given twice") }
            fields[key] = value
        }
        return fields
    }

    func required(_ fields: [String: Node], _ key: String, _ parent: Node, _ path: String) throws(InputProblem) -> Node {
        guard let node = fields[key] else { throw error(at: parent, path.isEmpty ? key : "\(path).\(key)", "missing") }
        return node
    }

    /// An integer field: a plain (unquoted) scalar of decimal digits, no leading zero, in `range`.
    /// Everything else is refused, not converted: YAML 1.1 would read `1:20` (base 60), `0x50`,
    /// `0o120`, `0120`, `8_0` and `+80` all as 80, which is not what a reader of the file sees.
    func integer(
        _ node: Node, _ path: @autoclosure () -> String, _ range: ClosedRange<Int>, what: String,
        outOfRange: (String) -> String
    ) throws(InputProblem) -> Int {
        guard case .scalar(let scalar) = node else { throw error(at: node, path(), "must be a single value") }
        let text = scalar.string
        switch scalar.style {
        case .plain, .any: break
        case .singleQuoted, .doubleQuoted:
            throw error(at: node, path(), "'\(excerpt(text))' is quoted: write the \(what) as a number without quotes")
        case .literal, .folded:
            throw error(at: node, path(), "'\(excerpt(text))' is a block scalar: write the \(what) as a number after its key")
        }
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            utf8.count == 1 || utf8.first != UInt8(ascii: "0")
        else {
            throw error(
                at: node, path(),
                "'\(excerpt(text))' is not a \(what): write it in decimal digits only (no sign, prefix, leading zero, '_' or ':'), \(range.lowerBound)-\(range.upperBound)")
        }
        guard let value = Int(text), range.contains(value) else { throw error(at: node, path(), outOfRange(excerpt(text))) }
        return value
    }

    /// The field paths below are built only when there is an error to report (`@autoclosure`): a
    /// file of 10,000 services would otherwise build a million strings it never shows.
    func string(_ node: Node, _ path: @autoclosure () -> String) throws(InputProblem) -> String {
        guard case .scalar(let scalar) = node else { throw error(at: node, path(), "must be a single value") }
        return scalar.string
    }
}
