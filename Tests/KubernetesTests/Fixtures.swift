import CanaryCore
import Foundation
import IPVS

@testable import KubernetesSource

/// API objects shaped as the Kubernetes API reference gives them (core/v1 Service, Endpoints, Node;
/// discovery.k8s.io/v1 EndpointSlice), with the fields a real cluster fills in, most of which the agent ignores.
enum Fixtures {
    static let proxyLabel: [String: String] = ["service.kubernetes.io/service-proxy-name": "canary-agent"]

    static func servicePort(_ name: String?, port: Int, targetPort: JSON? = nil, protocol proto: String = "TCP", nodePort: Int? = nil) -> JSON {
        var json: JSON = ["protocol": .string(proto), "port": .int(port), "targetPort": targetPort ?? .int(port)]
        if let name { json["name"] = .string(name) }
        if let nodePort { json["nodePort"] = .int(nodePort) }
        return json
    }

    static func service(
        _ name: String, namespace: String = "default", clusterIPs: [String] = ["10.96.0.10"],
        ports: [JSON] = [servicePort("http", port: 80)], labels: [String: String] = proxyLabel,
        annotations: [String: String] = [:], type: String = "ClusterIP", selector: [String: String]? = nil,
        externalIPs: [String]? = nil, sessionAffinity: String = "None", affinityTimeout: Int? = nil
    ) -> JSON {
        var metadata: JSON = [
            "name": .string(name), "namespace": .string(namespace),
            "labels": .object(labels.mapValues { .string($0) }),
        ]
        if !annotations.isEmpty { metadata["annotations"] = .object(annotations.mapValues { .string($0) }) }
        let families: [JSON] = clusterIPs.map { $0.contains(":") ? "IPv6" : "IPv4" }
        var spec: JSON = [
            "ports": .array(ports),
            "selector": .object((selector ?? ["app": name]).mapValues { .string($0) }),
            "clusterIP": .string(clusterIPs.first ?? "None"),
            "clusterIPs": .array(clusterIPs.map { .string($0) }),
            "type": .string(type),
            "sessionAffinity": .string(sessionAffinity),
            "ipFamilies": .array(families),
            "ipFamilyPolicy": clusterIPs.count > 1 ? "PreferDualStack" : "SingleStack",
            "internalTrafficPolicy": "Cluster",
        ]
        if type == "NodePort" || type == "LoadBalancer" { spec["externalTrafficPolicy"] = "Cluster" }
        if let externalIPs { spec["externalIPs"] = .array(externalIPs.map { .string($0) }) }
        if sessionAffinity == "ClientIP" {
            spec["sessionAffinityConfig"] = ["clientIP": ["timeoutSeconds": .int(affinityTimeout ?? 10800)]]
        }
        return [
            "kind": "Service", "apiVersion": "v1", "metadata": metadata, "spec": spec,
            "status": ["loadBalancer": [:]],
        ]
    }

    static func headlessService(_ name: String, namespace: String = "default") -> JSON {
        var json = service(name, namespace: namespace, clusterIPs: [])
        json["spec"]?["clusterIP"] = "None"
        json["spec"]?["clusterIPs"] = ["None"]
        return json
    }

    static func endpoint(
        _ address: String, ready: Bool? = true, serving: Bool? = nil, terminating: Bool? = nil, pod: String? = nil,
        node: String = "node-1"
    ) -> JSON {
        var conditions: JSON = [:]
        if let ready { conditions["ready"] = .bool(ready) }
        if let servingValue = serving ?? ready { conditions["serving"] = .bool(servingValue) }
        conditions["terminating"] = .bool(terminating ?? false)
        let podName = pod ?? "pod-\(address.replacingOccurrences(of: ".", with: "-").replacingOccurrences(of: ":", with: "-"))"
        return [
            "addresses": [.string(address)], "conditions": conditions, "nodeName": .string(node),
            "targetRef": ["kind": "Pod", "namespace": "default", "name": .string(podName), "uid": "5a1e0000-0000-0000-0000-000000000001"],
        ]
    }

    static func slicePort(_ name: String?, port: Int, protocol proto: String = "TCP") -> JSON {
        var json: JSON = ["port": .int(port), "protocol": .string(proto)]
        json["name"] = .string(name ?? "")
        return json
    }

    static func slice(
        _ name: String, service: String, namespace: String = "default", addressType: String = "IPv4",
        endpoints: [JSON], ports: [JSON] = [slicePort("http", port: 80)], extraLabels: [String: String] = [:]
    ) -> JSON {
        var labels: [String: String] = [
            "kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
        ]
        labels.merge(extraLabels) { _, new in new }
        return [
            "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": [
                "name": .string(name), "generateName": .string("\(service)-"), "namespace": .string(namespace),
                "labels": .object(labels.mapValues { .string($0) }),
                "ownerReferences": [
                    [
                        "apiVersion": "v1", "kind": "Service", "name": .string(service),
                        "uid": "0b5e0000-0000-0000-0000-000000000001", "controller": true, "blockOwnerDeletion": true,
                    ]
                ],
            ],
            "addressType": .string(addressType),
            "endpoints": .array(endpoints),
            "ports": .array(ports),
        ]
    }

    static func endpointsObject(
        _ name: String, namespace: String = "default", ready: [String], notReady: [String] = [],
        ports: [JSON] = [slicePort("http", port: 80)]
    ) -> JSON {
        func addresses(_ ips: [String]) -> JSON {
            .array(ips.map { ["ip": .string($0), "nodeName": "node-1", "targetRef": ["kind": "Pod", "namespace": .string(namespace), "name": .string("pod-\($0)")]] })
        }
        var subset: JSON = ["addresses": addresses(ready), "ports": .array(ports)]
        if !notReady.isEmpty { subset["notReadyAddresses"] = addresses(notReady) }
        return [
            "kind": "Endpoints", "apiVersion": "v1",
            "metadata": ["name": .string(name), "namespace": .string(namespace), "labels": ["app": .string(name)]],
            "subsets": [subset],
        ]
    }

    static func node(_ name: String = "node-1", labels: [String: String] = [:]) -> JSON {
        var allLabels: [String: String] = [
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        ]
        allLabels.merge(labels) { _, new in new }
        return [
            "kind": "Node", "apiVersion": "v1",
            "metadata": ["name": .string(name), "labels": .object(allLabels.mapValues { .string($0) })],
            "spec": ["podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]],
            "status": [
                "addresses": [["type": "InternalIP", "address": "192.168.1.10"], ["type": "Hostname", "address": .string(name)]],
                "conditions": [["type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"]],
            ],
        ]
    }

    /// Decodes an API object into the agent's model, as the informer would.
    static func decode<T: Decodable>(_ json: JSON, as type: T.Type = T.self) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(json.encoded()))
    }

    // MARK: The seed scenarios

    /// Seed 1: "nginx-service" over nginx-deployment (stable, 1.7.9) and nginx-deployment-canary (1.8.0),
    /// both selected by `app: nginx`: the replicas' ratio makes the split, with no canary annotation.
    static func seedReplicaSplit(stable: Int, canary: Int) -> (service: JSON, slice: JSON) {
        let service = service(
            "nginx-service", clusterIPs: ["10.96.0.10"],
            ports: [servicePort("nginx-port", port: 80, targetPort: 80, nodePort: 32600)],
            labels: proxyLabel.merging(["app": "nginx"]) { a, _ in a }, type: "NodePort", selector: ["app": "nginx"])
        let stablePods = (0..<stable).map { endpoint("10.244.1.\(10 + $0)", pod: "nginx-deployment-6d8f-\($0)") }
        let canaryPods = (0..<canary).map { endpoint("10.244.2.\(10 + $0)", pod: "nginx-deployment-canary-7c9a-\($0)") }
        let slice = slice(
            "nginx-service-x7k2p", service: "nginx-service", endpoints: stablePods + canaryPods,
            ports: [slicePort("nginx-port", port: 80)])
        return (service, slice)
    }

    /// Seed 2: a stable Service "nginx-v1" naming its canary Service "nginx-v2" at weight 10.
    static func seedCanaryServices(weight: String = "10") -> [JSON] {
        [
            service(
                "nginx-v1", clusterIPs: ["10.96.0.20"], ports: [servicePort("http", port: 80)],
                annotations: ["canary-agent.io/canary-service": "nginx-v2", "canary-agent.io/canary-weight": weight],
                selector: ["app": "nginx", "version": "v1"]),
            service(
                "nginx-v2", clusterIPs: ["10.96.0.21"], ports: [servicePort("http", port: 80)], labels: [:],
                selector: ["app": "nginx", "version": "v2"]),
            slice(
                "nginx-v1-abcde", service: "nginx-v1",
                endpoints: [endpoint("10.244.1.20"), endpoint("10.244.1.21"), endpoint("10.244.1.22")]),
            slice("nginx-v2-fghij", service: "nginx-v2", endpoints: [endpoint("10.244.2.20")]),
        ]
    }

    /// What the planner must get from seed 1: the Service's ClusterIP:80, every replica of both
    /// Deployments a stable endpoint (the replica ratio is the split), no canary.
    static func expectedReplicaSplit(stable: Int, canary: Int) -> DesiredState {
        let stableAddresses = (0..<stable).map { "10.244.1.\(10 + $0):80" }
        let canaryAddresses = (0..<canary).map { "10.244.2.\(10 + $0):80" }
        return DesiredState(services: [
            virtualService("default/nginx-service:nginx-port", .tcp, "10.96.0.10:80", stable: stableAddresses + canaryAddresses)
        ])
    }

    /// What the planner must get from seed 2: nginx-v1's ClusterIP:80 with its three pods stable and
    /// nginx-v2's pod canary at the given share.
    static func expectedCanaryServices(scheduler: Scheduler = .weightedRoundRobin, share: String = "10") -> DesiredState {
        DesiredState(services: [
            virtualService(
                "default/nginx-v1:http", .tcp, "10.96.0.20:80", scheduler: scheduler,
                stable: ["10.244.1.20:80", "10.244.1.21:80", "10.244.1.22:80"], canary: ["10.244.2.20:80"], share: share)
        ])
    }
}
