import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `canary-agent run` in Kubernetes mode against the stand-in API server (Tests/e2e/apiserver.py,
/// the real protocol over HTTPS), on the real kernel: the seed scenario's objects become the table,
/// a weight change and a node label flip reach the kernel, SIGTERM leaves the table, a restart
/// adopts it without a change, and cleanup leaves nothing.
@Suite("canary-agent run in Kubernetes mode against the real kernel", .requiresIPVS, .serialized)
struct AgentKubernetesKernelTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let apiserver = repository.appendingPathComponent("Tests/e2e/apiserver.py").path

    static func service(_ name: String, clusterIP: String, annotations: [String: String] = [:], labelled: Bool) -> [String: Any] {
        var labels: [String: String] = [:]
        if labelled { labels["service.kubernetes.io/service-proxy-name"] = "canary-agent" }
        return [
            "apiVersion": "v1", "kind": "Service",
            "metadata": ["name": name, "namespace": "default", "labels": labels, "annotations": annotations],
            "spec": [
                "type": "ClusterIP", "clusterIP": clusterIP, "clusterIPs": [clusterIP],
                "ports": [["name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080]],
            ],
        ]
    }

    static func slice(_ name: String, service: String, addresses: [String]) -> [String: Any] {
        [
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": ["name": name, "namespace": "default", "labels": ["kubernetes.io/service-name": service]],
            "ports": [["name": "http", "port": 8080, "protocol": "TCP"]],
            "endpoints": addresses.map {
                ["addresses": [$0], "conditions": ["ready": true, "serving": true, "terminating": false]]
            },
        ]
    }

    static func node(scheduler: String?) -> [String: Any] {
        var labels = ["kubernetes.io/hostname": "node-1"]
        if let scheduler { labels["canary-agent.io/scheduler"] = scheduler }
        return ["apiVersion": "v1", "kind": "Node", "metadata": ["name": "node-1", "labels": labels]]
    }

    static func web(weight: String) -> [String: Any] {
        service(
            "web", clusterIP: "10.96.8.1",
            annotations: ["canary-agent.io/canary-service": "web-canary", "canary-agent.io/canary-weight": weight],
            labelled: true)
    }

    /// The stand-in API server, as a process, with its control API.
    final class APIServer {
        let process = Process()
        let directory: URL

        init(directory: URL, objects: [[String: Any]]) throws {
            self.directory = directory
            let objectsFile = directory.appendingPathComponent("objects.json")
            try JSONSerialization.data(withJSONObject: objects).write(to: objectsFile)
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [
                "python3", AgentKubernetesKernelTests.apiserver, "serve", "--dir", directory.path, "--objects",
                objectsFile.path,
            ]
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            try AgentKernelTests.eventually("the API server is up") {
                FileManager.default.fileExists(atPath: directory.appendingPathComponent("apiserver.json").path)
            }
        }

        var kubeconfig: String { directory.appendingPathComponent("kubeconfig").path }

        func put(_ object: [String: Any]) throws {
            _ = try run(
                "/usr/bin/env", ["python3", AgentKubernetesKernelTests.apiserver, "ctl", "--dir", directory.path, "put", "-"],
                input: String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self))
        }

        deinit {
            process.terminate()
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && Date() < deadline { usleep(50_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
    }

    @Test("the seed scenario from the API server: table, weight change, node label flip, restart adoption, cleanup")
    func kubernetesMode() throws {
        try KernelTable.exclusive { _ in
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("canary-k8s-\(getpid())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            defer { _ = try? run(agentPath, ["cleanup", "--interface", AgentKernelTests.interface]) }
            let server = try APIServer(
                directory: directory,
                objects: [
                    Self.web(weight: "10"),
                    Self.service("web-canary", clusterIP: "10.96.8.2", labelled: false),
                    Self.slice("web-abc", service: "web", addresses: ["10.8.1.1", "10.8.1.2", "10.8.1.3"]),
                    Self.slice("web-canary-abc", service: "web-canary", addresses: ["10.8.1.9"]),
                    Self.node(scheduler: nil),
                ])

            var agent = try AgentKernelTests.Agent(
                arguments: ["--kubeconfig", server.kubeconfig, "--node-name", "node-1"], port: 19111)
            try AgentKernelTests.eventually("the agent is ready") { try agent.status()["ready"] as? Bool == true }
            // 3 stable + 1 canary at 10% with wrr: stable 3 each, canary 1 (1/10).
            let expected = [
                "-A -t 10.96.8.1:80 -s wrr",
                "-a -t 10.96.8.1:80 -r 10.8.1.1:8080 -m -w 3",
                "-a -t 10.96.8.1:80 -r 10.8.1.2:8080 -m -w 3",
                "-a -t 10.96.8.1:80 -r 10.8.1.3:8080 -m -w 3",
                "-a -t 10.96.8.1:80 -r 10.8.1.9:8080 -m -w 1",
            ]
            #expect(try AgentKernelTests.saved() == expected.sorted(), "\(agent.output)")
            let status = try agent.status()
            #expect((status["source"] as? String)?.hasPrefix("kubernetes https://") == true, "\(status)")
            #expect(((status["services"] as? [[String: Any]]) ?? []).contains { $0["name"] as? String == "default/web:http" }, "\(status)")

            // The weight to 50%: stable 1 each, canary 3.
            try server.put(Self.web(weight: "50"))
            try AgentKernelTests.eventually("the new weight reaches the kernel") {
                try AgentKernelTests.saved().contains("-a -t 10.96.8.1:80 -r 10.8.1.9:8080 -m -w 3")
                    && AgentKernelTests.saved().contains("-a -t 10.96.8.1:80 -r 10.8.1.1:8080 -m -w 1")
            }
            // A bad weight: one problem, the table as it was.
            let table = try AgentKernelTests.saved()
            try server.put(Self.web(weight: "150"))
            try AgentKernelTests.eventually("the bad weight is reported") {
                ((try agent.status()["problems"] as? [[String: Any]]) ?? []).contains { ($0["field"] as? String)?.contains("canary-weight") == true }
            }
            #expect(try AgentKernelTests.saved() == table)
            try server.put(Self.web(weight: "50"))

            // The node label flips the scheduler: an edit of the service.
            try server.put(Self.node(scheduler: "sh"))
            try AgentKernelTests.eventually("the node label makes it sh") {
                try AgentKernelTests.saved().contains { $0.hasPrefix("-A -t 10.96.8.1:80 -s sh") }
            }
            let shTable = try AgentKernelTests.saved()
            #expect(agent.terminate() == 0, "\(agent.output)")
            #expect(try AgentKernelTests.saved() == shTable)

            agent = try AgentKernelTests.Agent(
                arguments: ["--kubeconfig", server.kubeconfig, "--node-name", "node-1"], port: 19112)
            try AgentKernelTests.eventually("the restarted agent is ready") { try agent.status()["ready"] as? Bool == true }
            let fullSync = try #require(try agent.status()["lastFullSync"] as? [String: Any])
            #expect(fullSync["operations"] as? Int == 0, "\(fullSync)")
            #expect(agent.terminate() == 0)

            _ = try run(agentPath, ["cleanup", "--interface", AgentKernelTests.interface])
            #expect(try AgentKernelTests.saved().isEmpty)
            #expect(try AgentKernelTests.addresses().isEmpty)
        }
    }
}
