"""Kubernetes API objects for the e2e bench, shaped as the API reference gives them (core/v1 Service
and Node, discovery.k8s.io/v1 EndpointSlice), with the fields a real cluster fills in."""

from __future__ import annotations

PROXY_LABEL = {"service.kubernetes.io/service-proxy-name": "canary-agent"}
NODE = "node-1"


def service(name: str, cluster_ip: str, annotations: dict[str, str] | None = None, namespace: str = "default",
            port: int = 80, port_name: str = "http", labels: dict[str, str] | None = None,
            selector: dict[str, str] | None = None, headless: bool = False) -> dict:
    metadata = {"name": name, "namespace": namespace, "labels": dict(PROXY_LABEL if labels is None else labels)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    cluster_ips = ["None"] if headless else [cluster_ip]
    return {
        "kind": "Service", "apiVersion": "v1", "metadata": metadata,
        "spec": {
            "ports": [{"name": port_name, "protocol": "TCP", "port": port, "targetPort": port}],
            "selector": selector or {"app": name},
            "clusterIP": cluster_ips[0], "clusterIPs": cluster_ips,
            "type": "ClusterIP", "sessionAffinity": "None",
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    }


def canary_annotations(canary: str, weight: str, scheduler: str | None = None) -> dict[str, str]:
    annotations = {"canary-agent.io/canary-service": canary, "canary-agent.io/canary-weight": weight}
    if scheduler:
        annotations["canary-agent.io/scheduler"] = scheduler
    return annotations


def endpoint(address: str, pod: str, ready: bool = True, serving: bool | None = None,
             terminating: bool = False, namespace: str = "default") -> dict:
    return {
        "addresses": [address],
        "conditions": {"ready": ready, "serving": ready if serving is None else serving, "terminating": terminating},
        "nodeName": NODE,
        "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod,
                      "uid": f"5a1e0000-0000-4000-8000-{abs(hash(pod)) % 10**12:012d}"},
    }


def endpoint_slice(name: str, service_name: str, endpoints: list[dict], namespace: str = "default",
                   port: int = 80, port_name: str = "http") -> dict:
    return {
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": name, "generateName": f"{service_name}-", "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name,
                       "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service_name,
                                 "uid": "0b5e0000-0000-4000-8000-000000000001", "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }


def slice_for(service_name: str, backends, suffix: str = "x1y2z", **conditions) -> dict:
    """A slice of ready endpoints for these topology backends (``Backend`` objects)."""
    return endpoint_slice(f"{service_name}-{suffix}", service_name,
                          [endpoint(b.address, b.name, **conditions) for b in backends])


def node(labels: dict[str, str] | None = None, name: str = NODE) -> dict:
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    all_labels.update(labels or {})
    return {
        "kind": "Node", "apiVersion": "v1",
        "metadata": {"name": name, "labels": all_labels},
        "spec": {"podCIDR": "10.244.0.0/16", "podCIDRs": ["10.244.0.0/16"]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status"}],
        },
    }
