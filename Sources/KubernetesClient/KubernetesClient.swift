import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOSSL

/// A small Kubernetes API client: list (with paging), watch (a stream of events), get, create, replace
/// and patch (of an object or its status subresource).
/// Generic: it knows resources and JSON, nothing of what the agent does with them.
///
/// Writes are optimistic: a replace carrying `metadata.resourceVersion` fails with
/// ``KubernetesError/conflict(request:status:)`` when someone else wrote the object first.
///
/// Call ``shutdown()`` before dropping the last reference.
public final class KubernetesClient: Sendable {
    /// Limits and timeouts.
    public struct Options: Sendable {
        /// Time allowed to open a connection (TCP and TLS).
        public var connectTimeout: Duration = .seconds(10)
        /// Time allowed for a list page or a create to start answering (its response head).
        public var requestTimeout: Duration = .seconds(60)
        /// A list page or a create whose body stays silent this long after its head (a half-open connection)
        /// is given up with ``KubernetesError/readIdle(request:seconds:)``. Watches have their own idle timeout.
        public var readIdleTimeout: Duration = .seconds(30)
        /// The largest watch event (one line) accepted; a longer one fails the watch with
        /// ``KubernetesError/eventTooLarge(request:limit:)`` as soon as the framer holds that many bytes
        /// (it never buffers the rest). 4 MiB: etcd refuses objects over 1.5 MiB, and a Service or
        /// EndpointSlice is far smaller; several of these fit the DaemonSet's 256 Mi memory limit
        /// (the buffered bytes, the decoded copy and the cache).
        public var maximumEventSize: Int = 4 << 20
        /// The largest list page or response body accepted; a larger one fails with
        /// ``KubernetesError/responseTooLarge(request:limit:)``. 32 MiB: pages are `limit=500`, so this is
        /// over 64 KiB an object, and the page plus its decoded copy stays well inside 256 Mi.
        public var maximumBodySize: Int = 32 << 20
        /// How many decoded watch events may wait for a consumer that has fallen behind; one more fails
        /// the watch with ``KubernetesError/watchBacklog(request:limit:)`` (see ``WatchStream``).
        public var maximumBufferedEvents: Int = 256
        /// The User-Agent header.
        public var userAgent: String = "canary-agent"
        /// HTTP/1.1 connections to the API server at most (watches hold one each).
        public var maximumConnections = 32
        public init() {}
    }

    public let configuration: KubernetesConfiguration
    public let options: Options
    private let httpClient: HTTPClient
    /// Where requests go: the server URL, or with `tls-server-name` the URL naming that host,
    /// which `dnsOverride` connects to the server's own host.
    private let requestBase: String
    private let logger: Logger

    public init(
        configuration: KubernetesConfiguration, options: Options = Options(),
        logger: Logger = Logger(label: "kubernetes-client")
    ) throws(KubernetesError) {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caPEM = configuration.certificateAuthorityPEM {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(caPEM))
            } catch {
                throw .invalidCertificate(source: "\(configuration.origin) certificate authority", reason: "\(error)")
            }
        }
        if configuration.insecureSkipTLSVerify {
            tls.certificateVerification = .none
        }
        if let client = configuration.clientCertificate {
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(client.certificatePEM).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: client.keyPEM, format: .pem))
            } catch {
                throw .invalidCertificate(source: "\(configuration.origin) client certificate", reason: "\(error)")
            }
        }
        let timeout = HTTPClient.Configuration.Timeout(connect: TimeAmount(options.connectTimeout))
        var clientConfiguration = HTTPClient.Configuration(tlsConfiguration: tls, timeout: timeout)
        // Each watch holds a connection for its whole life over HTTP/1.1 (an API server that does not
        // negotiate HTTP/2): Services, slices, the Node, four route kinds and ReferenceGrants are eight
        // already, async-http-client's default limit per host, which would leave no connection for a
        // status write, a Lease renewal or an Event. Leave room for all of them.
        clientConfiguration.connectionPool = .init(
            idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: options.maximumConnections)
        var requestBase = configuration.server
        if let name = configuration.tlsServerName, !name.isEmpty, var url = URLComponents(string: configuration.server),
            let host = url.host, host != name
        {
            // As kubectl: connect to the server's host, but send `name` as the TLS server name and
            // check the certificate against it. The requests name `name`; the connection goes to `host`.
            url.host = name
            if let rewritten = url.string {
                requestBase = rewritten
                clientConfiguration.dnsOverride = [name: host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host]
            }
        }
        self.requestBase = requestBase
        self.httpClient = HTTPClient(
            eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: clientConfiguration,
            backgroundActivityLogger: logger)
        self.configuration = configuration
        self.options = options
        self.logger = logger
    }

    /// Closes every connection. Call once, before the client goes away.
    public func shutdown() async {
        do {
            try await httpClient.shutdown()
        } catch {
            logger.debug("HTTP client shutdown: \(error)")
        }
    }

    // MARK: List

    /// One page of a list. `limit` asks for at most that many items; pass the page's
    /// `metadata.continue` back as `continue` for the next one.
    public func list<Object: Decodable & Sendable>(
        _ resource: ResourceDescriptor, of type: Object.Type = Object.self, namespace: String? = nil,
        selectors: Selectors = Selectors(), limit: Int? = nil, continue continueToken: String? = nil
    ) async throws(KubernetesError) -> ObjectList<Object> {
        var query: [(String, String)] = []
        if let label = selectors.labelSelector { query.append(("labelSelector", label)) }
        if let field = selectors.fieldSelector { query.append(("fieldSelector", field)) }
        if let limit { query.append(("limit", String(limit))) }
        if let continueToken { query.append(("continue", continueToken)) }
        let path = resource.path(namespace: namespace)
        let request = "GET \(path)"
        let response = try await send(method: .get, path: path, query: query, body: nil, request: request)
        let body = try await collect(response.body, request: request)
        do {
            return try JSONDecoder().decode(ObjectList<Object>.self, from: Data(buffer: body))
        } catch {
            throw .decoding(request: request, reason: Self.describe(error))
        }
    }

    /// All pages of a list, with the list's resource version (where a watch starts). A continue token that
    /// expires midway (410) starts the list over, as the API server asks.
    public func listAll<Object: Decodable & Sendable>(
        _ resource: ResourceDescriptor, of type: Object.Type = Object.self, namespace: String? = nil,
        selectors: Selectors = Selectors(), pageSize: Int? = 500
    ) async throws(KubernetesError) -> (items: [Object], resourceVersion: String) {
        var items: [Object] = []
        var continueToken: String?
        var restarts = 0
        while true {
            let page: ObjectList<Object>
            do {
                page = try await list(
                    resource, of: type, namespace: namespace, selectors: selectors, limit: pageSize,
                    continue: continueToken)
            } catch let error where error.isGone && continueToken != nil && restarts < 3 {
                logger.info("list \(resource): continue token expired, listing again from the start")
                items.removeAll()
                continueToken = nil
                restarts += 1
                continue
            }
            items.append(contentsOf: page.items)
            if let next = page.metadata.continue, !next.isEmpty {
                continueToken = next
            } else {
                return (items, page.metadata.resourceVersion ?? "")
            }
        }
    }

    // MARK: Watch

    /// Opens a watch and returns its events as they arrive. The stream ends when the server closes the
    /// watch (its `timeoutSeconds`), and fails with a ``KubernetesError`` when the connection drops, an
    /// event cannot be decoded, or nothing arrives for `idleTimeout`.
    /// A non-2xx answer (410 Gone, 401...) is thrown here, before any event.
    public func watch<Object: Decodable & Sendable>(
        _ resource: ResourceDescriptor, of type: Object.Type = Object.self, namespace: String? = nil,
        selectors: Selectors = Selectors(), resourceVersion: String?, timeoutSeconds: Int? = nil,
        idleTimeout: Duration? = nil, allowBookmarks: Bool = true
    ) async throws(KubernetesError) -> WatchStream<Object> {
        var query: [(String, String)] = [("watch", "true")]
        if let resourceVersion, !resourceVersion.isEmpty { query.append(("resourceVersion", resourceVersion)) }
        if allowBookmarks { query.append(("allowWatchBookmarks", "true")) }
        if let timeoutSeconds { query.append(("timeoutSeconds", String(timeoutSeconds))) }
        if let label = selectors.labelSelector { query.append(("labelSelector", label)) }
        if let field = selectors.fieldSelector { query.append(("fieldSelector", field)) }
        let path = resource.path(namespace: namespace)
        let request = "WATCH \(path)" + (resourceVersion.map { "@\($0)" } ?? "")
        let response = try await send(method: .get, path: path, query: query, body: nil, request: request)
        return WatchStream(
            body: response.body, request: request, maximumEventSize: options.maximumEventSize,
            maximumBufferedEvents: options.maximumBufferedEvents, idleTimeout: idleTimeout)
    }

    // MARK: Create

    /// POSTs an object to a collection and returns the server's answer body.
    @discardableResult
    public func create(
        _ resource: ResourceDescriptor, namespace: String?, body: some Encodable & Sendable
    ) async throws(KubernetesError) -> ByteBuffer {
        let path = resource.path(namespace: namespace)
        let request = "POST \(path)"
        let encoded: Data
        do {
            encoded = try JSONEncoder().encode(body)
        } catch {
            throw .decoding(request: request, reason: "cannot encode the body: \(error)")
        }
        let response = try await send(
            method: .post, path: path, query: [], body: ByteBuffer(bytes: encoded), request: request)
        return try await collect(response.body, request: request)
    }

    /// Records a core/v1 Event on an object (POST /api/v1/namespaces/NS/events).
    public func recordEvent(_ event: EventRecord) async throws(KubernetesError) {
        try await create(.events, namespace: event.involvedObject.namespace ?? "default", body: event)
    }

    /// POSTs an object to a collection and returns it as the server stored it (its `resourceVersion`, `uid`...).
    /// A name already taken fails with ``KubernetesError/conflict(request:status:)`` (reason `AlreadyExists`).
    public func create<Object: Codable & Sendable>(
        _ resource: ResourceDescriptor, namespace: String?, object: Object
    ) async throws(KubernetesError) -> Object {
        let path = resource.path(namespace: namespace)
        return try await write(.post, path: path, query: [], body: try Self.encode(object, request: "POST \(path)"))
    }

    // MARK: Discovery

    /// GETs an API discovery document (`/apis/GROUP` gives an ``APIGroup``, `/apis/GROUP/VERSION` an
    /// ``APIResourceList``); nil when the server answers 404 (the group or version is not served).
    public func discovery<Document: Decodable & Sendable>(
        _ path: String, as type: Document.Type = Document.self
    ) async throws(KubernetesError) -> Document? {
        let request = "GET \(path)"
        do {
            let response = try await send(method: .get, path: path, query: [], body: nil, request: request)
            return try Self.decode(Document.self, from: try await collect(response.body, request: request), request: request)
        } catch where error.isNotFound {
            return nil
        }
    }

    // MARK: Get, replace, patch

    /// GETs one object by name (404: ``KubernetesError/isNotFound``).
    public func get<Object: Decodable & Sendable>(
        _ resource: ResourceDescriptor, namespace: String?, name: String, as type: Object.Type = Object.self
    ) async throws(KubernetesError) -> Object {
        let path = Self.objectPath(resource, namespace: namespace, name: name)
        let request = "GET \(path)"
        let response = try await send(method: .get, path: path, query: [], body: nil, request: request)
        return try Self.decode(Object.self, from: try await collect(response.body, request: request), request: request)
    }

    /// PUTs a whole object in place of the stored one and returns the server's copy (with its new
    /// `resourceVersion`). With `metadata.resourceVersion` set in `object` the write is conditional: when the
    /// stored object has moved on, it fails with ``KubernetesError/conflict(request:status:)``; read it again.
    /// Fields the `Object` type does not model are not sent, so the server drops them.
    public func replace<Object: Codable & Sendable>(
        _ resource: ResourceDescriptor, namespace: String?, name: String, object: Object
    ) async throws(KubernetesError) -> Object {
        try await replace(resource, namespace: namespace, name: name, subresource: nil, object: object)
    }

    /// PUTs an object to its `status` subresource: the server takes the object's status and ignores the rest
    /// (its spec, most metadata). Conditional on `metadata.resourceVersion` as ``replace(_:namespace:name:object:)``.
    public func replaceStatus<Object: Codable & Sendable>(
        _ resource: ResourceDescriptor, namespace: String?, name: String, object: Object
    ) async throws(KubernetesError) -> Object {
        try await replace(resource, namespace: namespace, name: name, subresource: "status", object: object)
    }

    /// How a PATCH body is to be read (its Content-Type).
    public enum PatchType: Sendable, Hashable {
        /// JSON merge patch (RFC 7386): objects merge, `null` deletes, lists are replaced whole.
        case merge
        /// JSON patch (RFC 6902): a list of operations.
        case json
        /// Kubernetes' strategic merge patch (built-in types only; lists merge by their keys).
        case strategicMerge
        /// Server-side apply: the body is the whole intent of `fieldManager`; `force` takes over conflicting fields.
        case apply(fieldManager: String, force: Bool = false)

        var contentType: String {
            switch self {
            case .merge: "application/merge-patch+json"
            case .json: "application/json-patch+json"
            case .strategicMerge: "application/strategic-merge-patch+json"
            case .apply: "application/apply-patch+yaml"
            }
        }
    }

    /// PATCHes an object (or, with `subresource`, e.g. `"status"`, that subresource) and returns the result.
    /// A merge patch that carries `metadata.resourceVersion` is conditional on it (409 on a mismatch).
    public func patch<Object: Decodable & Sendable>(
        _ resource: ResourceDescriptor, namespace: String?, name: String, subresource: String? = nil,
        patch: some Encodable & Sendable, type: PatchType = .merge, as objectType: Object.Type = Object.self
    ) async throws(KubernetesError) -> Object {
        let path = Self.objectPath(resource, namespace: namespace, name: name, subresource: subresource)
        var query: [(String, String)] = []
        if case .apply(let fieldManager, let force) = type {
            query.append(("fieldManager", fieldManager))
            if force { query.append(("force", "true")) }
        }
        let body = try Self.encode(patch, request: "PATCH \(path)")
        return try await write(.patch(contentType: type.contentType), path: path, query: query, body: body)
    }

    /// PATCHes an object's `status` subresource (see ``patch(_:namespace:name:subresource:patch:type:as:)``).
    public func patchStatus<Object: Decodable & Sendable>(
        _ resource: ResourceDescriptor, namespace: String?, name: String, patch: some Encodable & Sendable,
        type: PatchType = .merge, as objectType: Object.Type = Object.self
    ) async throws(KubernetesError) -> Object {
        try await self.patch(
            resource, namespace: namespace, name: name, subresource: "status", patch: patch, type: type, as: objectType)
    }

    private func replace<Object: Codable & Sendable>(
        _ resource: ResourceDescriptor, namespace: String?, name: String, subresource: String?, object: Object
    ) async throws(KubernetesError) -> Object {
        let path = Self.objectPath(resource, namespace: namespace, name: name, subresource: subresource)
        return try await write(.put, path: path, query: [], body: try Self.encode(object, request: "PUT \(path)"))
    }

    /// Sends a body and decodes the answer as an `Object`.
    private func write<Object: Decodable & Sendable>(
        _ method: Verb, path: String, query: [(String, String)], body: ByteBuffer
    ) async throws(KubernetesError) -> Object {
        let request = "\(method.name) \(path)"
        let response = try await send(method: method, path: path, query: query, body: body, request: request)
        return try Self.decode(Object.self, from: try await collect(response.body, request: request), request: request)
    }

    /// `COLLECTION/NAME[/SUBRESOURCE]`.
    static func objectPath(
        _ resource: ResourceDescriptor, namespace: String?, name: String, subresource: String? = nil
    ) -> String {
        resource.path(namespace: namespace) + "/" + name + (subresource.map { "/" + $0 } ?? "")
    }

    private static func encode(_ value: some Encodable, request: String) throws(KubernetesError) -> ByteBuffer {
        do {
            return ByteBuffer(bytes: try JSONEncoder().encode(value))
        } catch {
            throw .decoding(request: request, reason: "cannot encode the body: \(describe(error))")
        }
    }

    private static func decode<Object: Decodable>(
        _ type: Object.Type, from body: ByteBuffer, request: String
    ) throws(KubernetesError) -> Object {
        do {
            return try JSONDecoder().decode(Object.self, from: Data(buffer: body))
        } catch {
            throw .decoding(request: request, reason: describe(error))
        }
    }

    // MARK: Transport

    private enum Verb {
        case get, post, put
        case patch(contentType: String)

        var name: String {
            switch self {
            case .get: "GET"
            case .post: "POST"
            case .put: "PUT"
            case .patch: "PATCH"
            }
        }
    }

    private func send(
        method: Verb, path: String, query: [(String, String)], body: ByteBuffer?, request: String
    ) async throws(KubernetesError) -> HTTPClientResponse {
        var httpRequest = HTTPClientRequest(url: requestBase + path + Self.encodeQuery(query))
        var contentType = "application/json"
        switch method {
        case .get: httpRequest.method = .GET
        case .post: httpRequest.method = .POST
        case .put: httpRequest.method = .PUT
        case .patch(let type):
            httpRequest.method = .PATCH
            contentType = type
        }
        httpRequest.headers.add(name: "Accept", value: "application/json")
        httpRequest.headers.add(name: "User-Agent", value: options.userAgent)
        if let token = try configuration.token?.currentToken() {
            httpRequest.headers.add(name: "Authorization", value: "Bearer \(token)")
        }
        if let body {
            httpRequest.headers.add(name: "Content-Type", value: contentType)
            httpRequest.body = .bytes(body)
        }
        let response: HTTPClientResponse
        do {
            response = try await httpClient.execute(
                httpRequest, timeout: TimeAmount(options.requestTimeout), logger: logger)
        } catch {
            throw Self.transportError(error, request: request)
        }
        guard (200..<300).contains(Int(response.status.code)) else {
            let code = Int(response.status.code)
            let bytes = try? await collect(response.body, request: request, limit: 1 << 20)
            let status = bytes.flatMap { try? JSONDecoder().decode(Status.self, from: Data(buffer: $0)) }
            if code == 409 { throw .conflict(request: request, status: status) }
            throw .apiStatus(request: request, code: code, status: status)
        }
        return response
    }

    /// The whole body, up to `limit` bytes (default the maximum body size); fails with `.readIdle` when no
    /// byte arrives for the read idle timeout: the request deadline no longer applies once the head is in.
    private func collect(
        _ body: HTTPClientResponse.Body, request: String, limit: Int? = nil
    ) async throws(KubernetesError) -> ByteBuffer {
        let limit = limit ?? options.maximumBodySize
        let idleTimeout = options.readIdleTimeout
        let activity = ActivityClock()
        do {
            return try await withThrowingTaskGroup(of: ByteBuffer.self) { group in
                group.addTask {
                    var collected = ByteBuffer()
                    for try await chunk in body {
                        activity.touch()
                        guard collected.readableBytes + chunk.readableBytes <= limit else {
                            throw KubernetesError.responseTooLarge(request: request, limit: limit)
                        }
                        collected.writeImmutableBuffer(chunk)
                    }
                    return collected
                }
                group.addTask {
                    while true {
                        try await Task.sleep(until: activity.last + idleTimeout, clock: .continuous)
                        if ContinuousClock.now - activity.last >= idleTimeout {
                            throw KubernetesError.readIdle(request: request, seconds: Backoff.seconds(idleTimeout))
                        }
                    }
                }
                // The first child to finish decides: the whole body, or an error (the rest is cancelled).
                defer { group.cancelAll() }
                guard let collected = try await group.next() else { throw CancellationError() }
                return collected
            }
        } catch {
            throw Self.transportError(error, request: request)
        }
    }

    static func transportError(_ error: any Error, request: String) -> KubernetesError {
        if let error = error as? KubernetesError { return error }
        if error is CancellationError || Task.isCancelled { return .cancelled }
        if let error = error as? HTTPClientError, error == .cancelled { return .cancelled }
        return .transport(request: request, reason: describe(error))
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context):
            return "data corrupted at \(path(context.codingPath)): \(context.debugDescription)"
        case DecodingError.keyNotFound(let key, let context):
            return "missing \(path(context.codingPath + [key]))"
        case DecodingError.typeMismatch(let type, let context):
            return "\(path(context.codingPath)) is not a \(type)"
        case DecodingError.valueNotFound(let type, let context):
            return "\(path(context.codingPath)): expected a \(type), found null"
        default:
            return String(describing: error)
        }
    }

    private static func path(_ codingPath: [any CodingKey]) -> String {
        codingPath.isEmpty ? "the top level" : codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
    }

    /// `?key=value&...`, each part percent-encoded (RFC 3986 unreserved characters kept).
    static func encodeQuery(_ query: [(String, String)]) -> String {
        guard !query.isEmpty else { return "" }
        func encode(_ text: String) -> String {
            var result = ""
            for byte in text.utf8 {
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                    UInt8(ascii: "~"):
                    result.unicodeScalars.append(Unicode.Scalar(byte))
                default:
                    let hex = String(byte, radix: 16, uppercase: true)
                    result += "%" + (hex.count == 1 ? "0" + hex : hex)
                }
            }
            return result
        }
        return "?" + query.map { "\(encode($0.0))=\(encode($0.1))" }.joined(separator: "&")
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

extension Data {
    init(buffer: ByteBuffer) {
        self = buffer.withUnsafeReadableBytes { Data($0) }
    }
}
