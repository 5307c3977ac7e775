import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A request as the stand-in API server saw it.
struct RecordedRequest: Sendable {
    var method: String
    var path: String
    var query: [String: String]
    /// The bearer token sent, if any.
    var token: String?
    var isWatch: Bool { query["watch"] == "true" }
}

/// A stand-in Kubernetes API server on 127.0.0.1 over HTTPS, speaking the real protocol for the
/// collections the agent reads: lists with `limit`/`continue` paging and a resource version, watches as
/// chunked newline-delimited JSON (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR), 410 Gone for a resource
/// version older than the kept history (as HTTP 410 or as an ERROR event carrying a Status), bearer-token
/// checks, and Event creation. Single objects too, for any collection it keeps (Leases among them): GET by
/// name, POST (409 AlreadyExists), PUT conditional on `metadata.resourceVersion` (409 Conflict when it moved
/// on), and on the `status` subresource PUT and merge-PATCH. Tests drive it through ``perform(_:)``: every
/// piece of state lives on the server's single event loop.
final class FakeAPIServer: Sendable {
    let group: MultiThreadedEventLoopGroup
    let state: ServerState
    let channel: any Channel
    let port: Int
    var url: String { "https://127.0.0.1:\(port)" }

    private init(group: MultiThreadedEventLoopGroup, state: ServerState, channel: any Channel) {
        self.group = group
        self.state = state
        self.channel = channel
        self.port = channel.localAddress?.port ?? 0
    }

    static func start(
        certificates: TestCertificates, requireClientCertificate: Bool = false, namedCertificate: Bool = false
    ) async throws -> FakeAPIServer {
        let (certificate, key) = namedCertificate
            ? (certificates.namedServerCertificate, certificates.namedServerKey)
            : (certificates.serverCertificate, certificates.serverKey)
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        if requireClientCertificate {
            tls.certificateVerification = .noHostnameVerification
            tls.trustRoots = .file(certificates.caCertificate)
        }
        let sslContext = try NIOSSLContext(configuration: tls)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let state = ServerState(eventLoop: group.next())
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    // No pipelining assistance: it stops reading while a response (a watch) is open, so the server would
                    // not see a client close its watch (TLS close_notify), unlike a real API server.
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(APIHandler(state: state))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return FakeAPIServer(group: group, state: state, channel: channel)
    }

    func stop() async {
        _ = try? await perform { $0.dropWatches() }
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    /// Runs `body` on the server's event loop, where its state lives.
    @discardableResult
    func perform<T: Sendable>(_ body: @escaping @Sendable (ServerState) throws -> T) async throws -> T {
        let state = state
        return try await state.eventLoop.submit { try body(state) }.get()
    }
}

/// The server's objects, history, watchers and request log. Only touched on `eventLoop`.
final class ServerState: @unchecked Sendable {
    struct Collection {
        var kind: String
        var apiVersion: String
        var namespaced: Bool
        var objects: [String: JSON] = [:]
        var history: [(resourceVersion: Int, type: String, object: JSON)] = []
        /// History up to here is gone: watching from an older resource version answers 410.
        var compactedThrough = 0
    }

    final class Watcher {
        let context: ChannelHandlerContext
        let collectionPath: String
        let labelSelector: String?
        let fieldSelector: String?
        let bookmarks: Bool
        var timeout: Scheduled<Void>?
        init(context: ChannelHandlerContext, collectionPath: String, labelSelector: String?, fieldSelector: String?, bookmarks: Bool) {
            self.context = context
            self.collectionPath = collectionPath
            self.labelSelector = labelSelector
            self.fieldSelector = fieldSelector
            self.bookmarks = bookmarks
        }
    }

    let eventLoop: any EventLoop
    var resourceVersion = 1000
    var collections: [String: Collection] = [
        "/api/v1/services": Collection(kind: "Service", apiVersion: "v1", namespaced: true),
        "/api/v1/endpoints": Collection(kind: "Endpoints", apiVersion: "v1", namespaced: true),
        "/api/v1/nodes": Collection(kind: "Node", apiVersion: "v1", namespaced: false),
        "/apis/discovery.k8s.io/v1/endpointslices": Collection(kind: "EndpointSlice", apiVersion: "discovery.k8s.io/v1", namespaced: true),
        "/apis/coordination.k8s.io/v1/leases": Collection(kind: "Lease", apiVersion: "coordination.k8s.io/v1", namespaced: true),
    ]
    /// API discovery documents by path (`/apis/GROUP`, `/apis/GROUP/VERSION`); any other discovery path is 404.
    var discovery: [String: JSON] = [:]

    /// Serves Gateway API's route kinds and ReferenceGrants at `version` (for TCPRoute and UDPRoute; the
    /// others at v1), with their discovery documents, as a server with the CRDs installed does.
    func installGatewayAPI(routeVersion: String = "v1") {
        let group = "gateway.networking.k8s.io"
        var byVersion: [String: [(plural: String, kind: String)]] = [:]
        for (plural, kind) in [("tcproutes", "TCPRoute"), ("udproutes", "UDPRoute")] {
            byVersion[routeVersion, default: []].append((plural, kind))
        }
        for (plural, kind) in [("httproutes", "HTTPRoute"), ("grpcroutes", "GRPCRoute"), ("referencegrants", "ReferenceGrant")] {
            byVersion["v1", default: []].append((plural, kind))
        }
        for (version, resources) in byVersion {
            for (plural, kind) in resources {
                collections["/apis/\(group)/\(version)/\(plural)"] = Collection(kind: kind, apiVersion: "\(group)/\(version)", namespaced: true)
            }
            discovery["/apis/\(group)/\(version)"] = [
                "kind": "APIResourceList", "groupVersion": .string("\(group)/\(version)"),
                "resources": .array(resources.flatMap { resource -> [JSON] in
                    [["name": .string(resource.plural), "namespaced": true, "kind": .string(resource.kind)]]
                        + (resource.kind == "ReferenceGrant" ? [] : [["name": .string("\(resource.plural)/status"), "namespaced": true, "kind": .string(resource.kind)]])
                }),
            ]
        }
        discovery["/apis/\(group)"] = [
            "kind": "APIGroup", "name": .string(group),
            "versions": .array(byVersion.keys.sorted().map { ["groupVersion": .string("\(group)/\($0)"), "version": .string($0)] }),
        ]
    }

    /// Tokens the server accepts; nil accepts any request.
    var acceptedTokens: Set<String>?
    var requests: [RecordedRequest] = []
    /// Bodies of the Events created.
    var createdEvents: [JSON] = []
    /// Answer a watch from a compacted resource version with 200 and an ERROR event, rather than HTTP 410.
    var goneAsErrorEvent = false
    /// Accept watches, then send nothing and never end them.
    var silentWatches = false
    /// Answer every watch, whatever its resource version, as expired (410, or an ERROR event with `goneAsErrorEvent`).
    var goneWatches = false
    /// Answer this many lists with a response head and the first bytes of a body, then nothing (a half-open connection).
    var stallingLists = 0
    /// Size of the HTTP chunks a watch event is cut into; 0 cuts each event into three uneven chunks.
    var chunkSize = 0
    /// Answer this many list pages asked with a `continue` token with 410 Expired.
    var expiringContinueTokens = 0
    /// Answer this many GET requests with 503 before serving again.
    var failingRequests = 0
    /// While true, answer every request with 503 (an API server that lost etcd).
    var unavailable = false
    /// While true, answer no request at all (a partitioned server: the request hangs until the client gives up).
    var hangingRequests = false
    /// How many writes were refused with 409 (a stale resource version, or a name already taken).
    var conflicts = 0
    private var watchers: [ObjectIdentifier: Watcher] = [:]
    private var uidCounter = 0

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    var watchCount: Int { watchers.count }

    func requests(to path: String, watch: Bool) -> [RecordedRequest] {
        requests.filter { $0.path == path && $0.isWatch == watch }
    }

    // MARK: Changing objects

    private func collectionPath(for object: JSON) -> String? {
        collections.first { $0.value.kind == object["kind"]?.string }?.key
    }

    private static func key(of object: JSON) -> String {
        let name = object["metadata"]?["name"]?.string ?? ""
        if let namespace = object["metadata"]?["namespace"]?.string { return "\(namespace)/\(name)" }
        return name
    }

    /// Creates or replaces an object (by its kind, namespace and name): a new resource version, an ADDED
    /// or MODIFIED event to the watchers. Returns the object as stored.
    @discardableResult
    func apply(_ object: JSON) -> JSON {
        eventLoop.preconditionInEventLoop()
        guard let path = collectionPath(for: object) else { preconditionFailure("unknown kind in \(object)") }
        resourceVersion += 1
        var stored = object
        let key = Self.key(of: object)
        let existing = collections[path]?.objects[key]
        var metadata = stored["metadata"] ?? [:]
        if metadata["uid"] == nil {
            uidCounter += 1
            metadata["uid"] = existing?["metadata"]?["uid"] ?? .string("0000000\(uidCounter)-aaaa-bbbb-cccc-000000000000")
        }
        metadata["resourceVersion"] = .string(String(resourceVersion))
        if metadata["creationTimestamp"] == nil { metadata["creationTimestamp"] = "2025-01-01T00:00:00Z" }
        stored["metadata"] = metadata
        collections[path]?.objects[key] = stored
        record(path: path, type: existing == nil ? "ADDED" : "MODIFIED", object: stored)
        return stored
    }

    /// Deletes an object: a DELETED event carrying its last state with a new resource version.
    func delete(kind: String, namespace: String?, name: String) {
        eventLoop.preconditionInEventLoop()
        guard let path = collections.first(where: { $0.value.kind == kind })?.key else { return }
        let key = namespace.map { "\($0)/\(name)" } ?? name
        guard var object = collections[path]?.objects.removeValue(forKey: key) else { return }
        resourceVersion += 1
        object["metadata"]?["resourceVersion"] = .string(String(resourceVersion))
        record(path: path, type: "DELETED", object: object)
    }

    private func record(path: String, type: String, object: JSON) {
        collections[path]?.history.append((resourceVersion, type, object))
        for watcher in watchers.values where watcher.collectionPath == path && matches(object, watcher.labelSelector, watcher.fieldSelector) {
            send(["type": .string(type), "object": object], to: watcher)
        }
    }

    /// Forgets all history: watches from any resource version seen so far get 410 Gone.
    func compact() {
        for path in collections.keys { collections[path]?.compactedThrough = resourceVersion }
    }

    /// Closes every watch connection abruptly, with no final chunk.
    func dropWatches() {
        for watcher in watchers.values {
            watcher.timeout?.cancel()
            watcher.context.close(promise: nil)
        }
        watchers.removeAll()
    }

    /// Sends a BOOKMARK at the current resource version to every watcher that allows them.
    func sendBookmarks() {
        for watcher in watchers.values where watcher.bookmarks {
            guard let collection = collections[watcher.collectionPath] else { continue }
            send(
                [
                    "type": "BOOKMARK",
                    "object": [
                        "kind": .string(collection.kind), "apiVersion": .string(collection.apiVersion),
                        "metadata": ["resourceVersion": .string(String(resourceVersion))],
                    ],
                ], to: watcher)
        }
    }

    /// Sends an ERROR event with this Status to every watcher of a collection, then ends those watches.
    func sendError(_ status: JSON, toWatchersOf path: String) {
        for (id, watcher) in watchers where watcher.collectionPath == path {
            send(["type": "ERROR", "object": status], to: watcher)
            end(watcher)
            watchers[id] = nil
        }
    }

    static func status(code: Int, reason: String, message: String) -> JSON {
        [
            "kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Failure", "message": .string(message),
            "reason": .string(reason), "code": .int(code),
        ]
    }

    // MARK: Serving

    func handle(_ head: HTTPRequestHead, body: [UInt8], context: ChannelHandlerContext) {
        let (path, query) = Self.split(head.uri)
        var token: String?
        if let authorization = head.headers.first(name: "Authorization"), authorization.hasPrefix("Bearer ") {
            token = String(authorization.dropFirst("Bearer ".count))
        }
        requests.append(RecordedRequest(method: "\(head.method)", path: path, query: query, token: token))

        if let acceptedTokens, !acceptedTokens.contains(token ?? "") {
            respond(context, .unauthorized, Self.status(code: 401, reason: "Unauthorized", message: "Unauthorized"))
            return
        }
        if hangingRequests { return }
        if unavailable {
            respond(context, .serviceUnavailable, Self.status(code: 503, reason: "ServiceUnavailable", message: "etcd is unavailable"))
            return
        }
        if head.method == .POST, path.hasPrefix("/api/v1/namespaces/"), path.hasSuffix("/events") {
            guard let event = JSON.decode(body) else {
                respond(context, .badRequest, Self.status(code: 400, reason: "BadRequest", message: "bad JSON"))
                return
            }
            if let name = event["metadata"]?["name"], createdEvents.contains(where: { $0["metadata"]?["name"] == name }) {
                respond(context, .conflict, Self.status(code: 409, reason: "AlreadyExists", message: "events \"\(name.string ?? "")\" already exists"))
                return
            }
            createdEvents.append(event)
            respond(context, .created, event)
            return
        }
        if head.method == .GET, path.hasPrefix("/apis/"), path.split(separator: "/").count <= 3 {
            if let document = discovery[path] {
                respond(context, .ok, document)
            } else {
                respond(context, .notFound, Self.status(code: 404, reason: "NotFound", message: "the server could not find the requested resource"))
            }
            return
        }
        if let route = objectRoute(path) {
            handleObject(head, route: route, body: body, context: context)
            return
        }
        guard head.method == .GET, collections[path] != nil else {
            respond(context, .notFound, Self.status(code: 404, reason: "NotFound", message: "the server could not find the requested resource"))
            return
        }
        if failingRequests > 0 {
            failingRequests -= 1
            respond(context, .serviceUnavailable, Self.status(code: 503, reason: "ServiceUnavailable", message: "etcd is busy"))
            return
        }
        if query["watch"] == "true" {
            watch(path: path, query: query, context: context)
        } else {
            list(path: path, query: query, context: context)
        }
    }

    // MARK: Single objects

    struct ObjectRoute {
        /// The collection's cluster-wide path, its key in `collections`.
        var collectionPath: String
        var namespace: String?
        var name: String?
        var subresource: String?
    }

    /// `/api/v1/namespaces/NS/PLURAL[/NAME[/SUB]]`, `/apis/G/V/namespaces/NS/PLURAL[/NAME[/SUB]]` and, for a
    /// cluster-scoped collection, `…/PLURAL/NAME[/SUB]`. Nil for a cluster-wide collection (lists and watches).
    private func objectRoute(_ path: String) -> ObjectRoute? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        let prefix = parts.first == "api" ? 2 : parts.first == "apis" ? 3 : 0
        guard prefix > 0, parts.count > prefix, !parts.contains("") else { return nil }
        let base = "/" + parts[..<prefix].joined(separator: "/")
        var rest = Array(parts[prefix...])
        var namespace: String?
        if rest.first == "namespaces", rest.count >= 3 {
            namespace = rest[1]
            rest.removeFirst(2)
        }
        guard rest.count <= 3, let collection = collections[base + "/" + rest[0]], collection.namespaced == (namespace != nil)
        else { return nil }
        if namespace == nil, rest.count == 1 { return nil }
        return ObjectRoute(
            collectionPath: base + "/" + rest[0], namespace: namespace, name: rest.count > 1 ? rest[1] : nil,
            subresource: rest.count > 2 ? rest[2] : nil)
    }

    private func handleObject(_ head: HTTPRequestHead, route: ObjectRoute, body: [UInt8], context: ChannelHandlerContext) {
        guard let collection = collections[route.collectionPath] else { return }
        let resource = String(route.collectionPath.split(separator: "/").last ?? "")
        let group = route.collectionPath.hasPrefix("/apis/") ? "." + (route.collectionPath.split(separator: "/").dropFirst().first ?? "") : ""
        let qualified = resource + group
        func key(_ name: String) -> String { route.namespace.map { "\($0)/\(name)" } ?? name }
        func notFound(_ name: String) {
            respond(context, .notFound, Self.status(code: 404, reason: "NotFound", message: "\(qualified) \"\(name)\" not found"))
        }
        func invalid(_ status: HTTPResponseStatus, _ reason: String, _ message: String) {
            respond(context, status, Self.status(code: Int(status.code), reason: reason, message: message))
        }
        func conflict(_ name: String) {
            conflicts += 1
            respond(
                context, .conflict,
                Self.status(
                    code: 409, reason: "Conflict",
                    message: "Operation cannot be fulfilled on \(qualified) \"\(name)\": the object has been modified; please apply your changes to the latest version and try again"))
        }
        /// The body as this collection's object, at this route's namespace.
        func normalized(_ object: JSON) -> JSON {
            var object = object
            object["kind"] = .string(collection.kind)
            object["apiVersion"] = .string(collection.apiVersion)
            if object["metadata"] == nil { object["metadata"] = [:] }
            if let namespace = route.namespace { object["metadata"]?["namespace"] = .string(namespace) }
            return object
        }
        let decoded = JSON.decode(body)

        switch (head.method, route.name, route.subresource) {
        case (.GET, let name?, nil):
            guard let object = collection.objects[key(name)] else { return notFound(name) }
            respond(context, .ok, object)

        case (.POST, nil, nil):
            guard let object = decoded, case .object = object else { return invalid(.badRequest, "BadRequest", "bad JSON") }
            guard let name = object["metadata"]?["name"]?.string, !name.isEmpty else {
                return invalid(.unprocessableEntity, "Invalid", "metadata.name: Required value: name or generateName is required")
            }
            if let namespace = object["metadata"]?["namespace"]?.string, namespace != route.namespace {
                return invalid(.badRequest, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
            }
            if collection.objects[key(name)] != nil {
                conflicts += 1
                return respond(context, .conflict, Self.status(code: 409, reason: "AlreadyExists", message: "\(qualified) \"\(name)\" already exists"))
            }
            var created = normalized(object)
            created["metadata"]?["resourceVersion"] = nil
            created["metadata"]?["uid"] = nil
            respond(context, .created, apply(created))

        case (.PUT, let name?, let subresource) where subresource == nil || subresource == "status":
            guard let object = decoded, case .object = object else { return invalid(.badRequest, "BadRequest", "bad JSON") }
            guard let existing = collection.objects[key(name)] else { return notFound(name) }
            if object["metadata"]?["name"]?.string != name {
                return invalid(.badRequest, "BadRequest", "the name of the object (\(object["metadata"]?["name"]?.string ?? "")) does not match the name on the URL (\(name))")
            }
            if let version = object["metadata"]?["resourceVersion"]?.string, !version.isEmpty,
                version != existing["metadata"]?["resourceVersion"]?.string
            {
                return conflict(name)
            }
            var stored: JSON
            if subresource == "status" {
                stored = existing
                stored["status"] = object["status"]
            } else {
                stored = normalized(object)
                stored["metadata"]?["uid"] = existing["metadata"]?["uid"]
                stored["metadata"]?["creationTimestamp"] = existing["metadata"]?["creationTimestamp"]
                if existing["status"] != nil { stored["status"] = existing["status"] }  // the status subresource's own
            }
            respond(context, .ok, apply(stored))

        case (.PATCH, let name?, let subresource) where subresource == nil || subresource == "status":
            guard head.headers.first(name: "Content-Type") == "application/merge-patch+json" else {
                return invalid(.unsupportedMediaType, "UnsupportedMediaType", "the stand-in server takes merge patches only")
            }
            guard let patch = decoded, case .object = patch else { return invalid(.badRequest, "BadRequest", "bad JSON") }
            guard let existing = collection.objects[key(name)] else { return notFound(name) }
            if let version = patch["metadata"]?["resourceVersion"]?.string,
                version != existing["metadata"]?["resourceVersion"]?.string
            {
                return conflict(name)
            }
            let merged = Self.mergePatch(existing, patch)
            var stored = existing
            if subresource == "status" {
                stored["status"] = merged["status"]
            } else {
                stored = merged
                stored["status"] = existing["status"]
                stored["metadata"]?["uid"] = existing["metadata"]?["uid"]
            }
            respond(context, .ok, apply(stored))

        case (.GET, nil, _):
            // Lists within one namespace are not served (as before single objects were).
            invalid(.notFound, "NotFound", "the server could not find the requested resource")

        default:
            invalid(.methodNotAllowed, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        }
    }

    /// RFC 7386: objects merge key by key, `null` deletes, anything else replaces.
    static func mergePatch(_ target: JSON, _ patch: JSON) -> JSON {
        guard case .object(let fields) = patch else { return patch }
        var result: JSON
        if case .object = target { result = target } else { result = [:] }
        for (key, value) in fields {
            if value == .null {
                result[key] = nil
            } else {
                result[key] = mergePatch(result[key] ?? .null, value)
            }
        }
        return result
    }

    private func list(path: String, query: [String: String], context: ChannelHandlerContext) {
        guard let collection = collections[path] else { return }
        if stallingLists > 0 {
            stallingLists -= 1
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: "4096")
            context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "{\"kind\":")))), promise: nil)
            return
        }
        var offset = 0
        if let token = query["continue"] {
            if expiringContinueTokens > 0 {
                expiringContinueTokens -= 1
                respond(
                    context, .gone,
                    Self.status(
                        code: 410, reason: "Expired",
                        message: "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."))
                return
            }
            offset = Int(token.split(separator: "-").last ?? "") ?? 0
        }
        let selected = collection.objects.keys.sorted().compactMap { collection.objects[$0] }.filter {
            matches($0, query["labelSelector"], query["fieldSelector"])
        }
        let limit = query["limit"].flatMap { Int($0) }.flatMap { $0 > 0 ? $0 : nil } ?? Int.max
        let end = offset + min(limit, max(0, selected.count - offset))
        let page = selected[min(offset, selected.count)..<end].map { item -> JSON in
            // Items of a typed list carry no kind or apiVersion.
            var item = item
            item["kind"] = nil
            item["apiVersion"] = nil
            return item
        }
        var metadata: JSON = ["resourceVersion": .string(String(resourceVersion))]
        if end < selected.count { metadata["continue"] = .string("page-\(resourceVersion)-\(end)") }
        respond(
            context, .ok,
            [
                "kind": .string(collection.kind + "List"), "apiVersion": .string(collection.apiVersion),
                "metadata": metadata, "items": .array(page),
            ])
    }

    private func watch(path: String, query: [String: String], context: ChannelHandlerContext) {
        guard let collection = collections[path] else { return }
        let from = query["resourceVersion"].flatMap { Int($0) }
        let expired = goneWatches || from.map { $0 < collection.compactedThrough } == true
        let tooOld = "too old resource version: \(from.map(String.init) ?? "-") (\(collection.compactedThrough))"
        if expired, !goneAsErrorEvent {
            respond(context, .gone, Self.status(code: 410, reason: "Expired", message: tooOld))
            return
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Transfer-Encoding", value: "chunked")
        context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        context.flush()
        let watcher = Watcher(
            context: context, collectionPath: path, labelSelector: query["labelSelector"],
            fieldSelector: query["fieldSelector"], bookmarks: query["allowWatchBookmarks"] == "true")
        if silentWatches {
            watchers[ObjectIdentifier(watcher)] = watcher
            return
        }
        if expired {
            send(["type": "ERROR", "object": Self.status(code: 410, reason: "Expired", message: tooOld)], to: watcher)
            end(watcher)
            return
        }
        if let from {
            for entry in collection.history where entry.resourceVersion > from && matches(entry.object, watcher.labelSelector, watcher.fieldSelector) {
                send(["type": .string(entry.type), "object": entry.object], to: watcher)
            }
        } else {
            for object in collection.objects.values where matches(object, watcher.labelSelector, watcher.fieldSelector) {
                send(["type": "ADDED", "object": object], to: watcher)
            }
        }
        let id = ObjectIdentifier(watcher)
        watchers[id] = watcher
        if let seconds = query["timeoutSeconds"].flatMap({ Int($0) }) {
            watcher.timeout = eventLoop.scheduleTask(in: .seconds(Int64(seconds))) { [weak self] in
                guard let self, let watcher = self.watchers.removeValue(forKey: id) else { return }
                self.end(watcher)
            }
        }
    }

    func connectionClosed(_ context: ChannelHandlerContext) {
        for (id, watcher) in watchers where watcher.context === context {
            watcher.timeout?.cancel()
            watchers[id] = nil
        }
    }

    private func send(_ event: JSON, to watcher: Watcher) {
        let bytes = event.encoded() + [UInt8(ascii: "\n")]
        var pieces: [ArraySlice<UInt8>] = []
        if chunkSize > 0 {
            var start = 0
            while start < bytes.count {
                pieces.append(bytes[start..<min(bytes.count, start + chunkSize)])
                start += chunkSize
            }
        } else {
            let first = bytes.count / 3, second = bytes.count * 2 / 3 + 1
            pieces = [bytes[..<first], bytes[first..<second], bytes[second...]].filter { !$0.isEmpty }
        }
        for piece in pieces {
            watcher.context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: piece)))), promise: nil)
            watcher.context.flush()
        }
    }

    private func end(_ watcher: Watcher) {
        watcher.timeout?.cancel()
        watcher.context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)
    }

    private func respond(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ body: JSON) {
        let bytes = body.encoded()
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(bytes.count))
        context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: bytes)))), promise: nil)
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)
    }

    // MARK: Selectors and URLs

    /// Equality-based selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`; fields `metadata.name`, `metadata.namespace`.
    private func matches(_ object: JSON, _ labelSelector: String?, _ fieldSelector: String?) -> Bool {
        let labels = object["metadata"]?["labels"]
        for requirement in (labelSelector ?? "").split(separator: ",").map({ String($0).trimmingCharacters(in: .whitespaces) }) where !requirement.isEmpty {
            if let range = requirement.range(of: "!=") {
                if labels?[String(requirement[..<range.lowerBound])]?.string == String(requirement[range.upperBound...]) { return false }
            } else if let range = requirement.range(of: "==") ?? requirement.range(of: "=") {
                if labels?[String(requirement[..<range.lowerBound])]?.string != String(requirement[range.upperBound...]) { return false }
            } else if requirement.hasPrefix("!") {
                if labels?[String(requirement.dropFirst())] != nil { return false }
            } else if labels?[requirement] == nil {
                return false
            }
        }
        for requirement in (fieldSelector ?? "").split(separator: ",") {
            let parts = requirement.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            let field = parts[0] == "metadata.name" ? "name" : parts[0] == "metadata.namespace" ? "namespace" : nil
            if let field, object["metadata"]?[field]?.string != parts[1] { return false }
        }
        return true
    }

    private static func split(_ uri: String) -> (String, [String: String]) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri, [:]) }
        var query: [String: String] = [:]
        for pair in uri[uri.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
            query[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        return (String(uri[..<mark]), query)
    }
}

/// One connection's HTTP handler: collects a request and hands it to the state.
final class APIHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: ServerState
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []

    init(state: ServerState) {
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
        case .body(let buffer):
            body.append(contentsOf: buffer.readableBytesView)
        case .end:
            if let head { state.handle(head, body: body, context: context) }
            head = nil
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.connectionClosed(context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
