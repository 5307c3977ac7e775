import CanaryCore
import Foundation
import HostScenarios
import IPVS
import KubernetesClient
import KubernetesSource

extension HostWorkload {
    // MARK: The cluster: a stable Service and its canary Service, each with one EndpointSlice

    package static func stableName(_ index: Int) -> String { "service-\(index)" }
    package static func canaryName(_ index: Int) -> String { "service-\(index)-canary" }

    package static func services(size: HostSize) -> [ObjectKey: Service] {
        var all: [ObjectKey: Service] = [:]
        all.reserveCapacity(2 * size.services)
        let port = Service.Port(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080))
        for index in 0..<size.services {
            let stable = Service(
                metadata: ObjectMeta(
                    name: stableName(index), namespace: namespace, uid: "uid-s-\(index)", resourceVersion: "1",
                    labels: [CanaryScheme.serviceProxyNameLabel: CanaryScheme.serviceProxyName],
                    annotations: [
                        CanaryScheme.canaryServiceAnnotation: canaryName(index), CanaryScheme.canaryWeightAnnotation: "10",
                    ]),
                spec: Service.Spec(
                    clusterIP: "\(virtualAddress(index))", clusterIPs: ["\(virtualAddress(index))"], ports: [port]))
            let canary = Service(
                metadata: ObjectMeta(name: canaryName(index), namespace: namespace, uid: "uid-c-\(index)", resourceVersion: "1"),
                spec: Service.Spec(
                    clusterIP: "\(canaryClusterIP(index))", clusterIPs: ["\(canaryClusterIP(index))"], ports: [port]))
            all[stable.key] = stable
            all[canary.key] = canary
        }
        return all
    }

    package static func sliceName(_ index: Int, canary: Bool) -> String {
        canary ? "service-\(index)-canary-x7k2q" : "service-\(index)-9fz4m"
    }

    package static func slice(_ index: Int, canary: Bool, addresses: [IPAddress]) -> EndpointSlice {
        EndpointSlice(
            metadata: ObjectMeta(
                name: sliceName(index, canary: canary), namespace: namespace, uid: "uid-e-\(index)\(canary ? "c" : "")",
                resourceVersion: "1",
                labels: [
                    EndpointSlice.serviceNameLabel: canary ? canaryName(index) : stableName(index),
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                ]),
            addressType: "IPv4",
            endpoints: addresses.map {
                EndpointSlice.Endpoint(
                    addresses: ["\($0)"], conditions: EndpointSlice.Conditions(ready: true, serving: true, terminating: false))
            },
            ports: [EndpointPort(name: "http", port: 8080, protocol: "TCP")])
    }

    package static func slices(size: HostSize) -> [ObjectKey: EndpointSlice] {
        var all: [ObjectKey: EndpointSlice] = [:]
        all.reserveCapacity(2 * size.services)
        for index in 0..<size.services {
            let stable = slice(index, canary: false, addresses: stableAddresses(index, size: size))
            let canary = slice(index, canary: true, addresses: canaryAddresses(index, size: size))
            all[stable.key] = stable
            all[canary.key] = canary
        }
        return all
    }

    /// One line of a watch stream as the API server sends it: a MODIFIED event for service i's
    /// stable slice, with the fields a real EndpointSlice carries (most of which the agent skips).
    package static func watchEventLine(_ index: Int, size: HostSize, variant: Bool, resourceVersion: Int) -> [UInt8] {
        let name = sliceName(index, canary: false)
        let endpoints = stableAddresses(index, size: size, variant: variant).enumerated().map { offset, address in
            """
            {"addresses":["\(address)"],"conditions":{"ready":true,"serving":true,"terminating":false},\
            "targetRef":{"kind":"Pod","namespace":"\(namespace)","name":"service-\(index)-7d9c8b6f5-\(offset)",\
            "uid":"6c1b2d3e-0000-4000-8000-\(String(format: "%012d", index * 64 + offset))"},\
            "nodeName":"node-\(offset % 7)","zone":"zone-\(offset % 3)"}
            """
        }
        let text = """
            {"type":"MODIFIED","object":{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1",\
            "metadata":{"name":"\(name)","generateName":"service-\(index)-","namespace":"\(namespace)",\
            "uid":"0f1e2d3c-0000-4000-8000-\(String(format: "%012d", index))","resourceVersion":"\(resourceVersion)",\
            "generation":\(resourceVersion),"creationTimestamp":"2026-12-01T10:00:00Z",\
            "labels":{"endpointslice.kubernetes.io/managed-by":"endpointslice-controller.k8s.io",\
            "kubernetes.io/service-name":"\(stableName(index))"},\
            "annotations":{"endpoints.kubernetes.io/last-change-trigger-time":"2026-12-03T10:00:00Z"},\
            "ownerReferences":[{"apiVersion":"v1","kind":"Service","name":"\(stableName(index))",\
            "uid":"1a2b3c4d-0000-4000-8000-\(String(format: "%012d", index))","controller":true,"blockOwnerDeletion":true}],\
            "managedFields":[{"manager":"kube-controller-manager","operation":"Update","apiVersion":"discovery.k8s.io/v1",\
            "time":"2026-12-03T10:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:addressType":{},"f:endpoints":{},"f:ports":{}}}]},\
            "addressType":"IPv4","endpoints":[\(endpoints.joined(separator: ","))],\
            "ports":[{"name":"http","protocol":"TCP","port":8080}]}}

            """
        return Array(text.utf8)
    }

}
