"""Scenarios 14-16: Gateway API routes whose parent is a Service (GAMMA at L4), written as the
progressive-delivery controllers write them, on the real kernel (run inside the VM by scenarios.py).

    14 argo-tcproute      Argo Rollouts' gatewayAPI plugin: a user's TCPRoute (v1alpha2 on the
                          experimental channel, then v1 on the standard one) stepped 0 → 10 → 30 → 60
                          → 100 → promoted, the stable/canary Services' EndpointSlices following the
                          ReplicaSets, long connections open throughout
    15 flagger-httproute  Flagger's gatewayapi:v1 provider: the HTTPRoute it creates, 90/10 → 80/20 →
                          50/50, each step after the route's status acknowledges the last (timed),
                          promotion, then an A/B test (header match) that L4 must refuse
    16 gateway-more       a UDPRoute of three weighted backends (UDP counted); a TCPRoute whose canary
                          Service appears later; CRDs installed after the agent started; the status
                          writer's Lease taken over by a second agent (in its own network namespace)
                          when the leader is SIGKILLed

scenarios.py runs as __main__, so this module never imports it: scenarios.py calls :func:`register`
with its ``scenario`` decorator and the helpers used here. Every route write goes through the stand-in
API server's real API (HTTPS, validation, generation, resourceVersion), as the controllers' clients do,
so that its write log (``GET /writes``) times them.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import selectors
import socket
import ssl
import threading
import time
import urllib.parse

import bench
import k8s
import traffic
from bench import BenchError, CheckFailed, log

GROUP = "gateway.networking.k8s.io"
CONTROLLER = "canary-agent.io/gateway-controller"
LEASE_NAMESPACE = "kube-system"
LEASE_NAME = "canary-agent-route-status"
CLIENTS = "e2e-clients"
SOURCES = "10.250.1.1+600"
ELECTION = ["--leader-election-namespace", LEASE_NAMESPACE]

# Set by register().
CONNECTIONS = 2000
no_failures = None


def register(scenario, connections: int, failures_check) -> None:
    """Adds scenarios 14-16 to scenarios.py's registry (its ``scenario`` decorator)."""
    global CONNECTIONS, no_failures
    CONNECTIONS = connections
    no_failures = failures_check
    scenario(14, "argo-tcproute", "Argo Rollouts' Gateway API plugin: a TCPRoute stepped 0→10→30→60→100 and "
             "promoted, v1alpha2 (experimental) then v1 (standard), Services following the ReplicaSets")(argo_tcproute)
    scenario(15, "flagger-httproute", "Flagger's gatewayapi:v1 provider: HTTPRoute 90/10→80/20→50/50 gated on the "
             "route's status (timed), promotion, then an A/B header match refused at L4")(flagger_httproute)
    scenario(16, "gateway-more", "UDPRoute 70/20/10; a canary Service that appears late; CRDs installed after "
             "start; the status Lease taken over when the leader is SIGKILLed")(gateway_more)


# ------------------------------------------------------------------------------------ the API, as a client


class KubeAPI:
    """The stand-in API server's real API (HTTPS, bearer token), as a controller's client uses it."""

    def __init__(self, control):
        info = control.info
        url = urllib.parse.urlparse(info["url"])
        self.host, self.port, self.token = url.hostname, url.port, info["token"]
        self.context = ssl.create_default_context(cafile=info["ca"])

    def request(self, method: str, path: str, body=None, content_type: str = "application/json") -> tuple[int, dict]:
        connection = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=30)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            try:
                payload = json.loads(raw) if raw else {}
            except ValueError:
                payload = {"raw": raw.decode(errors="replace")}
            return response.status, payload
        finally:
            connection.close()

    def must(self, method: str, path: str, body=None, content_type: str = "application/json",
             expect: tuple[int, ...] = (200, 201)) -> dict:
        status, payload = self.request(method, path, body, content_type)
        if status not in expect:
            raise BenchError(f"{method} {path}: {status} {json.dumps(payload)[:600]}")
        return payload

    def get(self, path: str) -> dict | None:
        status, payload = self.request("GET", path)
        return payload if status == 200 else None


def route_path(plural: str, version: str, namespace: str, name: str | None = None) -> str:
    path = f"/apis/{GROUP}/{version}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{LEASE_NAME}"


# ------------------------------------------------------------------------------------ objects


def service(name: str, address: str, namespace: str = "default", port: int = 80, target_port: int = 80,
            port_name: str = "http", protocol: str = "TCP", parent: bool = False,
            selector: dict | None = None) -> dict:
    """A Service; ``parent``: it carries the service-proxy-name label (a route's parent)."""
    obj = k8s.service(name, address, namespace=namespace, port=port, port_name=port_name,
                      labels=None if parent else {}, selector=selector)
    obj["spec"]["ports"] = [{"name": port_name, "protocol": protocol, "port": port, "targetPort": target_port}]
    return obj


def endpoint_slice(service_name: str, backends, namespace: str = "default", port: int = 80, port_name: str = "http",
                   protocol: str = "TCP", suffix: str = "x1y2z") -> dict:
    """The EndpointSlice of a Service: its ready endpoints are these topology backends' pods."""
    obj = k8s.endpoint_slice(f"{service_name}-{suffix}", service_name,
                             [k8s.endpoint(b.address, b.name, namespace=namespace) for b in backends],
                             namespace=namespace, port=port, port_name=port_name)
    obj["ports"][0]["protocol"] = protocol
    return obj


def backend_refs(refs: list[tuple[str, int, int]]) -> list[dict]:
    return [{"group": "", "kind": "Service", "name": name, "port": port, "weight": weight} for name, port, weight in refs]


def l4_route(kind: str, name: str, version: str, parent: str, refs: list[tuple[str, int, int]],
             namespace: str = "default", parent_port: int | None = None, labels: dict | None = None) -> dict:
    parent_ref = {"group": "", "kind": "Service", "name": parent}
    if parent_port is not None:
        parent_ref["port"] = parent_port
    metadata = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": f"{GROUP}/{version}", "kind": kind, "metadata": metadata,
            "spec": {"parentRefs": [parent_ref], "rules": [{"backendRefs": backend_refs(refs)}]}}


# ------------------------------------------------------------------------------------ route status


def our_parent(route: dict | None, parent: str) -> dict | None:
    """canary-agent's entry of ``status.parents`` for the parent Service ``parent``."""
    for entry in ((route or {}).get("status") or {}).get("parents") or []:
        if entry.get("controllerName") == CONTROLLER and (entry.get("parentRef") or {}).get("name") == parent:
            return entry
    return None


def condition(entry: dict | None, kind: str) -> dict:
    for item in (entry or {}).get("conditions") or []:
        if item.get("type") == kind:
            return item
    return {}


def describe_status(route: dict | None, parent: str) -> str:
    entry = our_parent(route, parent)
    if entry is None:
        return f"no entry of {CONTROLLER} (generation {((route or {}).get('metadata') or {}).get('generation')})"
    return "; ".join(f"{c.get('type')}={c.get('status')} {c.get('reason')} gen {c.get('observedGeneration')}: "
                     f"{c.get('message')}" for c in entry.get("conditions") or [])


def wait_status(api: KubeAPI, path: str, parent: str, accepted: bool | None = True, resolved: bool | None = None,
                reason: str | None = None, timeout: float = 30, interval: float = 0.05) -> tuple[dict, float]:
    """Polls the route until our entry for ``parent`` describes its current generation with these
    conditions (as Flagger waits before each step); returns the route and the seconds waited."""
    began = time.monotonic()
    last = None
    while True:
        route = api.get(path)
        last = route
        entry = our_parent(route, parent)
        if entry is not None:
            generation = route["metadata"].get("generation")
            acc, res = condition(entry, "Accepted"), condition(entry, "ResolvedRefs")
            current = acc.get("observedGeneration") == generation and res.get("observedGeneration") == generation
            ok = current and (accepted is None or acc.get("status") == ("True" if accepted else "False"))
            ok = ok and (resolved is None or res.get("status") == ("True" if resolved else "False"))
            if ok and reason is not None:
                ok = reason in (acc.get("reason"), res.get("reason"))
            if ok:
                return route, time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise CheckFailed(f"timed out after {timeout:.0f}s waiting for the status of {path} "
                              f"(Accepted {accepted}, ResolvedRefs {resolved}, reason {reason}); now: "
                              f"{describe_status(last, parent)}")
        time.sleep(interval)


def write_to_status(api_control, name: str, namespace: str, generation: int, parent: str, since: float) -> float | None:
    """Seconds from the spec write that made ``generation`` to the first status write acknowledging it
    (the stand-in server's write log: both times are its own clock)."""
    writes = api_control.writes(since, name=name, namespace=namespace)
    spec = next((w for w in writes if not w.get("subresource") and w.get("code") in (200, 201)
                 and w.get("generation") == generation), None)
    if spec is None:
        return None
    for write in writes:
        if write.get("subresource") != "status" or write.get("code") != 200 or write["time"] < spec["time"]:
            continue
        answer = write.get("object") or write.get("body") or {}
        entry = our_parent(answer, parent)
        if entry is not None and condition(entry, "Accepted").get("observedGeneration") == generation:
            return write["time"] - spec["time"]
    return None


# ------------------------------------------------------------------------------------ the agent's split


def parse_ipvs(text: str) -> dict[str, bench.VirtualService]:
    table: dict[str, bench.VirtualService] = {}
    current = None
    for line in text.splitlines():
        match = bench.IPVSADM_SERVICE.match(line)
        if match:
            current = bench.VirtualService(match[1], match[2], match[3], match[4].strip())
            table[f"{match[1]} {match[2]}"] = current
            continue
        match = bench.IPVSADM_DEST.match(line)
        if match and current is not None:
            current.destinations[match[1]] = {"forward": match[2], "weight": int(match[3]),
                                              "active": int(match[4]), "inactive": int(match[5])}
    return table


def ipvs_table(netns: str | None = None) -> dict[str, bench.VirtualService]:
    if netns is None:
        return bench.ipvs_table()
    return parse_ipvs(bench.sh("ip", "netns", "exec", netns, "ipvsadm", "-Ln").stdout)


def status_service(status: dict, key: str) -> dict | None:
    for entry in status.get("services", []):
        if key in (entry.get("service"), entry.get("name")):
            return entry
    return None


def cli_groups(agent, key: str) -> tuple[dict[str, dict], dict | None]:
    """The groups of the service ``key`` ("TCP 10.96.1.40:5432") as `canary-agent status --output json`
    reports them: name → {weight, target, effective, liveEndpoints, reason}."""
    result = agent.cli("status", "--agent", agent.listen, "--output", "json", check=False)
    try:
        status = json.loads(result.stdout)
    except ValueError:
        raise BenchError(f"canary-agent status --output json: exit {result.returncode}: "
                         f"{(result.stdout or result.stderr)[:300]}") from None
    entry = status_service(status, key)
    return ({g["name"]: g for g in (entry or {}).get("groups") or []}, entry)


def bucket_shares(groups: dict[str, dict], group_bucket: dict[str, str | None], field: str = "effective") -> dict[str, float]:
    shares: dict[str, float] = {}
    for name, group in groups.items():
        bucket = group_bucket.get(name)
        if bucket is None:
            if float(group.get(field) or 0) > 1e-9:
                shares["?" + name] = shares.get("?" + name, 0.0) + float(group[field])
            continue
        shares[bucket] = shares.get(bucket, 0.0) + float(group.get(field) or 0)
    return shares


def kernel_shares(entry: bench.VirtualService, endpoint_bucket: dict[str, str]) -> dict[str, float]:
    live = {d: v["weight"] for d, v in entry.destinations.items() if v["weight"] > 0}
    total = sum(live.values())
    shares: dict[str, float] = {}
    for destination, weight in live.items():
        bucket = endpoint_bucket.get(destination, "?" + destination)
        shares[bucket] = shares.get(bucket, 0.0) + weight / total
    return shares


class Split:
    """What one service's traffic is judged by: its backend groups' pods, bucketed (by version, or by
    group when each group has pods of its own)."""

    def __init__(self, key: str, target: str, port: int, groups: dict[str, list], bucket_of=None):
        self.key, self.target = key, target
        self.port = port
        self.groups = groups
        self.bucket_of = bucket_of or (lambda backend: backend.version)

    def group_bucket(self) -> dict[str, str | None]:
        result = {}
        for name, backends in self.groups.items():
            buckets = {self.bucket_of(b) for b in backends}
            if len(buckets) > 1:
                raise BenchError(f"group {name} spans {buckets}: the bench cannot judge it")
            result[name] = buckets.pop() if buckets else None
        return result

    def endpoint_bucket(self) -> dict[str, str]:
        return {f"{b.address}:{self.port}": self.bucket_of(b) for backends in self.groups.values() for b in backends}

    def pod_bucket(self) -> dict[str, str]:
        return {b.name: self.bucket_of(b) for backends in self.groups.values() for b in backends}


def wait_split(agent, split: Split, weights: dict[str, int], timeout: float = 60, netns: str | None = None) -> tuple[dict, float]:
    """Waits until the agent reports exactly these group weights for the service and the kernel's wrr
    weights give each bucket the share the agent calls effective; returns (groups, seconds)."""
    began = time.monotonic()
    seen = "nothing"
    while True:
        try:
            entry = status_service(agent.status(), split.key)
            groups = {g["name"]: g for g in (entry or {}).get("groups") or []}
            kernel = ipvs_table(netns).get(split.key)
            if entry is None:
                seen = "the service is not in the agent's status"
            elif {n: g.get("weight") for n, g in groups.items()} != weights:
                seen = f"groups {[(n, g.get('weight')) for n, g in groups.items()]}; problems {entry.get('problems')}"
            elif kernel is None:
                seen = "not in the kernel's table"
            else:
                expected = bucket_shares(groups, split.group_bucket())
                actual = kernel_shares(kernel, split.endpoint_bucket())
                keys = set(expected) | set(actual)
                if all(abs(expected.get(k, 0) - actual.get(k, 0)) <= 1e-3 for k in keys):
                    return groups, time.monotonic() - began
                seen = f"agent {expected} kernel {actual} ({kernel.scheduler}, {kernel.destinations})"
        except (BenchError, OSError, ValueError) as error:
            seen = f"error {error}"
        if time.monotonic() - began > timeout:
            raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {split.key} at {weights}; last: {seen[:900]}")
        time.sleep(0.3)


def measure_split(r, label: str, agent, split: Split, count: int | None = None, summary: list | None = None,
                  result: dict | None = None) -> dict:
    """New connections to the service, each bucket's observed share against the effective share
    `canary-agent status --output json` reports (services[].groups[].effective)."""
    groups, entry = cli_groups(agent, split.key)
    if not groups:
        raise CheckFailed(f"`canary-agent status --output json` has no groups for {split.key}: {json.dumps(entry)[:300]}")
    effective = bucket_shares(groups, split.group_bucket())
    targets = bucket_shares(groups, split.group_bucket(), "target")
    if result is None:
        result = bench.burst(split.target, count or CONNECTIONS)
    pods = split.pod_bucket()
    counts: dict[str, int] = {}
    for pod, n in (result.get("by_pod") or {}).items():
        bucket = pods.get(pod, "?" + pod)
        counts[bucket] = counts.get(bucket, 0) + n
    if not result.get("by_pod") and result.get("by_version"):
        counts = dict(result["by_version"])
    judged = dict(result, by_version=counts)
    line = []
    for bucket in sorted(set(effective) | set(counts)):
        entry_m = r.measure(f"{label} [{bucket}]", judged, bucket, targets.get(bucket, 0.0), effective.get(bucket, 0.0), "wrr")
        line.append(f"{bucket} {entry_m['observed']:.4f}/{effective.get(bucket, 0.0):.4f}")
    if summary is not None:
        summary.append(f"{label}: " + ", ".join(line) + f" (n={sum(counts.values())}, failed {result.get('failed', 0)})")
    return result


# ------------------------------------------------------------------------------------ sockets in namespaces

_HOME_NS: int | None = None
_NS_FDS: dict[str, int] = {}
_NS_LOCK = threading.Lock()


def socket_in(netns: str | None, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket in the named network namespace (the calling thread goes there for the call only)."""
    global _HOME_NS
    if not netns:
        return socket.socket(socket.AF_INET, kind)
    with _NS_LOCK:
        if _HOME_NS is None:
            _HOME_NS = os.open("/proc/self/ns/net", os.O_RDONLY)
        if netns not in _NS_FDS:
            _NS_FDS[netns] = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        fd = _NS_FDS[netns]
    traffic._setns(fd)
    try:
        return socket.socket(socket.AF_INET, kind)
    finally:
        traffic._setns(_HOME_NS)


class UDPResponders:
    """A UDP server on each of these backends (in its pod's namespace): answers each datagram with
    "VERSION POD"."""

    def __init__(self, backends, port: int):
        self.selector = selectors.DefaultSelector()
        self.sockets = []
        for backend in backends:
            sock = socket_in(backend.namespace, socket.SOCK_DGRAM)
            sock.bind((backend.address, port))
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, f"{backend.version} {backend.name}".encode())
            self.sockets.append(sock)
        self.stop_event = threading.Event()
        self.answered = 0
        self.thread = threading.Thread(target=self._run, name="udp-responders", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            for key, _ in self.selector.select(0.2):
                try:
                    while True:
                        _, peer = key.fileobj.recvfrom(2048)
                        key.fileobj.sendto(key.data, peer)
                        self.answered += 1
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    pass

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()


_UDP_FLOWS = itertools.count()


def udp_burst(target: str, count: int, sources: str = SOURCES, netns: str | None = CLIENTS,
              concurrency: int = 64, timeout: float = 3.0) -> dict:
    """``count`` new UDP flows (a new socket, so a new source port, each: one IPVS connection each)
    from the clients' addresses; each sends one datagram and waits for the answer. Counted per version
    and pod as traffic.burst counts TCP."""
    host, port = traffic.parse_target(target)
    addresses = traffic.parse_sources(sources) or [""]
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, float] = {}
    counters = {"ok": 0, "failed": 0, "by_version": {}, "by_pod": {}, "errors": {}}

    def failure(kind: str) -> None:
        counters["failed"] += 1
        counters["errors"][kind] = counters["errors"].get(kind, 0) + 1

    def finish(sock: socket.socket) -> None:
        try:
            selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        pending.pop(sock, None)
        sock.close()

    started, sent = time.monotonic(), 0
    while sent < count or pending:
        while sent < count and len(pending) < concurrency:
            # A source address and port never used before in this run: a port the kernel picked could
            # be one whose IPVS UDP connection (5 minutes) still exists, which no scheduling decides.
            flow = next(_UDP_FLOWS)
            source = addresses[flow % len(addresses)]
            source_port = 20000 + (flow // len(addresses)) % 40000
            sent += 1
            sock = socket_in(netns, socket.SOCK_DGRAM)
            try:
                if source:
                    sock.bind((source, source_port))
                sock.connect((host, port))
                sock.setblocking(False)
                sock.send(b"canary-e2e")
            except OSError as error:
                failure(traffic.error_kind(error.errno or 0, "send"))
                sock.close()
                continue
            pending[sock] = time.monotonic() + timeout
            selector.register(sock, selectors.EVENT_READ)
        for key, _ in selector.select(0.05):
            sock = key.fileobj
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                continue
            except OSError as error:
                failure(traffic.error_kind(error.errno or 0, "recv"))
                finish(sock)
                continue
            version, _, pod = data.decode(errors="replace").strip().partition(" ")
            counters["ok"] += 1
            counters["by_version"][version] = counters["by_version"].get(version, 0) + 1
            counters["by_pod"][pod] = counters["by_pod"].get(pod, 0) + 1
            finish(sock)
        now = time.monotonic()
        for sock, deadline in list(pending.items()):
            if deadline < now:
                failure("recv_timeout")
                finish(sock)
    counters["total"] = counters["ok"] + counters["failed"]
    counters["seconds"] = round(time.monotonic() - started, 3)
    counters["target"] = target
    return counters


class UDPLoad:
    """Continuous UDP flows (a few every half second) until stopped."""

    def __init__(self, target: str):
        self.target = target
        self.totals = {"ok": 0, "failed": 0, "errors": {}}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"udp-load-{target}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            result = udp_burst(self.target, 8, concurrency=8)
            self.totals["ok"] += result["ok"]
            self.totals["failed"] += result["failed"]
            for kind, n in result["errors"].items():
                self.totals["errors"][kind] = self.totals["errors"].get(kind, 0) + n
            self.stop_event.wait(0.5)

    def stop(self) -> dict:
        self.stop_event.set()
        self.thread.join(30)
        return dict(self.totals)


def ipvs_connections(service: str) -> dict[str, int]:
    """The kernel's per-destination connection counters of one service (ipvsadm -Ln --stats --exact)."""
    protocol, address = service.split(" ", 1)
    flag = {"TCP": "-t", "UDP": "-u"}[protocol]
    text = bench.sh("ipvsadm", "-Ln", "--stats", "--exact", flag, address).stdout
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "->" and parts[2].isdigit():
            counts[parts[1]] = int(parts[2])
    return counts


# ------------------------------------------------------------------------------------ a second node


class Forwarder:
    """Makes 127.0.0.1:PORT of the root namespace (the stand-in API server) reachable as 127.0.0.1:PORT
    inside another network namespace: a listener there, each connection pumped to the real one."""

    def __init__(self, netns: str, port: int):
        self.port = port
        self.listener = socket_in(netns)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.stopped = False
        self.connections = 0
        threading.Thread(target=self._accept, name="forwarder", daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                inner, _ = self.listener.accept()
            except OSError:
                return
            try:
                outer = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                outer.settimeout(None)
            except OSError:
                inner.close()
                continue
            self.connections += 1
            for a, b in ((inner, outer), (outer, inner)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopped = True
        try:
            self.listener.close()
        except OSError:
            pass


class NetnsAgent(bench.Agent):
    """An agent run in its own network namespace (its own IPVS table, interface and rules): started
    through a wrapper that execs `ip netns exec NS canary-agent …`, its HTTP endpoint reached there."""

    def __init__(self, netns: str, binary: str, work: str, log_path: str, arguments: list[str]):
        wrapper = os.path.join(work, f"canary-agent-{netns}")
        with open(wrapper, "w") as file:
            file.write(f"#!/bin/sh\nexec ip netns exec {netns} {binary} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        super().__init__(wrapper, log_path, arguments)
        self.netns = netns

    def http(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        host, port = self.listen.rsplit(":", 1)
        try:
            sock = socket_in(self.netns)
            sock.settimeout(timeout)
            sock.connect((host, int(port)))
            connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
            connection.sock = sock
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            connection.close()
            return response.status, body
        except (OSError, http.client.HTTPException) as error:
            raise BenchError(f"agent in {self.netns} {path}: {error}") from None


def lease(api: KubeAPI) -> dict:
    return (api.get(LEASE_PATH) or {}).get("spec") or {}


# ------------------------------------------------------------------------------------ 14 argo-tcproute


def argo_tcproute(b, r) -> None:
    """Argo Rollouts with the gatewayAPI plugin (tcpRoutes): the user's TCPRoute `payments`, the plugin
    rewriting its weights (GET, then PUT of the object, as its setTCPRouteWeight does; one step by
    merge patch), the in-progress label while the canary has weight; Argo pointing payments-stable and
    payments-canary at ReplicaSets (their EndpointSlices follow the selectors' pod-template hashes)."""
    v1, v2 = b.net.by_version("v1"), b.net.by_version("v2")
    b.ensure_apiserver()
    api = KubeAPI(b.api)
    b.api.install_crds("experimental")
    summary: list[str] = []
    vip, port, target_port = "10.96.1.40", 5432, 80
    key, target = f"TCP {vip}:{port}", f"{vip}:{port}"
    label = "rollouts.argoproj.io/gatewayapi-canary"

    def put_slices(stable_pods, canary_pods, all_pods):
        b.api.put([endpoint_slice("payments-stable", stable_pods, port_name="tcp"),
                   endpoint_slice("payments-canary", canary_pods, port_name="tcp"),
                   endpoint_slice("payments", all_pods, port_name="tcp")])

    rs_a, first_new = v1[:4], v2[:3]
    b.api.put([k8s.node(),
               service("payments", vip, port=port, target_port=target_port, port_name="tcp", parent=True,
                       selector={"app": "payments"}),
               service("payments-stable", "10.96.1.41", port=port, target_port=target_port, port_name="tcp",
                       selector={"app": "payments", "rollouts-pod-template-hash": "5d4f8c7b9a"}),
               service("payments-canary", "10.96.1.42", port=port, target_port=target_port, port_name="tcp",
                       selector={"app": "payments", "rollouts-pod-template-hash": "5d4f8c7b9a"})])
    put_slices(rs_a, rs_a, rs_a)  # between rollouts both Services select the stable ReplicaSet
    version = "v1alpha2"
    collection = route_path("tcproutes", version, "default")
    created = api.must("POST", collection, l4_route("TCPRoute", "payments", version, "payments",
                                                    [("payments-stable", port, 100), ("payments-canary", port, 0)]))
    r.check("the user's TCPRoute is created as gateway.networking.k8s.io/v1alpha2 (experimental channel)",
            created.get("apiVersion") == f"{GROUP}/v1alpha2", f"generation {created['metadata'].get('generation')}")
    agent = b.kube_agent("argo-tcproute", ELECTION + ["--drain-timeout", "3600"]).start()

    def plugin_set_weight(weight: int, route_version: str, merge_patch: bool = False) -> dict:
        """What setTCPRouteWeight does: GET the route, canary = w, stable = 100 − w, the in-progress
        label while w > 0, Update (PUT with the resourceVersion read)."""
        path = route_path("tcproutes", route_version, "default", "payments")
        route = api.must("GET", path)
        refs = route["spec"]["rules"][0]["backendRefs"]
        for ref in refs:
            ref["weight"] = weight if ref["name"] == "payments-canary" else 100 - weight
        labels = route["metadata"].setdefault("labels", {})
        if weight > 0:
            labels[label] = "in-progress"
        else:
            labels.pop(label, None)
        if merge_patch:
            patch = {"metadata": {"resourceVersion": route["metadata"]["resourceVersion"],
                                  "labels": {label: "in-progress" if weight > 0 else None}},
                     "spec": {"rules": route["spec"]["rules"]}}
            written = api.must("PATCH", path, patch, "application/merge-patch+json")
        else:
            written = api.must("PUT", path, route)
        return written

    def step(what: str, split: Split, weights: dict[str, int], route_version: str):
        groups, took = wait_split(agent, split, weights)
        path = route_path("tcproutes", route_version, "default", "payments")
        try:
            route, waited = wait_status(api, path, "payments", accepted=True, resolved=True, timeout=30)
            status_note = f"status Accepted for generation {route['metadata']['generation']}"
        except CheckFailed as error:
            r.check(f"{what}: the route's status acknowledges the current generation", False, str(error))
            status_note = "no status"
        log(f"  {what}: converged in {took:.1f}s; {status_note}")
        measure_split(r, what, agent, split, summary=summary)

    def groups_split(stable_pods, canary_pods) -> Split:
        return Split(key, target, target_port, {"payments-stable": stable_pods, "payments-canary": canary_pods})

    # The starting point: weight 0, both Services on ReplicaSet A.
    step("v1alpha2 w=0 (both Services on RS A)", groups_split(rs_a, rs_a),
         {"payments-stable": 100, "payments-canary": 0}, version)
    held = bench.hold(target, b.out("argo-hold.json"), connections=8, interval=1.0)
    load = bench.load(target, b.out("argo-load.json"), rate=15)
    time.sleep(2)

    def rollout(route_version: str, stable_pods, new_pods, steps, tag: str) -> list:
        """One rollout: the canary ReplicaSet scaled with the weight (Argo's default canary scaling),
        the plugin's writes, then promotion: stable Service → the new hash, weight back to 0 (label
        removed), the canary Service → the new hash too (both select the same pods again)."""
        for weight, replicas in steps:
            canary_pods = new_pods[:replicas]
            put_slices(stable_pods, canary_pods, stable_pods + canary_pods)
            written = plugin_set_weight(weight, route_version, merge_patch=(weight == 30))
            r.check(f"{tag} w={weight}: written by {'merge patch' if weight == 30 else 'PUT'}, labelled in-progress",
                    (written["metadata"].get("labels") or {}).get(label) == "in-progress",
                    f"generation {written['metadata'].get('generation')}, apiVersion {written.get('apiVersion')}")
            step(f"{tag} w={weight}", groups_split(stable_pods, canary_pods),
                 {"payments-stable": 100 - weight, "payments-canary": weight}, route_version)
        canary_pods = new_pods[:steps[-1][1]]
        # Promotion: the stable Service's selector takes the new hash (weights still 0/100).
        put_slices(canary_pods, canary_pods, stable_pods + canary_pods)
        step(f"{tag} promoted: stable Service → new RS (weights 0/100)", groups_split(canary_pods, canary_pods),
             {"payments-stable": 0, "payments-canary": 100}, route_version)
        written = plugin_set_weight(0, route_version)
        r.check(f"{tag} after promotion: weights 100/0, in-progress label removed",
                label not in (written["metadata"].get("labels") or {}), json.dumps(written["metadata"].get("labels")))
        # The canary Service follows the new stable hash; the old ReplicaSet is scaled down.
        put_slices(canary_pods, canary_pods, canary_pods)
        step(f"{tag} done: 100/0, both Services on the new RS", groups_split(canary_pods, canary_pods),
             {"payments-stable": 100, "payments-canary": 0}, route_version)
        return canary_pods

    stable = rollout(version, rs_a, first_new, [(10, 1), (30, 2), (60, 3), (100, 3)], "v1alpha2")

    # The same with the route as v1 on the standard channel (v1alpha2 no longer served there).
    b.api.install_crds("standard")
    status, _ = api.request("GET", route_path("tcproutes", "v1alpha2", "default", "payments"))
    r.check("standard channel: TCPRoute v1alpha2 is not served (404)", status == 404, f"GET v1alpha2 answered {status}")
    route_v1 = api.get(route_path("tcproutes", "v1", "default", "payments"))
    r.check("standard channel: the same route is read as v1", route_v1 is not None and route_v1.get("apiVersion") == f"{GROUP}/v1",
            f"{(route_v1 or {}).get('apiVersion')}")
    time.sleep(5)  # the agent reads TCPRoute v1 on either channel: the switch must change nothing
    step("v1 w=0 after the channel switch", groups_split(stable, stable),
         {"payments-stable": 100, "payments-canary": 0}, "v1")
    second_new = v1[4:8]
    rollout("v1", stable, second_new, [(10, 1), (30, 2), (60, 3), (100, 4)], "v1")

    held_result, load_result = held.stop(), load.stop()
    broken = [c for c in held_result["connections"] if c["failed"] or len(c["pods"]) != 1 or not c["ok"]]
    r.check("8 long-lived connections open across both rollouts (every step, both promotions, the channel switch): "
            "no failure, each kept its pod", not broken and held_result["ok"] > 0,
            f"{held_result['ok']} requests ok; broken: {broken[:3]}")
    no_failures(r, "continuous load across both rollouts", load_result)
    for line in summary:
        r.note("share observed/effective " + line)


# ------------------------------------------------------------------------------------ 15 flagger-httproute


def flagger_httproute(b, r) -> None:
    """Flagger's gatewayapi:v1 provider with the Canary of the README (apex labelled for canary-agent,
    gatewayRefs to the apex Service): it creates HTTPRoute test/podinfo, sets the weights with
    Update (PUT) and waits, before each step, for Accepted True at the current observedGeneration."""
    v1, v2 = b.net.by_version("v1"), b.net.by_version("v2")
    b.ensure_apiserver()
    api = KubeAPI(b.api)
    b.api.install_crds("standard")
    ns, port, target_port = "test", 9898, 80
    vip = "10.96.1.50"
    key, target = f"TCP {vip}:{port}", f"{vip}:{port}"
    summary: list[str] = []
    timings: list[str] = []

    def slices(primary, canary):
        b.api.put([endpoint_slice("podinfo-primary", primary, namespace=ns),
                   endpoint_slice("podinfo-canary", canary, namespace=ns),
                   endpoint_slice("podinfo", primary, namespace=ns)])

    b.api.put([k8s.node(),
               service("podinfo", vip, namespace=ns, port=port, target_port=target_port, parent=True,
                       selector={"app": "podinfo-primary"}),
               service("podinfo-primary", "10.96.1.51", namespace=ns, port=port, target_port=target_port,
                       selector={"app": "podinfo-primary"}),
               service("podinfo-canary", "10.96.1.52", namespace=ns, port=port, target_port=target_port,
                       selector={"app": "podinfo"})])
    primary = v1[:3]
    slices(primary, [])
    agent = b.kube_agent("flagger-httproute", ELECTION).start()
    path = route_path("httproutes", "v1", ns, "podinfo")

    def route_spec(primary_weight: int, canary_weight: int, group: str = "", headers: list | None = None,
                   ab_rule: bool = False, timeout: str | None = None) -> dict:
        match = {"path": {"type": "PathPrefix", "value": "/"}}
        weighted_match = dict(match, headers=headers) if headers else match
        rule = {"matches": [weighted_match],
                "backendRefs": backend_refs([("podinfo-primary", port, primary_weight), ("podinfo-canary", port, canary_weight)])}
        if timeout:
            rule["timeouts"] = {"request": timeout}
        spec = {"parentRefs": [{"group": group, "kind": "Service", "name": "podinfo", "namespace": ns, "port": port}],
                "rules": [rule]}
        if ab_rule:  # Flagger's A/B: the header-matched rule first, then the default rule to the primary
            default = {"matches": [match], "backendRefs": backend_refs([("podinfo-primary", port, 100)])}
            if timeout:
                default["timeouts"] = {"request": timeout}
            spec["rules"].append(default)
        return spec

    def update(spec: dict) -> dict:
        route = api.must("GET", path)
        route["spec"] = spec
        return api.must("PUT", path, route)

    # Initialisation: the route as Flagger creates it from the README's Canary (gatewayRefs group: core).
    since = time.time()
    created = api.must("POST", route_path("httproutes", "v1", ns), {
        "apiVersion": f"{GROUP}/v1", "kind": "HTTPRoute", "metadata": {"name": "podinfo", "namespace": ns},
        "spec": route_spec(100, 0, group="core")})
    try:
        route, waited = wait_status(api, path, "podinfo", accepted=True, timeout=40)
        r.check("the README's Canary (gatewayRefs group: core, as Flagger's docs write it): the route is Accepted",
                True, f"after {waited:.1f}s")
    except CheckFailed as error:
        r.check("the README's Canary (gatewayRefs group: core, as Flagger's docs write it): the route is Accepted",
                False, f"{error}; the agent's status: {json.dumps(status_service(agent.status(), key))[:300]}")
        created = update(route_spec(100, 0, group=""))
        r.note("continuing with parentRefs[0].group \"\" (Gateway API's core group), as a user would after that")
    route, waited = wait_status(api, path, "podinfo", accepted=True, resolved=True, timeout=40)
    generation = route["metadata"]["generation"]
    took = write_to_status(b.api, "podinfo", ns, generation, "podinfo", since)
    timings.append(f"init gen {generation}: poll {waited:.2f}s, write log {took if took is None else round(took, 3)}s")
    split = Split(key, target, target_port, {"podinfo-primary": primary, "podinfo-canary": []})
    wait_split(agent, split, {"podinfo-primary": 100, "podinfo-canary": 0})
    measure_split(r, "initialised: 100/0 to the primary", agent, split, summary=summary)
    load = bench.load(target, b.out("flagger-load.json"), rate=15)
    time.sleep(2)

    # A new revision: the canary Deployment scaled up; Flagger steps the weights.
    canary = v2[:1]
    slices(primary, canary)
    step_times = []
    for primary_weight, canary_weight in ((90, 10), (80, 20), (50, 50)):
        since = time.time() - 0.5
        written = update(route_spec(primary_weight, canary_weight))
        generation = written["metadata"]["generation"]
        route, waited = wait_status(api, path, "podinfo", accepted=True, resolved=True, timeout=30)
        took = write_to_status(b.api, "podinfo", ns, generation, "podinfo", since)
        step_times.append(took if took is not None else waited)
        timings.append(f"{primary_weight}/{canary_weight} gen {generation}: write→status {took if took is None else round(took, 3)}s "
                       f"(Flagger's poll saw it after {waited:.2f}s)")
        r.check(f"{primary_weight}/{canary_weight}: Accepted True for observedGeneration {generation} under {CONTROLLER} within 2 s",
                took is not None and took < 2.0, timings[-1])
        split = Split(key, target, target_port, {"podinfo-primary": primary, "podinfo-canary": canary})
        wait_split(agent, split, {"podinfo-primary": primary_weight, "podinfo-canary": canary_weight})
        measure_split(r, f"{primary_weight}/{canary_weight}", agent, split, summary=summary)

    # Promotion: the primary Deployment takes the canary's template (its pods become v2), the route
    # goes back to 100/0, the canary Deployment is scaled to zero.
    primary = v2[1:3]
    slices(primary, canary)
    since = time.time() - 0.5
    written = update(route_spec(100, 0))
    generation = written["metadata"]["generation"]
    route, waited = wait_status(api, path, "podinfo", accepted=True, resolved=True, timeout=30)
    took = write_to_status(b.api, "podinfo", ns, generation, "podinfo", since)
    timings.append(f"promotion 100/0 gen {generation}: write→status {took if took is None else round(took, 3)}s")
    slices(primary, [])
    split = Split(key, target, target_port, {"podinfo-primary": primary, "podinfo-canary": []})
    groups_before, _ = wait_split(agent, split, {"podinfo-primary": 100, "podinfo-canary": 0})
    before = measure_split(r, "promoted: 100/0 to the new primary", agent, split, summary=summary)

    # An A/B test: a new canary revision, the weighted rule matched on a header.
    canary = v1[3:4]
    slices(primary, canary)
    split = Split(key, target, target_port, {"podinfo-primary": primary, "podinfo-canary": canary})
    headers = [{"type": "Exact", "name": "x-canary", "value": "insider"}]
    for what, spec, field in (
            ("a header match on the one rule (0/100 for x-canary: insider)", route_spec(0, 100, headers=headers),
             "spec.rules[0].matches[0].headers"),
            ("Flagger's A/B shape (header-matched rule 0/100, then a default rule to the primary, timeouts 30s)",
             route_spec(0, 100, headers=headers, ab_rule=True, timeout="30s"), "spec.rules")):
        since = time.time() - 0.5
        written = update(spec)
        generation = written["metadata"]["generation"]
        try:
            route, waited = wait_status(api, path, "podinfo", accepted=False, reason="UnsupportedValue", timeout=30)
            accepted = condition(our_parent(route, "podinfo"), "Accepted")
            took = write_to_status(b.api, "podinfo", ns, generation, "podinfo", since)
            timings.append(f"A/B gen {generation}: write→status {took if took is None else round(took, 3)}s")
            r.check(f"{what}: Accepted False, UnsupportedValue, the message names {field}",
                    field in (accepted.get("message") or ""), f"{accepted.get('reason')}: {accepted.get('message')}")
        except CheckFailed as error:
            r.check(f"{what}: Accepted False, UnsupportedValue", False, str(error))
        time.sleep(3)
        groups, entry = cli_groups(agent, key)
        problems = [p for p in (entry or {}).get("problems") or []]
        problems += [p for p in agent.status().get("problems") or [] if "podinfo" in json.dumps(p) and p not in problems]
        r.check(f"{what}: the agent keeps the last good split (100/0) and says why in its status",
                {n: g["weight"] for n, g in groups.items()} == {"podinfo-primary": 100, "podinfo-canary": 0}
                and bool(problems),
                f"groups {[(n, g['weight'], round(g['effective'], 4)) for n, g in groups.items()]}; "
                f"problems {json.dumps(problems)[:300]}")
        result = measure_split(r, f"A/B refused: {what.split(' (')[0]}", agent,
                               Split(key, target, target_port, {"podinfo-primary": primary, "podinfo-canary": []}),
                               summary=summary)
        share_before, share_now = bench.share(before["by_version"], "v2"), bench.share(result["by_version"], "v2")
        tolerance = bench.binomial_tolerance(share_before, sum(result["by_version"].values()))
        r.check(f"{what}: the shares are unchanged (v2 {share_before:.4f} before, {share_now:.4f} now)",
                abs(share_now - share_before) <= max(tolerance, 0.5 / max(1, sum(result["by_version"].values()))))
    # Flagger ends the A/B run: back to the one weighted rule.
    update(route_spec(100, 0))
    wait_status(api, path, "podinfo", accepted=True, resolved=True, timeout=30)
    no_failures(r, "continuous load through every step, the promotion and the A/B test", load.stop())
    for line in timings:
        r.note("Flagger's gate " + line)
    for line in summary:
        r.note("share observed/effective " + line)


# ------------------------------------------------------------------------------------ 16 gateway-more


def gateway_more(b, r) -> None:
    v1, v2 = b.net.by_version("v1"), b.net.by_version("v2")
    b.ensure_apiserver()
    api = KubeAPI(b.api)
    b.api.remove_crds()
    summary: list[str] = []

    b.api.put([k8s.node(), k8s.node(name="node-2")])
    # (c) Services first; no Gateway API CRDs yet.
    ledger_blue, ledger_green = v1[6:8], v2[2:3]
    b.api.put([service("ledger", "10.96.2.50", parent=True, selector={"app": "ledger"}),
               service("ledger-blue", "10.96.2.51", selector={"app": "ledger", "color": "blue"}),
               service("ledger-green", "10.96.2.52", selector={"app": "ledger", "color": "green"}),
               endpoint_slice("ledger", ledger_blue), endpoint_slice("ledger-blue", ledger_blue),
               endpoint_slice("ledger-green", ledger_green)])
    agent = b.kube_agent("gateway-more", ELECTION).start()
    pid = agent.process.pid
    time.sleep(5)
    r.check("(c) started without the CRDs: the agent says Gateway API is not served", "not served" in agent.log_text(),
            "; ".join(l for l in agent.log_text().splitlines() if "Gateway API" in l)[:300])
    installed_at = time.monotonic()
    b.api.install_crds("standard")
    api.must("POST", route_path("tcproutes", "v1", "default"),
             l4_route("TCPRoute", "ledger", "v1", "ledger", [("ledger-blue", 80, 50), ("ledger-green", 80, 50)]))

    def group_of(groups: dict[str, list]):
        owner = {b_.name: name for name, backends in groups.items() for b_ in backends}
        return lambda backend: owner[backend.name]

    ledger_groups = {"ledger-blue": ledger_blue, "ledger-green": ledger_green}
    ledger = Split("TCP 10.96.2.50:80", "10.96.2.50:80", 80, ledger_groups, group_of(ledger_groups))
    wait_split(agent, ledger, {"ledger-blue": 50, "ledger-green": 50}, timeout=120)
    took = time.monotonic() - installed_at
    r.check("(c) CRDs installed after start: the route is programmed within a minute, no restart",
            took <= 60 and agent.running and agent.process.pid == pid and agent.starts == 1,
            f"{took:.1f}s after the install; agent pid {pid} still running: {agent.running}")
    _, waited = wait_status(api, route_path("tcproutes", "v1", "default", "ledger"), "ledger", accepted=True, timeout=30)
    measure_split(r, "(c) ledger 50/50 after a late CRD install", agent, ledger, summary=summary)

    # (a) A UDPRoute with three weighted backends; UDP counted by answers (and by the kernel).
    dns_a, dns_b, dns_c = v1[:2], v2[:1], v2[1:2]
    responders = UDPResponders(dns_a + dns_b + dns_c, 5353)
    try:
        udp = dict(port=53, target_port=5353, port_name="dns", protocol="UDP")
        b.api.put([service("dns", "10.96.2.60", parent=True, selector={"app": "dns"}, **udp),
                   service("dns-a", "10.96.2.61", selector={"app": "dns", "track": "a"}, **udp),
                   service("dns-b", "10.96.2.62", selector={"app": "dns", "track": "b"}, **udp),
                   service("dns-c", "10.96.2.63", selector={"app": "dns", "track": "c"}, **udp),
                   endpoint_slice("dns", dns_a, port=5353, port_name="dns", protocol="UDP"),
                   endpoint_slice("dns-a", dns_a, port=5353, port_name="dns", protocol="UDP"),
                   endpoint_slice("dns-b", dns_b, port=5353, port_name="dns", protocol="UDP"),
                   endpoint_slice("dns-c", dns_c, port=5353, port_name="dns", protocol="UDP")])
        api.must("POST", route_path("udproutes", "v1", "default"),
                 l4_route("UDPRoute", "dns", "v1", "dns", [("dns-a", 53, 70), ("dns-b", 53, 20), ("dns-c", 53, 10)]))
        dns_groups = {"dns-a": dns_a, "dns-b": dns_b, "dns-c": dns_c}
        dns = Split("UDP 10.96.2.60:53", "10.96.2.60:53", 5353, dns_groups, group_of(dns_groups))
        wait_split(agent, dns, {"dns-a": 70, "dns-b": 20, "dns-c": 10})
        _, _ = wait_status(api, route_path("udproutes", "v1", "default", "dns"), "dns", accepted=True, resolved=True, timeout=30)
        udp_load = UDPLoad(dns.target)
        time.sleep(2)
        kernel_before = ipvs_connections(dns.key)
        result = udp_burst(dns.target, CONNECTIONS)
        time.sleep(3)  # the kernel sums its per-CPU counters for ipvsadm every 2 s (the estimator)
        kernel_after = ipvs_connections(dns.key)
        measure_split(r, "(a) UDPRoute 70/20/10, UDP flows answered", agent, dns, summary=summary, result=result)
        endpoint_group = dns.endpoint_bucket()
        kernel_counts: dict[str, int] = {}
        for destination, n in kernel_after.items():
            group = endpoint_group.get(destination, "?" + destination)
            kernel_counts[group] = kernel_counts.get(group, 0) + n - kernel_before.get(destination, 0)
        kernel_result = {"by_version": kernel_counts, "failed": 0, "ok": sum(kernel_counts.values()),
                         "total": sum(kernel_counts.values()), "seconds": result["seconds"]}
        groups, _ = cli_groups(agent, dns.key)
        for name in sorted(groups):
            r.measure(f"(a) UDPRoute 70/20/10, the kernel's per-destination connection counters [{name}]", kernel_result,
                      name, float(groups[name]["target"]), float(groups[name]["effective"]), "wrr",
                      trials_what="IPVS connections (burst + load)")
        r.note(f"(a) kernel connection counters over the burst (ipvsadm -Ln --stats --exact): {kernel_counts}; "
               f"answers counted: {result['by_pod']}")
        r.check("(a) every UDP flow of the burst was a new IPVS connection (scheduled by wrr, not an old entry reused)",
                sum(kernel_counts.values()) >= result["total"],
                f"{sum(kernel_counts.values())} new IPVS connections over the burst's {result['total']} flows (+ the load's)")
        no_failures(r, "(a) continuous UDP flows while the UDPRoute was measured", udp_load.stop())
    finally:
        responders.stop()

    # (b) A TCPRoute whose canary Service does not exist yet.
    orders_stable, orders_canary = v1[2:5], v2[2:3]
    b.api.put([service("orders", "10.96.2.70", parent=True, selector={"app": "orders"}),
               service("orders-stable", "10.96.2.71", selector={"app": "orders", "track": "stable"}),
               endpoint_slice("orders", orders_stable), endpoint_slice("orders-stable", orders_stable)])
    orders_path = route_path("tcproutes", "v1", "default", "orders")
    api.must("POST", route_path("tcproutes", "v1", "default"),
             l4_route("TCPRoute", "orders", "v1", "orders", [("orders-stable", 80, 80), ("orders-canary", 80, 20)]))
    try:
        route, waited = wait_status(api, orders_path, "orders", accepted=None, resolved=False, reason="BackendNotFound", timeout=30)
        resolved = condition(our_parent(route, "orders"), "ResolvedRefs")
        r.check("(b) canary Service missing: ResolvedRefs False, BackendNotFound, naming the backendRef",
                "backendRefs[1]" in (resolved.get("message") or ""), describe_status(route, "orders"))
    except CheckFailed as error:
        r.check("(b) canary Service missing: ResolvedRefs False, BackendNotFound", False, str(error))
    time.sleep(2)
    before = ipvs_table().get("TCP 10.96.2.70:80")
    entry = status_service(agent.status(), "TCP 10.96.2.70:80")
    r.note(f"(b) while orders-canary is missing the kernel has for orders: "
           f"{'nothing' if before is None else before.destinations}; the agent: "
           f"{json.dumps({k: (entry or {}).get(k) for k in ('groups', 'problems', 'programmed')})[:400]}")
    b.api.put([service("orders-canary", "10.96.2.72", selector={"app": "orders", "track": "canary"}),
               endpoint_slice("orders-canary", orders_canary)])
    orders_groups = {"orders-stable": orders_stable, "orders-canary": orders_canary}
    orders = Split("TCP 10.96.2.70:80", "10.96.2.70:80", 80, orders_groups, group_of(orders_groups))
    _, took = wait_split(agent, orders, {"orders-stable": 80, "orders-canary": 20})
    route, _ = wait_status(api, orders_path, "orders", accepted=True, resolved=True, timeout=30)
    r.check("(b) the canary Service appears: the split follows and ResolvedRefs turns True", True,
            f"split in {took:.1f}s; {describe_status(route, 'orders')}")
    load = bench.load(orders.target, b.out("more-load.json"), rate=15)
    time.sleep(2)
    measure_split(r, "(b) orders 80/20 once orders-canary exists", agent, orders, summary=summary)

    # (d) A second agent (node-2) in its own network namespace; the leader SIGKILLed.
    netns = "e2e-agent2"
    bench.sh("ip", "netns", "add", netns, check=False)
    bench.sh("ip", "-n", netns, "link", "set", "lo", "up")
    forwarder = Forwarder(netns, api.port)
    second = NetnsAgent(netns, b.agent_binary, b.work, os.path.join(b.results, "agent-gateway-more-node-2.log"),
                        ["--kubeconfig", b.api.kubeconfig, "--node-name", "node-2", "--drift-check-interval", "10",
                         *ELECTION])
    b.agents.append(second)
    try:
        second.start()
        wait_split(second, orders, {"orders-stable": 80, "orders-canary": 20}, netns=netns)
        r.check("(d) node-2's agent programs its own namespace's IPVS table (the root one untouched by it)", True,
                f"its table: {sorted(ipvs_table(netns))}")
        holder = lease(api)
        r.check("(d) the Lease is held by node-1 (the first agent), node-2 follows",
                holder.get("holderIdentity") == "node-1", json.dumps(holder))
        renewed_before = holder.get("renewTime")
        killed = time.monotonic()
        agent.kill()
        holder = wait_for_lease(api, "node-2", timeout=60)
        takeover = time.monotonic() - killed
        # The Lease expires 15 s after node-2 last saw it change (on node-2's clock); a candidate looks
        # every 2 s plus up to 2.4 s of jitter (client-go's factor 1.2), so it may see the last renewal
        # up to 4.4 s late and the expiry up to 4.4 s late: at most 15 + 8.8 s.
        r.check(f"(d) leader SIGKILLed: node-2 takes the Lease within 15 s + 2 × 4.4 s (took {takeover:.1f}s)",
                takeover <= 23.8, f"last renewal by node-1 {renewed_before}; now {json.dumps(holder)}")
        r.note(f"(d) leader takeover: {takeover:.1f}s from SIGKILL to holderIdentity node-2 "
               f"(leaseTransitions {holder.get('leaseTransitions')})")
        since = time.time() - 0.5
        route = api.must("GET", orders_path)
        route["spec"]["rules"][0]["backendRefs"] = backend_refs([("orders-stable", 80, 50), ("orders-canary", 80, 50)])
        written = api.must("PUT", orders_path, route)
        generation = written["metadata"]["generation"]
        route, waited = wait_status(api, orders_path, "orders", accepted=True, resolved=True, timeout=30)
        took = write_to_status(b.api, "orders", "default", generation, "orders", since)
        r.check(f"(d) after the kill, a weight change (generation {generation}) is acknowledged by the new leader",
                True, f"write→status {took if took is None else round(took, 3)}s (poll {waited:.2f}s)")
        wait_split(second, orders, {"orders-stable": 50, "orders-canary": 50}, netns=netns)
        # A killed pod is restarted by its DaemonSet: node-1's agent adopts its table and follows.
        agent.start()
        _, took = wait_split(agent, orders, {"orders-stable": 50, "orders-canary": 50})
        r.check("(d) node-1's agent restarted: it follows the change, the Lease stays with node-2",
                lease(api).get("holderIdentity") == "node-2", f"converged {took:.1f}s after readiness")
        measure_split(r, "(d) orders 50/50 after the takeover", agent, orders, summary=summary)
        no_failures(r, "(b)/(d) continuous load on orders through the kill, the takeover and the restart", load.stop())
    finally:
        second.stop()
        forwarder.stop()
        bench.sh("ip", "netns", "del", netns, check=False)
    for line in summary:
        r.note("share observed/effective " + line)


def wait_for_lease(api: KubeAPI, holder: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        spec = lease(api)
        if spec.get("holderIdentity") == holder:
            return spec
        if time.monotonic() > deadline:
            raise CheckFailed(f"the Lease is not taken by {holder} within {timeout:.0f}s: {json.dumps(spec)}")
        time.sleep(0.2)
