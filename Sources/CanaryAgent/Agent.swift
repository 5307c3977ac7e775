import CanaryCore
import Foundation
import IPVS
import Logging
import Prometheus
import ServiceLifecycle
import UnixSignals

/// The daemon as one value: a source feeding the reconciler, the reconciler's loop, and the HTTP
/// endpoints, run as a swift-service-lifecycle `ServiceGroup`. `canary-agent run` builds one from
/// its flags; tests build one from the in-memory kernel and node, so that they start exactly what
/// production runs. SIGTERM and SIGINT end it gracefully and leave the kernel as it is.
public struct Agent: Sendable {
    public let reconciler: Reconciler
    public let source: any DesiredStateSource
    public let endpoints: HTTPEndpoints
    let logger: Logger

    /// - Parameters:
    ///   - kernel: the IPVS the reconciler programs.
    ///   - scrapeKernel: a second connection for the scrape's dumps (nil: no per-destination traffic
    ///     series), so that a sync never waits for a scrape.
    ///   - listen: where `/metrics`, `/healthz`, `/readyz`, `/status` and `/desired` answer (port 0:
    ///     any free port, told to `onListening`).
    public init(
        kernel: any IPVSKernel, scrapeKernel: (any IPVSKernel)?, node: any NodePlumbing, source: any DesiredStateSource,
        settings: Reconciler.Settings, metrics: AgentMetrics, registry: PrometheusCollectorRegistry,
        listen: (host: String, port: Int), logger: Logger, onListening: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.source = source
        self.logger = logger
        let reconciler = Reconciler(
            kernel: kernel, node: node, settings: settings, metrics: metrics, sourceSummary: source.summary, logger: logger)
        self.reconciler = reconciler
        let sampler = scrapeKernel.map { TrafficSampler(kernel: $0, reconciler: reconciler, metrics: metrics) }
        endpoints = HTTPEndpoints(
            host: listen.host, port: listen.port, reconciler: reconciler, registry: registry, trafficSampler: sampler,
            logger: logger, onListening: onListening)
    }

    /// The three services, in the order they start.
    public func serviceGroup(gracefulShutdownSignals: [UnixSignal] = [.sigterm, .sigint]) -> ServiceGroup {
        ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(service: ReconcilerService(reconciler: reconciler)),
                    .init(service: SourceService(source: source, reconciler: reconciler)),
                    .init(service: endpoints),
                ],
                gracefulShutdownSignals: gracefulShutdownSignals,
                logger: logger))
    }

    /// Runs until a shutdown signal (or the task is cancelled).
    public func run() async throws {
        try await serviceGroup().run()
    }
}

/// The reconciler's loop, stopped on graceful shutdown.
struct ReconcilerService: ServiceLifecycle.Service {
    let reconciler: Reconciler
    func run() async throws {
        // Graceful shutdown cancels the loop, which then returns: a normal end.
        await cancelWhenGracefulShutdown { await reconciler.run() }
    }
}

/// A source, feeding the reconciler until graceful shutdown.
struct SourceService: ServiceLifecycle.Service {
    let source: any DesiredStateSource
    let reconciler: Reconciler
    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await source.run { event in await reconciler.submit(event) }
            }
        } catch is CancellationError {
            // Graceful shutdown cancels the source: a normal end.
        }
    }
}
