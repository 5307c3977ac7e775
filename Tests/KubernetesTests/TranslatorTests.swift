import CanaryCore
import IPVS
import KubernetesClient
import Testing

@testable import KubernetesSource

/// Builds the translator's input from API-shaped JSON objects.
func translationInput(
    _ objects: [JSON], node: JSON? = nil, defaultScheduler: Scheduler = .weightedRoundRobin, useEndpointsAPI: Bool = false,
    acceptExternalIPs: Bool = false
) throws -> TranslationInput {
    let services = try objects.filter { $0["kind"] == "Service" }.map { try Fixtures.decode($0, as: Service.self) }
    let endpoints: EndpointObjects =
        useEndpointsAPI
        ? .endpoints(try objects.filter { $0["kind"] == "Endpoints" }.map { try Fixtures.decode($0, as: Endpoints.self) })
        : .slices(try objects.filter { $0["kind"] == "EndpointSlice" }.map { try Fixtures.decode($0, as: EndpointSlice.self) })
    return TranslationInput(
        services: services, endpoints: endpoints, node: try node.map { try Fixtures.decode($0, as: Node.self) },
        defaultScheduler: defaultScheduler, acceptExternalIPs: acceptExternalIPs)
}

func socket(_ text: String) -> SocketAddress {
    guard let address = SocketAddress(text) else { preconditionFailure("bad socket address \(text)") }
    return address
}

/// A desired service written compactly: `virtualService("default/web:http", .tcp, "10.96.0.10:80", ...)`.
func virtualService(
    _ name: String, _ proto: IPProtocol = .tcp, _ address: String, scheduler: Scheduler = .weightedRoundRobin,
    persistence: Persistence? = nil, stable: [String], draining: [String] = [], canary: [String] = [],
    share: String = "0"
) -> DesiredService {
    // The literal names the Service and its port, as the translator's origin does.
    let object = name.prefix { $0 != ":" }.split(separator: "/", maxSplits: 1).map(String.init)
    let port = name.split(separator: ":", maxSplits: 1).dropFirst().first.map(String.init)
    return DesiredService(
        origin: ServiceOrigin(object: .service(namespace: object[0], name: object[1]), port: port),
        key: .inet(proto, socket(address)), scheduler: scheduler, persistence: persistence,
        forwarding: .masquerade,
        stable: (stable.map { Endpoint(socket($0)) } + draining.map { Endpoint(socket($0), state: .draining) }).sorted(),
        canary: canary.map { Endpoint(socket($0)) }.sorted(), canaryShare: CanaryShare(percentText: share) ?? .zero)
}

@Suite("Translator: the annotation scheme", .timeLimit(.minutes(1)))
struct TranslatorTests {
    @Test("seed: one Service over two Deployments at 3:1 is one service with 4 endpoints, at 4:1 with 5")
    func seedReplicaSplit() throws {
        let threeToOne = Fixtures.seedReplicaSplit(stable: 3, canary: 1)
        let first = Translator.translate(try translationInput([threeToOne.service, threeToOne.slice]))
        #expect(first.problems == [])
        #expect(first.desiredState == Fixtures.expectedReplicaSplit(stable: 3, canary: 1))
        #expect(first.desiredState.services.values.map(\.stable.count) == [4])

        let fourToOne = Fixtures.seedReplicaSplit(stable: 4, canary: 1)
        let second = Translator.translate(try translationInput([fourToOne.service, fourToOne.slice]), previous: first.desiredState)
        #expect(second.problems == [])
        #expect(second.desiredState == Fixtures.expectedReplicaSplit(stable: 4, canary: 1))
        #expect(second.desiredState.services.values.map(\.stable.count) == [5])
    }

    @Test("seed: a stable Service with a canary Service at weight 10")
    func seedCanaryWeight() throws {
        let result = Translator.translate(try translationInput(Fixtures.seedCanaryServices()))
        #expect(result.problems == [])
        #expect(result.desiredState == Fixtures.expectedCanaryServices())
        #expect(result.desiredState.services.values.map(\.canaryShare) == [CanaryShare(basisPoints: 1000)])
        // The canary Service carries no proxy label: it is not a virtual service of its own.
        #expect(result.desiredState.services.count == 1)
    }

    @Test("the annotation scheme is the two-group case: canary-weight b % is stable 10,000 − 100b : canary 100b", arguments: [
        ("10", 9_000, 1_000), ("12.5", 8_750, 1_250), ("0", 10_000, 0), ("100", 0, 10_000), ("0.01", 9_999, 1),
    ])
    func annotationIsTwoGroups(weight: String, stable: Int, canary: Int) throws {
        let objects = Fixtures.seedCanaryServices(weight: weight)
        let result = Translator.translate(try translationInput(objects))
        let service = try #require(result.desiredState.services.values.first)
        #expect(service.backends.map(\.name) == ["stable", "canary"])
        #expect(service.backends.map(\.weight) == [stable, canary])
        #expect(service.unweightedFallback == .useGroupsOfWeightZero, "the split's meaning is kept: never refuse for want of a canary")
    }

    @Test("each ClusterIP of both families and each externalIP, for each port and protocol, is a virtual service")
    func dualStackAndExternalIPs() throws {
        let service = Fixtures.service(
            "dns", namespace: "kube-system", clusterIPs: ["10.96.0.53", "fd00:10:96::53"],
            ports: [Fixtures.servicePort("dns", port: 53, protocol: "UDP"), Fixtures.servicePort("dns-tcp", port: 53, protocol: "TCP")],
            externalIPs: ["192.0.2.53"])
        let ports = [Fixtures.slicePort("dns", port: 5353, protocol: "UDP"), Fixtures.slicePort("dns-tcp", port: 5353, protocol: "TCP")]
        let v4 = Fixtures.slice("dns-v4", service: "dns", namespace: "kube-system", endpoints: [Fixtures.endpoint("10.244.1.53")], ports: ports)
        let v6 = Fixtures.slice(
            "dns-v6", service: "dns", namespace: "kube-system", addressType: "IPv6", endpoints: [Fixtures.endpoint("fd00:244:1::53")], ports: ports)
        let result = Translator.translate(try translationInput([service, v4, v6], acceptExternalIPs: true))
        #expect(result.problems == [])
        #expect(
            result.desiredState
                == DesiredState(services: [
                    virtualService("kube-system/dns:dns", .udp, "10.96.0.53:53", stable: ["10.244.1.53:5353"]),
                    virtualService("kube-system/dns:dns", .udp, "[fd00:10:96::53]:53", stable: ["[fd00:244:1::53]:5353"]),
                    virtualService("kube-system/dns:dns", .udp, "192.0.2.53:53", stable: ["10.244.1.53:5353"]),
                    virtualService("kube-system/dns:dns-tcp", .tcp, "10.96.0.53:53", stable: ["10.244.1.53:5353"]),
                    virtualService("kube-system/dns:dns-tcp", .tcp, "[fd00:10:96::53]:53", stable: ["[fd00:244:1::53]:5353"]),
                    virtualService("kube-system/dns:dns-tcp", .tcp, "192.0.2.53:53", stable: ["10.244.1.53:5353"]),
                ]))
    }

    @Test("a named target port resolves per slice; an unnamed single port matches the empty name")
    func namedTargetPortsPerSlice() throws {
        let service = Fixtures.service("web", ports: [Fixtures.servicePort("http", port: 80, targetPort: "web")])
        // Pods of two versions name the container port "web" with different numbers: two slices.
        let old = Fixtures.slice("web-a", service: "web", endpoints: [Fixtures.endpoint("10.244.1.1")], ports: [Fixtures.slicePort("http", port: 8080)])
        let new = Fixtures.slice("web-b", service: "web", endpoints: [Fixtures.endpoint("10.244.1.2")], ports: [Fixtures.slicePort("http", port: 9090)])
        let unnamed = Fixtures.service("plain", clusterIPs: ["10.96.0.11"], ports: [Fixtures.servicePort(nil, port: 8443, targetPort: 443)])
        let unnamedSlice = Fixtures.slice("plain-a", service: "plain", endpoints: [Fixtures.endpoint("10.244.1.3")], ports: [Fixtures.slicePort(nil, port: 443)])
        let result = Translator.translate(try translationInput([service, old, new, unnamed, unnamedSlice]))
        #expect(result.problems == [])
        #expect(
            result.desiredState
                == DesiredState(services: [
                    virtualService("default/web:http", .tcp, "10.96.0.10:80", stable: ["10.244.1.1:8080", "10.244.1.2:9090"]),
                    virtualService("default/plain:8443", .tcp, "10.96.0.11:8443", stable: ["10.244.1.3:443"]),
                ]))
    }

    @Test("ready is live, serving and terminating is draining, not serving is gone; an address in two slices counts once")
    func endpointConditions() throws {
        let service = Fixtures.service("web")
        let first = Fixtures.slice(
            "web-a", service: "web",
            endpoints: [
                Fixtures.endpoint("10.244.1.1", ready: true),
                Fixtures.endpoint("10.244.1.2", ready: false, serving: true, terminating: true),
                Fixtures.endpoint("10.244.1.3", ready: false, serving: false, terminating: true),
                Fixtures.endpoint("10.244.1.4", ready: false, serving: false, terminating: false),
                Fixtures.endpoint("10.244.1.5", ready: nil),  // unknown: ready
            ])
        let second = Fixtures.slice(
            "web-b", service: "web",
            endpoints: [Fixtures.endpoint("10.244.1.1", ready: true), Fixtures.endpoint("10.244.1.2", ready: false, serving: true, terminating: true)])
        let result = Translator.translate(try translationInput([service, first, second]))
        #expect(
            result.desiredState
                == DesiredState(services: [
                    virtualService(
                        "default/web:http", .tcp, "10.96.0.10:80", stable: ["10.244.1.1:80", "10.244.1.5:80"],
                        draining: ["10.244.1.2:80"])
                ]))
    }

    @Test("sessionAffinity ClientIP is persistence with its timeout; the annotation overrides it, 0 turns it off")
    func persistence() throws {
        let affinity = Fixtures.service("sticky", sessionAffinity: "ClientIP", affinityTimeout: 600)
        let slice = Fixtures.slice("sticky-a", service: "sticky", endpoints: [Fixtures.endpoint("10.244.1.1")])
        var result = Translator.translate(try translationInput([affinity, slice]))
        #expect(result.desiredState.services.values.map(\.persistence) == [Persistence(timeout: 600)])

        let annotated = Fixtures.service("sticky", annotations: ["canary-agent.io/persistence-timeout": "90"])
        result = Translator.translate(try translationInput([annotated, slice]))
        #expect(result.desiredState.services.values.map(\.persistence) == [Persistence(timeout: 90)])

        let off = Fixtures.service("sticky", annotations: ["canary-agent.io/persistence-timeout": "0"], sessionAffinity: "ClientIP")
        result = Translator.translate(try translationInput([off, slice]))
        #expect(result.desiredState.services.values.map(\.persistence) == [nil])
    }

    @Test("scheduler precedence: Service annotation, then Node label, then the flag")
    func schedulerPrecedence() throws {
        let annotated = Fixtures.service("a", clusterIPs: ["10.96.0.1"], annotations: ["canary-agent.io/scheduler": "mh"])
        let plain = Fixtures.service("b", clusterIPs: ["10.96.0.2"])
        let objects = [annotated, plain]
        func schedulers(_ node: JSON?) throws -> [String: Scheduler] {
            let result = Translator.translate(try translationInput(objects, node: node, defaultScheduler: .roundRobin))
            #expect(result.problems == [])
            return Dictionary(uniqueKeysWithValues: result.desiredState.services.values.map { ($0.name, $0.scheduler) })
        }
        #expect(try schedulers(nil) == ["default/a:http": .maglevHashing, "default/b:http": .roundRobin])
        #expect(try schedulers(Fixtures.node(labels: [:])) == ["default/a:http": .maglevHashing, "default/b:http": .roundRobin])
        #expect(
            try schedulers(Fixtures.node(labels: ["canary-agent.io/scheduler": "sh"]))
                == ["default/a:http": .maglevHashing, "default/b:http": .sourceHashing])
    }

    @Test("an unknown scheduler on the Node is one problem; Services keep the scheduler they have, new ones take the flag")
    func badNodeLabel() throws {
        let existing = Fixtures.service("a", clusterIPs: ["10.96.0.1"])
        let good = Translator.translate(
            try translationInput([existing], node: Fixtures.node(labels: ["canary-agent.io/scheduler": "sh"])))
        let newcomer = Fixtures.service("b", clusterIPs: ["10.96.0.2"])
        let result = Translator.translate(
            try translationInput([existing, newcomer], node: Fixtures.node(labels: ["canary-agent.io/scheduler": "fastest"])),
            previous: good.desiredState)
        #expect(
            result.problems == [
                InputProblem(
                    object: InputObject(kind: .node, name: "node-1"), field: "metadata.labels[canary-agent.io/scheduler]",
                    message: "unknown scheduler \"fastest\"; use sh, rr, wrr or mh; Services keep their current scheduler",
                    reason: "UnknownScheduler")
            ])
        let schedulers = Dictionary(uniqueKeysWithValues: result.desiredState.services.values.map { ($0.name, $0.scheduler) })
        #expect(schedulers == ["default/a:http": .sourceHashing, "default/b:http": .weightedRoundRobin])
    }

    /// A good state with two Services: "web" (with a canary) and "other"; then `web` is broken by `change`.
    private func expectLastGoodStateKept(
        field: String, reason: String, messageContains: String, change: (inout [JSON]) -> Void
    ) throws {
        var objects = Fixtures.seedCanaryServices(weight: "25") + [
            Fixtures.service("other", clusterIPs: ["10.96.0.30"]),
            Fixtures.slice("other-a", service: "other", endpoints: [Fixtures.endpoint("10.244.3.1")]),
        ]
        let good = Translator.translate(try translationInput(objects))
        #expect(good.problems == [])
        let goodWeb = good.desiredState.services.values.filter { $0.name.hasPrefix("default/nginx-v1:") }
        #expect(goodWeb.count == 1)

        change(&objects)
        // "other" keeps syncing: one more endpoint at the same time.
        objects.append(Fixtures.slice("other-b", service: "other", endpoints: [Fixtures.endpoint("10.244.3.2")]))
        let result = Translator.translate(try translationInput(objects), previous: good.desiredState)

        #expect(result.problems.count == 1)
        let problem = try #require(result.problems.first)
        #expect(problem.object.kind == .service)
        #expect(problem.object == .service(namespace: "default", name: "nginx-v1"))
        #expect(problem.field == field)
        #expect(problem.reason == reason)
        #expect(problem.message.contains(messageContains), "message: \(problem.message)")
        #expect(
            result.desiredState
                == DesiredState(
                    services: goodWeb + [
                        virtualService("default/other:http", .tcp, "10.96.0.30:80", stable: ["10.244.3.1:80", "10.244.3.2:80"])
                    ]))

        // A Service that was never good stays unprogrammed.
        let fresh = Translator.translate(try translationInput(objects))
        #expect(fresh.problems == result.problems)
        #expect(fresh.desiredState.services.values.allSatisfy { $0.name == "default/other:http" })
    }

    private static func setAnnotation(_ objects: inout [JSON], _ key: String, _ value: String?) {
        objects[0]["metadata"]?["annotations"]?[key] = value.map(JSON.string)
    }

    @Test("a bad weight keeps the last good state", arguments: ["abc", "150", "-1", "1e3", "10.001", ""])
    func badWeight(weight: String) throws {
        try expectLastGoodStateKept(
            field: "metadata.annotations[canary-agent.io/canary-weight]", reason: "InvalidCanaryWeight",
            messageContains: "\"\(weight)\" is not a percentage"
        ) { Self.setAnnotation(&$0, "canary-agent.io/canary-weight", weight) }
    }

    @Test("a missing weight keeps the last good state")
    func missingWeight() throws {
        try expectLastGoodStateKept(
            field: "metadata.annotations[canary-agent.io/canary-weight]", reason: "MissingCanaryWeight", messageContains: "missing"
        ) { Self.setAnnotation(&$0, "canary-agent.io/canary-weight", nil) }
    }

    @Test("a canary Service that does not exist keeps the last good state")
    func missingCanaryService() throws {
        try expectLastGoodStateKept(
            field: "metadata.annotations[canary-agent.io/canary-service]", reason: "CanaryServiceNotFound",
            messageContains: "canary Service default/nginx-v3 does not exist"
        ) { Self.setAnnotation(&$0, "canary-agent.io/canary-service", "nginx-v3") }
    }

    @Test(
        "a hostile annotation value is quoted in one short line: control characters escaped, cut after 64 scalars",
        arguments: [
            ("canary-agent.io/canary-weight", "InvalidCanaryWeight"), ("canary-agent.io/scheduler", "UnknownScheduler"),
            ("canary-agent.io/persistence-timeout", "InvalidPersistenceTimeout"),
            ("canary-agent.io/canary-service", "InvalidCanaryService"),
        ])
    func hostileValueIsBounded(annotation: String, reason: String) throws {
        let value = "x\r\nfake log line \u{1B}[31m\"" + String(repeating: "\u{301}", count: 5_000) + String(repeating: "y", count: 10_000)
        try expectLastGoodStateKept(
            field: "metadata.annotations[\(annotation)]", reason: reason, messageContains: #""x\r\nfake log line \u{1B}[31m"#
        ) { Self.setAnnotation(&$0, annotation, value) }
        var objects = Fixtures.seedCanaryServices(weight: "10")
        Self.setAnnotation(&objects, annotation, value)
        let result = Translator.translate(try translationInput(objects))
        let message = try #require(result.problems.first).description
        #expect(!message.unicodeScalars.contains { $0.properties.generalCategory == .control }, "\(message.prefix(200))")
        #expect(message.utf8.count < 600, "\(message.utf8.count) bytes")
    }

    @Test("an unknown scheduler keeps the last good state")
    func unknownScheduler() throws {
        try expectLastGoodStateKept(
            field: "metadata.annotations[canary-agent.io/scheduler]", reason: "UnknownScheduler",
            messageContains: "unknown scheduler \"lc\""
        ) { Self.setAnnotation(&$0, "canary-agent.io/scheduler", "lc") }
    }

    @Test("a bad persistence timeout keeps the last good state", arguments: ["soon", "-5", "100000"])
    func badPersistence(timeout: String) throws {
        try expectLastGoodStateKept(
            field: "metadata.annotations[canary-agent.io/persistence-timeout]", reason: "InvalidPersistenceTimeout",
            messageContains: "\"\(timeout)\""
        ) { Self.setAnnotation(&$0, "canary-agent.io/persistence-timeout", timeout) }
    }

    @Test("a Service without ClusterIP keeps the last good state", arguments: ["None", ""])
    func noClusterIP(clusterIP: String) throws {
        try expectLastGoodStateKept(field: "spec.clusterIP", reason: "NoClusterIP", messageContains: "no ClusterIP") {
            $0[0]["spec"]?["clusterIP"] = .string(clusterIP)
            $0[0]["spec"]?["clusterIPs"] = clusterIP.isEmpty ? nil : [.string(clusterIP)]
        }
    }

    @Test("an endpoint in both the stable and the canary Service keeps the last good state")
    func overlappingEndpoints() throws {
        try expectLastGoodStateKept(
            field: "metadata.annotations[canary-agent.io/canary-service]", reason: "EndpointInStableAndCanary",
            messageContains: "endpoint 10.244.1.21 is in both"
        ) {
            $0[3] = Fixtures.slice(
                "nginx-v2-fghij", service: "nginx-v2", endpoints: [Fixtures.endpoint("10.244.2.20"), Fixtures.endpoint("10.244.1.21")])
        }
    }

    @Test("a canary Service without a matching port keeps the last good state")
    func canaryPortMissing() throws {
        try expectLastGoodStateKept(
            field: "metadata.annotations[canary-agent.io/canary-service]", reason: "CanaryPortNotFound",
            messageContains: "has no TCP port named \"http\""
        ) {
            $0[1]["spec"]?["ports"] = [Fixtures.servicePort("metrics", port: 9100), Fixtures.servicePort("admin", port: 9200)]
        }
    }

    @Test("an unsupported protocol keeps the last good state")
    func badProtocol() throws {
        try expectLastGoodStateKept(field: "spec.ports[0].protocol", reason: "UnsupportedProtocol", messageContains: "\"QUIC\"") {
            $0[0]["spec"]?["ports"] = [Fixtures.servicePort("http", port: 80, protocol: "QUIC")]
        }
    }

    @Test("the canary's port is the one with the same name, or its only port of that protocol")
    func canaryPortMatching() throws {
        var objects = Fixtures.seedCanaryServices()
        // The canary names its port differently and listens on 8080.
        objects[1]["spec"]?["ports"] = [Fixtures.servicePort("web", port: 80, targetPort: 8080)]
        objects[3] = Fixtures.slice("nginx-v2-fghij", service: "nginx-v2", endpoints: [Fixtures.endpoint("10.244.2.20")], ports: [Fixtures.slicePort("web", port: 8080)])
        let result = Translator.translate(try translationInput(objects))
        #expect(result.problems == [])
        #expect(result.desiredState.services.values.map(\.canary) == [[Endpoint(socket("10.244.2.20:8080"))]])
    }

    @Test("a canary Service created later is picked up")
    func canaryCreatedLater() throws {
        var objects = Fixtures.seedCanaryServices()
        let canaryService = objects.remove(at: 1)
        let before = Translator.translate(try translationInput(objects))
        #expect(before.problems.map(\.reason) == ["CanaryServiceNotFound"])
        #expect(before.desiredState.services.isEmpty)
        let after = Translator.translate(try translationInput(objects + [canaryService]), previous: before.desiredState)
        #expect(after.problems == [])
        #expect(after.desiredState == Fixtures.expectedCanaryServices())
    }

    @Test("two Services claiming one virtual address: the second keeps its last good state")
    func addressConflict() throws {
        let first = Fixtures.service("a", clusterIPs: ["10.96.0.1"], externalIPs: ["192.0.2.1"])
        let second = Fixtures.service("b", clusterIPs: ["10.96.0.2"], externalIPs: ["192.0.2.1"])
        let result = Translator.translate(try translationInput([first, second], acceptExternalIPs: true))
        #expect(result.problems.map(\.object) == [.service(namespace: "default", name: "b")])
        #expect(result.problems.map(\.field) == ["spec.externalIPs"])
        #expect(Set(result.desiredState.services.values.map(\.name)) == ["default/a:http"])
    }

    @Test("externalIPs are ignored unless --external-ips accepts them")
    func externalIPsAreOptIn() throws {
        let service = Fixtures.service("web", clusterIPs: ["10.96.0.10"], externalIPs: ["192.0.2.10"])
        let slice = Fixtures.slice("web-a", service: "web", endpoints: [Fixtures.endpoint("10.244.1.1")], ports: [Fixtures.slicePort("http", port: 8080)])
        let off = Translator.translate(try translationInput([service, slice]))
        #expect(off.problems == [])
        #expect(off.desiredState.services.keys.map(\.description).sorted() == ["TCP 10.96.0.10:80"])
        let on = Translator.translate(try translationInput([service, slice], acceptExternalIPs: true))
        #expect(on.desiredState.services.keys.map(\.description).sorted() == ["TCP 10.96.0.10:80", "TCP 192.0.2.10:80"])
    }

    @Test(
        "a virtual address that is loopback, link-local, multicast or unspecified is refused, naming the field; the last good state stays",
        arguments: [
            (["10.96.0.10"], ["169.254.169.254"], "spec.externalIPs[0]"),
            (["10.96.0.10"], ["192.0.2.1", "127.0.0.1"], "spec.externalIPs[1]"),
            (["10.96.0.10"], ["224.0.0.251"], "spec.externalIPs[0]"),
            (["10.96.0.10"], ["0.0.0.0"], "spec.externalIPs[0]"),
            (["10.96.0.10", "::"], [], "spec.clusterIPs[1]"),
            (["fe80::1"], [], "spec.clusterIPs[0]"),
        ])
    func unusableVirtualAddresses(_ clusterIPs: [String], _ externalIPs: [String], _ field: String) throws {
        let good = Fixtures.service("web", clusterIPs: ["10.96.0.10"])
        let slice = Fixtures.slice("web-a", service: "web", endpoints: [Fixtures.endpoint("10.244.1.1")], ports: [Fixtures.slicePort("http", port: 8080)])
        let before = Translator.translate(try translationInput([good, slice], acceptExternalIPs: true))
        #expect(before.problems == [])
        let bad = Fixtures.service("web", clusterIPs: clusterIPs, externalIPs: externalIPs)
        let after = Translator.translate(try translationInput([bad, slice], acceptExternalIPs: true), previous: before.desiredState)
        #expect(after.problems.map(\.field) == [field])
        #expect(after.problems.map(\.reason) == ["UnusableAddress"])
        #expect(after.problems.allSatisfy { $0.object == .service(namespace: "default", name: "web") && !$0.message.contains("\n") })
        #expect(after.desiredState == before.desiredState)
    }

    @Test("Services without the proxy label are not programmed")
    func unlabelledServicesIgnored() throws {
        let result = Translator.translate(try translationInput([Fixtures.service("kube-dns", labels: ["k8s-app": "kube-dns"])]))
        #expect(result == Translation(desiredState: DesiredState(), problems: []))
    }

    @Test("core/v1 Endpoints: ready addresses are live, not-ready ones gone")
    func endpointsAPI() throws {
        var objects = Fixtures.seedCanaryServices()
        objects.removeAll { $0["kind"] == "EndpointSlice" }
        objects += [
            Fixtures.endpointsObject("nginx-v1", ready: ["10.244.1.20", "10.244.1.21", "10.244.1.22"], notReady: ["10.244.1.23"]),
            Fixtures.endpointsObject("nginx-v2", ready: ["10.244.2.20"]),
        ]
        let result = Translator.translate(try translationInput(objects, useEndpointsAPI: true))
        #expect(result.problems == [])
        #expect(result.desiredState == Fixtures.expectedCanaryServices())
    }

    @Test("decoding ignores unknown fields and takes targetPort as int or string")
    func decoding() throws {
        let service = try Fixtures.decode(
            Fixtures.service("web", ports: [Fixtures.servicePort("http", port: 80, targetPort: "http-web")]), as: Service.self)
        #expect(service.spec?.ports?.first?.targetPort == .string("http-web"))
        #expect(service.metadata.uid == nil)
        let numeric = try Fixtures.decode(Fixtures.service("web"), as: Service.self)
        #expect(numeric.spec?.ports?.first?.targetPort == .int(80))
        #expect(numeric.spec?.clusterIPs == ["10.96.0.10"])
    }
}
