import CanaryCore
import Foundation
import FuzzDriver
import IPVS

@testable import KubernetesClient
@testable import KubernetesSource

/// One input: a watch (or list) response body as the API server streams it, cut into chunks where the
/// fuzzer chooses, read as the informers read it and translated as the source translates it.
///
/// Layout: byte 0 picks the options (bit 0: core/v1 Endpoints instead of EndpointSlices, bit 1:
/// `--external-ips`, bits 2-3: the `--scheduler` flag); bytes 1-2 choose the chunk boundaries (byte 1:
/// the largest chunk, 1 to 2^(byte 1 & 15) bytes; byte 2 seeds their sizes); the rest is the body.
///
/// Properties, each a trap here when broken:
/// - the framer gives the same lines however the body is cut, and never holds more than its limit;
/// - every line decodes (as a watch event, a list page or a Status) or throws a `DecodingError`;
/// - the translation cache, fed the decoded events one at a time as the informers feed it, equals a
///   full `Translator.translate` after every event, and the changes it returns (what the source sends
///   the reconciler) are exactly the entries that changed, with their new values;
/// - every virtual service it asks for is usable: a usable address, a port, endpoints of its own
///   family with a port, a canary share within 0-100 %; and the weight solver takes it;
/// - no trap anywhere on the way, no input slower than 1 s, no memory blow-up (libFuzzer's
///   -timeout and -rss_limit_mb).
// Also libFuzzer's own entry point, for a debug build (whose executables link libFuzzer's `main`).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzKubernetes(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let start, count >= 3 else { return 0 }
    let input = UnsafeBufferPointer(start: start, count: count)
    let options = input[0]
    let body = Array(input[3...])

    // 1. Framing: the whole body in one chunk, then cut where the fuzzer says.
    var whole = NewlineDelimitedFramer()
    var lines = (try? whole.append(body)) ?? []
    if let last = whole.finish() { lines.append(last) }

    var chunked = NewlineDelimitedFramer()
    var chunkedLines: [[UInt8]] = []
    var small = NewlineDelimitedFramer(maximumLineLength: 64)
    var smallFailed = false
    let largest = 1 << Int(input[1] & 15)
    var random = UInt64(input[2]) &* 0x9E37_79B9_7F4A_7C15 | 1
    var offset = 0
    while offset < body.count {
        random ^= random << 13
        random ^= random >> 7
        random ^= random << 17
        let size = min(body.count - offset, 1 + Int(random % UInt64(largest)))
        let chunk = body[offset..<offset + size]
        offset += size
        do {
            chunkedLines += try chunked.append(chunk)
        } catch {
            preconditionFailure("a line of \(body.count) bytes at most is over the default limit")
        }
        if !smallFailed {
            do {
                _ = try small.append(chunk)
                precondition(small.pendingByteCount <= 64, "the framer holds \(small.pendingByteCount) bytes past its limit")
            } catch {
                precondition(error.limit == 64)
                smallFailed = true
            }
        }
    }
    if let last = chunked.finish() { chunkedLines.append(last) }
    precondition(chunkedLines == lines, "the lines depend on where the body was cut")
    precondition(chunked.pendingByteCount == 0)

    // 2. Decoding and 3. translation, event by event.
    var world = World(options: options)
    for (index, line) in lines.enumerated() {
        world.read(line, index: index)
    }
    return 0
}

/// What the informers hold and the cache made of it.
struct World {
    let api: KubernetesSource.EndpointsAPI
    let acceptExternalIPs: Bool
    let defaultScheduler: Scheduler
    var cache: TranslationCache
    var services: [ObjectKey: Service] = [:]
    var slices: [ObjectKey: EndpointSlice] = [:]
    var endpoints: [ObjectKey: Endpoints] = [:]
    /// The Node informer's cache, and the agent's own Node in it (the source looks it up by name).
    var nodes: [ObjectKey: Node] = [:]
    var node: Node?
    static let nodeName = ObjectKey(namespace: nil, name: "node-1")
    /// The full translation after the previous event.
    var reference: Translation?
    let decoder = JSONDecoder()

    init(options: UInt8) {
        api = options & 1 == 0 ? .endpointSlices : .endpoints
        acceptExternalIPs = options & 2 != 0
        defaultScheduler = Scheduler.supportedByAgent[Int(options >> 2) & 3]
        cache = TranslationCache(endpointsAPI: api, defaultScheduler: defaultScheduler, acceptExternalIPs: acceptExternalIPs)
    }

    /// The kind a line names (`Service`, `ServiceList`, `Status`), at its top or in its `object`.
    private struct Peek: Decodable {
        struct Object: Decodable { var kind: String? }
        var kind: String?
        var object: Object?
    }

    /// Decodes as the client does, and checks that a failure is a decoding error it can describe.
    private func decode<T: Decodable>(_ type: T.Type, _ data: Data) -> T? {
        do {
            return try decoder.decode(type, from: data)
        } catch {
            precondition(error is DecodingError, "not a DecodingError: \(error)")
            _ = KubernetesClient.describe(error)
            return nil
        }
    }

    mutating func read(_ line: [UInt8], index: Int) {
        let data = Data(line)
        let peek = try? decoder.decode(Peek.self, from: data)
        // Without a kind, the line's place picks one: every type is reached.
        let kinds = ["Service", "EndpointSlice", "Endpoints", "Node"]
        let kind = peek?.kind ?? peek?.object?.kind ?? kinds[index % kinds.count]
        // The body of an error response, and the object of an ERROR event.
        _ = decode(Status.self, data)
        switch kind {
        case "ServiceList":
            guard let list = decode(ObjectList<Service>.self, data) else { return }
            services = Dictionary(list.items.map { ($0.key, $0) }, uniquingKeysWith: { _, last in last })
            cache.replaceServices(services)
        case "EndpointSliceList":
            guard let list = decode(ObjectList<EndpointSlice>.self, data) else { return }
            slices = Dictionary(list.items.map { ($0.key, $0) }, uniquingKeysWith: { _, last in last })
            cache.replaceSlices(slices)
        case "EndpointsList":
            guard let list = decode(ObjectList<Endpoints>.self, data) else { return }
            endpoints = Dictionary(list.items.map { ($0.key, $0) }, uniquingKeysWith: { _, last in last })
            cache.replaceEndpoints(endpoints)
        case "NodeList":
            guard let list = decode(ObjectList<Node>.self, data) else { return }
            nodes = Dictionary(list.items.map { ($0.key, $0) }, uniquingKeysWith: { _, last in last })
            node = nodes[Self.nodeName]
            cache.setNode(node)
        case "EndpointSlice":
            guard let event = decode(WatchEvent<EndpointSlice>.self, data), let (key, object) = Self.change(event, in: &slices)
            else { return }
            cache.changeSlice(key, to: object)
        case "Endpoints":
            guard let event = decode(WatchEvent<Endpoints>.self, data), let (key, object) = Self.change(event, in: &endpoints)
            else { return }
            cache.changeEndpoints(key, to: object)
        case "Node":
            guard let event = decode(WatchEvent<Node>.self, data), Self.change(event, in: &nodes) != nil else { return }
            node = nodes[Self.nodeName]
            cache.setNode(node)
        default:
            guard let event = decode(WatchEvent<Service>.self, data), let (key, object) = Self.change(event, in: &services)
            else { return }
            cache.changeService(key, to: object)
        }
        translate()
    }

    /// An event applied to an informer's cache as the informer applies it: the key and the object now.
    private static func change<T: KubernetesObject>(_ event: WatchEvent<T>, in cache: inout [ObjectKey: T]) -> (ObjectKey, T?)? {
        switch event {
        case .added(let object), .modified(let object):
            cache[object.key] = object
            return (object.key, object)
        case .deleted(let object):
            cache[object.key] = nil
            return (object.key, nil)
        case .bookmark, .error:
            return nil
        }
    }

    private mutating func translate() {
        let before = reference?.desiredState ?? DesiredState()
        let (changes, problems) = cache.translate()
        let full = Translator.translate(
            TranslationInput(
                services: Array(services.values),
                endpoints: api == .endpointSlices ? .slices(Array(slices.values)) : .endpoints(Array(endpoints.values)),
                node: node, defaultScheduler: defaultScheduler, acceptExternalIPs: acceptExternalIPs),
            previous: reference?.desiredState ?? DesiredState())
        reference = full
        guard let translation = cache.last else { preconditionFailure("the cache has no translation") }
        precondition(translation == full, "the cache's translation differs from a full one")
        // What the source sends the reconciler: exactly the entries that changed, with their new values.
        precondition(problems == full.problems, "the problems sent differ from the translation's")
        var applied = before
        for (key, value) in changes {
            precondition(before.services[key] != value, "\(key) sent as changed but it did not change")
            applied.services[key] = value
        }
        precondition(applied == full.desiredState, "the changes sent do not turn the last state into the new one")
        // What the reconciler would program: usable, and solvable (a few per event: mh's table costs).
        for (number, (key, service)) in translation.desiredState.services.enumerated() {
            precondition(service.key == key)
            guard case .inet(_, let socket) = key else { preconditionFailure("not an address:port service: \(key)") }
            precondition(socket.port != 0, "port 0: \(key)")
            precondition(socket.address.unusableAsVirtualAddress == nil, "an unusable virtual address: \(key)")
            for endpoint in service.stable + service.canary {
                precondition(endpoint.address.port != 0, "\(key): an endpoint on port 0")
                precondition(endpoint.address.address.family == socket.address.family, "\(key): \(endpoint) crosses families")
            }
            precondition((0...10_000).contains(service.canaryShare.basisPoints))
            if number < 4 { _ = WeightSolver.solve(service) }
        }
    }
}

@main
enum Main {
    static func main() { runFuzzer(fuzzKubernetes) }
}
