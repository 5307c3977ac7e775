import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// The agent's HTTP endpoints, on localhost by default:
/// - `GET /metrics`: Prometheus text: the registry's series, then those with a row per service or
///   destination, rendered at scrape time (the traffic read from the kernel by `trafficSampler`);
/// - `GET /healthz`: 200 while the reconcile loop turns, 503 once it is stuck (`Reconciler.isLive`);
/// - `GET /readyz`: 200 once the first full sync is done, 503 before, and while the masquerade
///   rules have kept failing or the source has not read its input (the API server out of reach) for
///   `Settings.degradedAfter`;
/// - `GET /status`: the agent's `AgentStatus` as JSON (what `canary-agent status` shows);
/// - `GET /desired`: the desired state as JSON (what `canary-agent plan` and `explain` read).
public struct HTTPEndpoints: Service {
    public let host: String
    public let port: Int
    public let reconciler: Reconciler
    public let registry: PrometheusCollectorRegistry
    public let trafficSampler: TrafficSampler?
    public let logger: Logger
    /// Called with the bound port once listening (port 0 picks a free one: tests use it).
    let onListening: @Sendable (Int) -> Void

    public init(
        host: String, port: Int, reconciler: Reconciler, registry: PrometheusCollectorRegistry,
        trafficSampler: TrafficSampler? = nil, logger: Logger, onListening: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.host = host
        self.port = port
        self.reconciler = reconciler
        self.registry = registry
        self.trafficSampler = trafficSampler
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                        wrappingChannelSynchronously: channel)
                }
            }
        let boundPort = server.channel.localAddress?.port ?? port
        logger.info("serving /metrics /healthz /readyz /status on \(host):\(boundPort)")
        onListening(boundPort)
        try await withGracefulShutdownHandler {
            try await server.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in connections {
                        // A kept-alive connection (a scraper's, a probe's) would hold the shutdown
                        // forever: on graceful shutdown each one is ended too.
                        group.addTask { try? await cancelWhenGracefulShutdown { await self.serve(connection) } }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                for try await part in inbound {
                    switch part {
                    case .head(let requestHead): head = requestHead
                    case .body: break
                    case .end:
                        guard let request = head else { continue }
                        let response = await respond(to: request)
                        var headers = HTTPHeaders()
                        headers.add(name: "Content-Type", value: response.contentType)
                        headers.add(name: "Content-Length", value: "\(response.body.count)")
                        if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
                        try await outbound.write(
                            .head(HTTPResponseHead(version: request.version, status: response.status, headers: headers)))
                        try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: response.body))))
                        try await outbound.write(.end(nil))
                        if !request.isKeepAlive { return }
                        head = nil
                    }
                }
            }
        } catch {
            logger.debug("HTTP connection ended: \(error)")
        }
    }

    struct Response {
        var status: HTTPResponseStatus
        var contentType = "text/plain; charset=utf-8"
        var body: [UInt8]

        init(_ status: HTTPResponseStatus, _ text: String) {
            self.status = status
            self.body = Array(text.utf8)
        }

        init(json: some Encodable) {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.dateEncodingStrategy = .iso8601
            do {
                body = Array(try encoder.encode(json)) + [UInt8(ascii: "\n")]
                status = .ok
                contentType = "application/json"
            } catch {
                body = Array("cannot encode: \(error)\n".utf8)
                status = .internalServerError
            }
        }
    }

    func respond(to request: HTTPRequestHead) async -> Response {
        guard request.method == .GET || request.method == .HEAD else {
            return Response(.methodNotAllowed, "only GET\n")
        }
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
        switch path {
        case "/healthz":
            if let stalled = reconciler.stalledFor {
                return Response(
                    .serviceUnavailable, "stalled: the reconcile loop has not turned for \(Int(stalled.components.seconds)) s\n")
            }
            return Response(.ok, "ok\n")
        case "/readyz":
            guard reconciler.isReady else {
                return Response(.serviceUnavailable, "not ready: the first full sync is not done\n")
            }
            if let failing = reconciler.masqueradeDegradedFor {
                return Response(
                    .serviceUnavailable,
                    "not ready: the masquerade rules have failed for \(failing.components.seconds) s (see canary-agent status)\n")
            }
            if let unavailable = reconciler.sourceUnavailableFor {
                return Response(
                    .serviceUnavailable,
                    "not ready: the source has not read its input for \(unavailable.components.seconds) s (see canary-agent status)\n")
            }
            return Response(.ok, "ready\n")
        case "/metrics":
            await trafficSampler?.refresh()
            var response = Response(.ok, "")
            response.body = registry.emitToBuffer()
            response.body += reconciler.metrics.renderScrapeTimeSeries(shares: await reconciler.shareRows()).utf8
            response.contentType = "text/plain; version=0.0.4; charset=utf-8"
            return response
        case "/status":
            return Response(json: await reconciler.status())
        case "/desired":
            guard let state = await reconciler.currentDesiredState() else {
                return Response(.serviceUnavailable, "no desired state yet\n")
            }
            return Response(json: DesiredStateDocument(state))
        default:
            return Response(.notFound, "not found: \(path) (try /metrics, /healthz, /readyz, /status, /desired)\n")
        }
    }
}
