#!/usr/bin/env python3
"""Writes the FuzzKubernetes seeds (corpus/kubernetes): watch and list bodies shaped as the stand-in API
server (Tests/e2e/apiserver.py) and the test fixtures (Tests/KubernetesTests/Fixtures.swift) send them,
with the fields a real cluster fills in (core/v1 Service, Endpoints, Node; discovery.k8s.io/v1
EndpointSlice; meta/v1 Status). Each seed: byte 0 the options (bit 0: core/v1 Endpoints, bit 1:
--external-ips, bits 2-3: the --scheduler flag), byte 1 the largest chunk (2^(b & 15) bytes), byte 2
the seed of the chunk sizes, then the body: one JSON object a line, as a watch streams them.

    python3 Tests/fuzz/make-kubernetes-seeds.py
"""
import json
import os

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "kubernetes")
PROXY = {"service.kubernetes.io/service-proxy-name": "canary-agent"}
UID = "5a1e0000-0000-0000-0000-000000000001"


def service(name, cluster_ips=("10.96.0.10",), ports=None, labels=PROXY, annotations=None, type_="ClusterIP",
            external_ips=None, affinity="None", timeout=None, namespace="default", rv="1001"):
    ports = ports if ports is not None else [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
    metadata = {"name": name, "namespace": namespace, "uid": UID, "resourceVersion": rv,
                "creationTimestamp": "2026-12-03T10:00:00Z", "labels": dict(labels, app=name)}
    if annotations:
        metadata["annotations"] = annotations
    spec = {"ports": ports, "selector": {"app": name}, "clusterIP": cluster_ips[0] if cluster_ips else "None",
            "clusterIPs": list(cluster_ips) or ["None"], "type": type_, "sessionAffinity": affinity,
            "ipFamilies": ["IPv6" if ":" in ip else "IPv4" for ip in cluster_ips],
            "ipFamilyPolicy": "PreferDualStack" if len(cluster_ips) > 1 else "SingleStack",
            "internalTrafficPolicy": "Cluster"}
    if external_ips:
        spec["externalIPs"] = external_ips
    if affinity == "ClientIP":
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": timeout or 10800}}
    return {"kind": "Service", "apiVersion": "v1", "metadata": metadata, "spec": spec,
            "status": {"loadBalancer": {}}}


def endpoint(address, ready=True, serving=None, terminating=False, node="node-1"):
    return {"addresses": [address],
            "conditions": {"ready": ready, "serving": ready if serving is None else serving, "terminating": terminating},
            "nodeName": node, "targetRef": {"kind": "Pod", "namespace": "default", "name": "pod-" + address.replace(".", "-").replace(":", "-"), "uid": UID}}


def slice_(name, service_name, endpoints, ports=None, address_type="IPv4", rv="2001"):
    ports = ports if ports is not None else [{"name": "http", "protocol": "TCP", "port": 8080}]
    return {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": name, "generateName": service_name + "-", "namespace": "default", "resourceVersion": rv,
                         "labels": {"kubernetes.io/service-name": service_name,
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service_name, "uid": UID,
                                              "controller": True, "blockOwnerDeletion": True}]},
            "addressType": address_type, "endpoints": endpoints, "ports": ports}


def endpoints_object(name, ready, not_ready=(), ports=None):
    ports = ports if ports is not None else [{"name": "http", "protocol": "TCP", "port": 8080}]
    def addresses(ips):
        return [{"ip": ip, "nodeName": "node-1", "targetRef": {"kind": "Pod", "namespace": "default", "name": "pod-" + ip}} for ip in ips]
    subset = {"addresses": addresses(ready), "ports": ports}
    if not_ready:
        subset["notReadyAddresses"] = addresses(not_ready)
    return {"kind": "Endpoints", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}}, "subsets": [subset]}


def node(name="node-1", labels=None):
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    all_labels.update(labels or {})
    return {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "labels": all_labels, "resourceVersion": "3001"},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": name}],
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def event(type_, obj):
    return {"type": type_, "object": obj}


def typed_list(kind, api_version, items, rv="5000", cont=None):
    items = [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in items]
    metadata = {"resourceVersion": rv}
    if cont:
        metadata["continue"] = cont
    return {"kind": kind + "List", "apiVersion": api_version, "metadata": metadata, "items": items}


CANARY = {"canary-agent.io/canary-service": "web-canary", "canary-agent.io/canary-weight": "12.5",
          "canary-agent.io/scheduler": "mh", "canary-agent.io/persistence-timeout": "300"}
web = service("web", annotations=CANARY, ports=[{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                                                {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": "dns"}])
canary = service("web-canary", cluster_ips=("10.96.0.11",), labels={})
web_slice = slice_("web-abcde", "web", [endpoint("10.244.1.10"), endpoint("10.244.1.11"),
                                        endpoint("10.244.1.12", ready=False, serving=True, terminating=True),
                                        endpoint("10.244.1.13", ready=False, serving=False)],
                   ports=[{"name": "http", "protocol": "TCP", "port": 8080}, {"name": "dns", "protocol": "UDP", "port": 5353}])
canary_slice = slice_("web-canary-fghij", "web-canary", [endpoint("10.244.2.10")])
dual = service("dual", cluster_ips=("10.96.0.30", "fd00:10:96::30"), affinity="ClientIP", timeout=600,
               external_ips=["203.0.113.7", "169.254.169.254"], type_="LoadBalancer")
dual_v4 = slice_("dual-v4", "dual", [endpoint("10.244.3.10"), endpoint("10.244.3.11")])
dual_v6 = slice_("dual-v6", "dual", [endpoint("fd00:10:244:3::10"), endpoint("fd00:10:244:3::11")], address_type="IPv6")
headless = service("headless", cluster_ips=())

seeds = {
    # A list, then the watch: the informer's life.
    "lists-then-watch": (0x08, 15, 0, [
        typed_list("Service", "v1", [web, canary, headless]),
        typed_list("EndpointSlice", "discovery.k8s.io/v1", [web_slice, canary_slice]),
        typed_list("Node", "v1", [node(labels={"canary-agent.io/scheduler": "sh"})]),
        event("MODIFIED", dict(web, metadata=dict(web["metadata"], annotations=dict(CANARY, **{"canary-agent.io/canary-weight": "50"})))),
        event("ADDED", slice_("web-zzzzz", "web", [endpoint("10.244.1.20")])),
        event("DELETED", canary_slice),
        event("BOOKMARK", {"kind": "Service", "apiVersion": "v1", "metadata": {"resourceVersion": "5003"}}),
        event("ERROR", status(410, "Expired", "too old resource version: 1000 (5000)")),
    ]),
    # A watch cut into 1- to 8-byte chunks: one event over many reads.
    "watch-small-chunks": (0x04, 3, 7, [
        event("ADDED", web), event("ADDED", canary), event("ADDED", web_slice), event("ADDED", canary_slice),
        event("ADDED", node(labels={"canary-agent.io/scheduler": "rr"})),
        event("DELETED", web),
    ]),
    # Dual stack, ClientIP affinity, externalIPs (accepted: option bit 1), one refused.
    "dual-stack-external-ips": (0x02, 6, 3, [
        event("ADDED", dual), event("ADDED", dual_v4), event("ADDED", dual_v6),
        event("MODIFIED", dict(dual, spec=dict(dual["spec"], externalIPs=["203.0.113.7"]))),
    ]),
    # core/v1 Endpoints instead of slices (option bit 0).
    "endpoints-api": (0x01, 10, 5, [
        typed_list("Service", "v1", [web, canary]),
        typed_list("Endpoints", "v1", [endpoints_object("web", ["10.244.1.10", "10.244.1.11"], ["10.244.1.12"]),
                                       endpoints_object("web-canary", ["10.244.2.10"])]),
        event("MODIFIED", endpoints_object("web", ["10.244.1.10"])),
        event("DELETED", endpoints_object("web-canary", [])),
    ]),
    # What the translator refuses: odd ports, addresses, weights, schedulers; an empty list page.
    "refused": (0x0c, 15, 9, [
        event("ADDED", service("bad-port", ports=[{"port": 0}, {"port": 70000, "protocol": "ICMP"}])),
        event("ADDED", service("bad-ip", cluster_ips=("10.96.0.300",))),
        event("ADDED", service("loopback", cluster_ips=("127.0.0.1",))),
        event("ADDED", service("bad-weight", annotations={"canary-agent.io/canary-service": "web-canary", "canary-agent.io/canary-weight": "100.001"})),
        event("ADDED", service("self-canary", annotations={"canary-agent.io/canary-service": "self-canary", "canary-agent.io/canary-weight": "1"})),
        event("ADDED", service("bad-scheduler", annotations={"canary-agent.io/scheduler": "lblc", "canary-agent.io/persistence-timeout": "-1"})),
        event("ADDED", service("conflict", cluster_ips=("10.96.0.10",))),
        event("ADDED", node(labels={"canary-agent.io/scheduler": "nope"})),
        {"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "9"}, "items": None},
    ]),
    # An error body as `send` decodes it, and an unknown event type.
    "status": (0x00, 15, 0, [
        status(403, "Forbidden", 'services is forbidden: User "system:serviceaccount:kube-system:canary-agent" cannot list resource "services"'),
        {"type": "GONE", "object": {}},
    ]),
}

for name, (options, largest, seed, objects) in seeds.items():
    body = "".join(json.dumps(o, separators=(",", ":")) + "\n" for o in objects).encode()
    with open(os.path.join(HERE, name + ".bin"), "wb") as f:
        f.write(bytes([options, largest, seed]) + body)
