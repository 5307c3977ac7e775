import ArgumentParser
import CanaryAgent
import CanaryCore
import Foundation
import IPVS
import IPVSNetlink
import KubernetesClient
import KubernetesSource
import StaticConfig
import Logging
import Metrics
import Prometheus

/// `canary-agent run`: the daemon.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the agent: keep the kernel's IPVS table equal to what the cluster or the file asks for.",
        discussion: """
            With --config FILE the services come from that file (reloaded when it changes and on SIGHUP); \
            otherwise from Kubernetes (in-cluster, or --kubeconfig). SIGTERM and SIGINT stop the agent and \
            leave the table, the addresses and the rules in place: traffic flows on while it restarts.
            """)

    @Option(name: .long, help: "Static mode: the services from this YAML file instead of Kubernetes.")
    var config: String?

    @Option(name: .long, help: "Kubernetes mode out of a cluster: this kubeconfig file (else in-cluster).")
    var kubeconfig: String?

    @Option(name: .long, help: "This node's name (default: $NODE_NAME), for its scheduler label.")
    var nodeName: String?

    @Option(name: .long, help: "The scheduler when neither the Service nor the Node names one: sh, rr, wrr, mh.")
    var scheduler: String = "wrr"

    @Option(name: .long, help: "Where endpoints come from: endpointslices, or endpoints for old clusters.")
    var endpointsAPI: String = "endpointslices"

    @Option(name: .long, help: "The agent's dummy interface, holding every virtual address.")
    var interface: String = "canary0"

    @Option(name: .long, help: "HOST:PORT of /metrics, /healthz, /readyz, /status.")
    var listen: String = "127.0.0.1:9109"

    @Option(name: .long, help: "Seconds between full checks of the kernel's table (repairs changes made behind the agent's back).")
    var driftCheckInterval: Double = 30

    @Option(name: .long, help: "Milliseconds to wait after a change for more, to apply them together.")
    var syncWindowMs: Int = 10

    @Option(name: .long, help: "Seconds a leaving endpoint may keep its connections before it is deleted.")
    var drainTimeout: Double = 300

    @Flag(
        name: .long,
        help: "Kubernetes mode: program Services' spec.externalIPs too (off: anyone who may edit a Service could bind any address on every node).")
    var externalIPs = false

    @Flag(
        name: .long, inversion: .prefixedNo,
        help: "Kubernetes mode: follow Gateway API routes whose parent is a Service (TCPRoute, UDPRoute, HTTPRoute, GRPCRoute), when their CRDs are installed.")
    var gatewayAPI = true

    @Option(
        name: .long,
        help: "Kubernetes mode: the namespace of the Lease that elects the one agent writing route status (default: $POD_NAMESPACE; none: no status is written).")
    var leaderElectionNamespace: String?

    @Option(name: .long, help: "Kubernetes mode: the name of that Lease.")
    var leaderElectionLease = "canary-agent-route-status"

    @Flag(name: .long, help: "Masquerade every IPVS-NAT connection, not only node-local clients and hairpin.")
    var masqueradeAll = false

    @Option(
        name: .long,
        help: "Export per-destination traffic series only while the agent owns at most this many destinations.")
    var destinationMetricsLimit = 10_000

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    func run() async throws {
        HeapTuning.limitArenas()
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw CommandError("--log-level: '\(logLevel)' is not one of trace, debug, info, notice, warning, error")
        }
        guard let listenAddress = ListenAddress(listen) else {
            throw CommandError("--listen: '\(listen)' is not HOST:PORT")
        }
        let settings = try reconcilerSettings()
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "canary-agent")
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["canary_agent_event_to_kernel_seconds"] = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(20),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        MetricsSystem.bootstrap(factory)

        let kernel = try openKernelLoadingModule(logger: logger)
        let node: LinuxNodePlumbing
        do {
            node = try LinuxNodePlumbing(interface: interface, masqueradeAll: masqueradeAll)
            // The interface must be the agent's own dummy (or not exist yet): on any other kind
            // (eth0, a bridge) every address would look like the agent's. Refuse before anything runs.
            _ = try node.boundAddresses()
        } catch {
            throw CommandError("\(error)")
        }
        let (source, client) = try makeSource(logger: logger)
        guard destinationMetricsLimit >= 0 else { throw CommandError("--destination-metrics-limit: must be 0 or more") }
        let metrics = AgentMetrics(factory: factory, destinationSeriesLimit: destinationMetricsLimit)
        let agent = Agent(
            kernel: kernel, scrapeKernel: try openKernel(), node: node, source: source, settings: settings, metrics: metrics,
            registry: registry, listen: (listenAddress.host, listenAddress.port), logger: logger)
        logger.info(
            "canary-agent starting",
            metadata: ["source": "\(source.summary)", "interface": "\(interface)", "listen": "\(listen)"])
        do {
            try await agent.run()
        } catch {
            await client?.shutdown()
            throw CommandError("\(error)")
        }
        await client?.shutdown()
        logger.info("canary-agent stopped; the kernel's table stays as it is")
    }

    func reconcilerSettings() throws -> Reconciler.Settings {
        do {
            return try Reconciler.Settings(
                driftCheckIntervalSeconds: driftCheckInterval, syncWindowMilliseconds: syncWindowMs,
                drainTimeoutSeconds: drainTimeout)
        } catch {
            throw CommandError(error.description)
        }
    }

    func makeSource(logger: Logger) throws -> (any DesiredStateSource, KubernetesClient?) {
        if let config {
            guard kubeconfig == nil else { throw CommandError("--config and --kubeconfig: choose one source") }
            return (StaticFileSource(path: config, logger: logger), nil)
        }
        let defaultScheduler = Scheduler(rawValue: scheduler)
        guard Scheduler.supportedByAgent.contains(defaultScheduler) else {
            throw CommandError("--scheduler: '\(scheduler)' is not one of \(Scheduler.supportedList)")
        }
        guard let endpointsSource = KubernetesSource.EndpointsAPI(rawValue: endpointsAPI) else {
            throw CommandError("--endpoints-api: '\(endpointsAPI)' is not endpointslices or endpoints")
        }
        let configuration: KubernetesConfiguration
        do {
            configuration = try kubeconfig.map { try KubernetesConfiguration.kubeconfig(path: $0) }
                ?? KubernetesConfiguration.inCluster()
        } catch {
            throw CommandError("\(error) (give --config FILE for static mode, or --kubeconfig FILE)")
        }
        let client: KubernetesClient
        do {
            client = try KubernetesClient(configuration: configuration, logger: logger)
        } catch {
            throw CommandError("\(error)")
        }
        var options = KubernetesSource.Configuration(
            nodeName: nodeName ?? ProcessInfo.processInfo.environment["NODE_NAME"], defaultScheduler: defaultScheduler)
        options.endpointsAPI = endpointsSource
        options.acceptExternalIPs = externalIPs
        options.gatewayAPI = gatewayAPI
        if gatewayAPI, let namespace = leaderElectionNamespace ?? ProcessInfo.processInfo.environment["POD_NAMESPACE"],
            !namespace.isEmpty
        {
            // The identity: the node (one agent per node), else this host.
            let identity = options.nodeName ?? ProcessInfo.processInfo.hostName
            options.leaderElection = .kubeControllerManager(namespace: namespace, leaseName: leaderElectionLease, identity: identity)
        }
        let source = KubernetesSource(client: client, configuration: options, logger: logger)
        return (KubernetesStateSource(source: source, server: configuration.server), client)
    }
}

/// Opens IPVS, loading the `ip_vs` module first when the kernel does not have it yet.
func openKernelLoadingModule(logger: Logger) throws -> NetlinkIPVS {
    do {
        return try NetlinkIPVS()
    } catch .notAvailable {
        logger.notice("IPVS is not loaded: running modprobe ip_vs")
        let modprobe = Process()
        modprobe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        modprobe.arguments = ["modprobe", "ip_vs"]
        try? modprobe.run()
        modprobe.waitUntilExit()
        return try openKernel()
    } catch {
        throw CommandError("\(error)")
    }
}

/// `HOST:PORT`, with `[v6]:PORT` for IPv6.
struct ListenAddress {
    var host: String
    var port: Int

    init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.host = host
        self.port = port
    }
}
