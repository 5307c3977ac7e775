#!/usr/bin/env python3
"""The e2e network: backends as pods on a node, clients with hundreds of source addresses.

    root namespace (the node: IPVS, the agent, the virtual addresses)
      e2ebr0 10.244.0.1/16 ── veth ── netns e2e-v1-0  eth0 10.244.1.10  nginx "v1"
                          ├── veth ── netns e2e-v1-1  eth0 10.244.1.11  nginx "v1"   … up to V1_COUNT
                          └── veth ── netns e2e-v2-0  eth0 10.244.2.10  nginx "v2"   … up to V2_COUNT
      e2ecl0 10.250.0.1/16 ── veth ── netns e2e-clients eth0 10.250.1.1 … (CLIENT_ADDRESSES addresses)

Every backend's gateway is the bridge address, as a pod's is its node; the clients' gateway is the
root namespace, so their connections to a Service address go through the node's IPVS and the
answers come back through it. Each nginx answers any path with its version as the body
("v1\\n") and its pod name in the header ``X-Pod``; it keeps connections open for long-lived clients
and writes nothing outside its temporary directory.

    python3 topology.py up [--v1 N --v2 N --clients N]   |   python3 topology.py down
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, asdict

BRIDGE = "e2ebr0"
BRIDGE_ADDRESS = "10.244.0.1"
POD_PREFIX = 16
CLIENT_LINK = "e2ecl0"
CLIENT_GATEWAY = "10.250.0.1"
CLIENT_NAMESPACE = "e2e-clients"
STATE_FILE = "/run/canary-e2e-topology.json"
NAMESPACE_PREFIX = "e2e-"

NGINX_CONFIG = """\
daemon on;
user root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout 900s;
    keepalive_requests 1000000;
    default_type text/plain;
    server {{
        listen 80 default_server backlog=4096;
        listen 8080;
        location / {{
            add_header X-Pod {pod} always;
            return 200 "{version}\\n";
        }}
    }}
}}
"""


@dataclass
class Backend:
    """One pod: its namespace, address, version and nginx."""
    name: str
    version: str
    address: str
    namespace: str
    host_link: str
    directory: str

    @property
    def endpoint(self) -> str:
        return f"{self.address}:80"


def run(*command: str, check: bool = True, quiet: bool = False, input_text: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, input=input_text, text=True, capture_output=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: exit {result.returncode}: {result.stderr.strip()}")
    if not quiet and result.returncode != 0:
        print(f"topology: {' '.join(command)}: {result.stderr.strip()}", file=sys.stderr)
    return result


def client_addresses(count: int) -> list[str]:
    """``count`` client source addresses from 10.250.1.1 on, skipping .0 and .255."""
    addresses = []
    value = int(ipaddress.IPv4Address("10.250.1.1"))
    while len(addresses) < count:
        address = ipaddress.IPv4Address(value)
        if address.packed[3] not in (0, 255):
            addresses.append(str(address))
        value += 1
    return addresses


class Topology:
    """``v1``/``v2`` backends at 10.244.1.10…/10.244.2.10… on the bridge 10.244.0.1/16, or the
    backends of ``layout`` ([(version, address), …]) on the bridge ``bridge_cidr`` (the demo uses the
    addresses of systemd/config.example.yaml)."""

    def __init__(self, v1: int = 10, v2: int = 3, clients: int = 600, work_dir: str | None = None,
                 layout: list[tuple[str, str]] | None = None, bridge_cidr: str = f"{BRIDGE_ADDRESS}/{POD_PREFIX}"):
        self.work_dir = work_dir or tempfile.mkdtemp(prefix="canary-e2e-net.")
        self.bridge_cidr = bridge_cidr
        self.gateway = bridge_cidr.split("/")[0]
        self.prefix = int(bridge_cidr.split("/")[1])
        if layout is None:
            layout = [("v1", f"10.244.1.{10 + i}") for i in range(v1)] + [("v2", f"10.244.2.{10 + i}") for i in range(v2)]
        self.backends: list[Backend] = []
        counts: dict[str, int] = {}
        for version, address in layout:
            index = counts.get(version, 0)
            counts[version] = index + 1
            name = f"{version}-{index}"
            self.backends.append(Backend(
                name=f"web-{name}", version=version, address=address,
                namespace=f"{NAMESPACE_PREFIX}{name}", host_link=f"e2eb{len(self.backends)}",
                directory=os.path.join(self.work_dir, name)))
        self.clients = client_addresses(clients)
        self.client_namespace = CLIENT_NAMESPACE

    # -------------------------------------------------------------- queries

    def by_version(self, version: str) -> list[Backend]:
        return [b for b in self.backends if b.version == version]

    def backend(self, name: str) -> Backend:
        return next(b for b in self.backends if b.name == name)

    # -------------------------------------------------------------- up

    def up(self) -> "Topology":
        down(quiet=True)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", self.bridge_cidr, "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        # Few processes: each one is slow in an emulated VM. One batch for the root namespace's side,
        # then one for each namespace's inside and one nginx each.
        root = []
        for backend in self.backends:
            root += [f"netns add {backend.namespace}",
                     f"link add {backend.host_link} type veth peer name eth0 netns {backend.namespace}",
                     f"link set {backend.host_link} master {BRIDGE} up",
                     # As kubelet (--hairpin-mode) and the CNI bridge plugin (hairpinMode) do on a
                     # node: a frame may leave by the port it came in, which a pod reaching itself
                     # through a Service needs once bridged traffic passes netfilter (br_netfilter).
                     f"link set dev {backend.host_link} type bridge_slave hairpin on"]
        root += [f"netns add {self.client_namespace}",
                 f"link add {CLIENT_LINK} type veth peer name eth0 netns {self.client_namespace}",
                 f"addr add {CLIENT_GATEWAY}/16 dev {CLIENT_LINK}", f"link set {CLIENT_LINK} up"]
        run("ip", "-batch", "-", input_text="\n".join(root) + "\n")
        for backend in self.backends:
            self._add_backend(backend)
        self._add_clients()
        with open(STATE_FILE, "w") as file:
            json.dump({"work_dir": self.work_dir, "backends": [asdict(b) for b in self.backends],
                       "clients": len(self.clients)}, file)
        self.wait_ready()
        return self

    def _add_backend(self, backend: Backend) -> None:
        ns = backend.namespace
        batch = (f"link set lo up\nlink set eth0 up\naddr add {backend.address}/{self.prefix} dev eth0\n"
                 f"route add default via {self.gateway}\n")
        run("ip", "-n", ns, "-batch", "-", input_text=batch)
        os.makedirs(backend.directory, exist_ok=True)
        with open(os.path.join(backend.directory, "nginx.conf"), "w") as file:
            file.write(NGINX_CONFIG.format(dir=backend.directory, pod=backend.name, version=backend.version))
        run("ip", "netns", "exec", ns, "nginx", "-p", backend.directory, "-c",
            os.path.join(backend.directory, "nginx.conf"), "-e", os.path.join(backend.directory, "error.log"))

    def _add_clients(self) -> None:
        ns = self.client_namespace
        lines = ["link set lo up", "link set eth0 up"]
        lines += [f"addr add {address}/16 dev eth0" for address in self.clients]
        lines.append(f"route add default via {CLIENT_GATEWAY}")
        run("ip", "-n", ns, "-batch", "-", input_text="\n".join(lines) + "\n")
        # A wide port range and quick port reuse for the clients.
        run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000",
            "net.ipv4.tcp_tw_reuse=1", check=False)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every nginx answers on its own address (probed from the root namespace, straight over the bridge)."""
        deadline = time.monotonic() + timeout
        pending = list(self.backends)
        while pending and time.monotonic() < deadline:
            still = []
            for backend in pending:
                if not probe(backend.address, 80, backend.version):
                    still.append(backend)
            pending = still
            if pending:
                time.sleep(0.5)
        if pending:
            raise RuntimeError("nginx not answering: " + ", ".join(b.name for b in pending))

    # -------------------------------------------------------------- backends on and off

    def stop_backend(self, backend: Backend) -> None:
        pid = read_pid(backend.directory)
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def describe(self) -> str:
        lines = [f"bridge {BRIDGE} {self.bridge_cidr}; clients: {len(self.clients)} addresses "
                 f"{self.clients[0]}…{self.clients[-1]} in netns {self.client_namespace}"]
        for backend in self.backends:
            lines.append(f"  {backend.name:10} {backend.version} {backend.address:12} netns {backend.namespace}")
        return "\n".join(lines)


def probe(address: str, port: int, expected_body: str | None = None, timeout: float = 2.0) -> bool:
    import socket
    try:
        with socket.create_connection((address, port), timeout=timeout) as connection:
            connection.sendall(b"GET / HTTP/1.0\r\nHost: probe\r\n\r\n")
            data = b""
            while True:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                data += chunk
        body = data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()
        return data.startswith(b"HTTP/1.1 200") and (expected_body is None or body == expected_body)
    except OSError:
        return False


def read_pid(directory: str) -> int | None:
    try:
        with open(os.path.join(directory, "nginx.pid")) as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return None


def down(quiet: bool = False) -> None:
    """Removes everything ``up`` made (also after a crash: found by name), never anything else."""
    work_dir = None
    try:
        with open(STATE_FILE) as file:
            state = json.load(file)
        work_dir = state.get("work_dir")
        for backend in state.get("backends", []):
            pid = read_pid(backend["directory"])
            if pid:
                try:
                    os.kill(pid, signal.SIGQUIT)
                except ProcessLookupError:
                    pass
    except (OSError, ValueError):
        pass
    namespaces = run("ip", "netns", "list", check=False, quiet=True).stdout.split("\n")
    for line in namespaces:
        name = line.split(" ")[0]
        if name.startswith(NAMESPACE_PREFIX):
            # Anything still running in it (nginx, a client) goes with it.
            pids = run("ip", "netns", "pids", name, check=False, quiet=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run("ip", "netns", "del", name, check=False, quiet=quiet)
    for link in (BRIDGE, CLIENT_LINK):
        run("ip", "link", "del", link, check=False, quiet=True)
    if work_dir and os.path.isdir(work_dir) and os.path.basename(work_dir).startswith("canary-e2e-net."):
        shutil.rmtree(work_dir, ignore_errors=True)
    try:
        os.unlink(STATE_FILE)
    except OSError:
        pass


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="the e2e network (backends, clients)")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--v1", type=int, default=10)
    parser.add_argument("--v2", type=int, default=3)
    parser.add_argument("--clients", type=int, default=600)
    arguments = parser.parse_args(argv)
    if arguments.action == "up":
        topology = Topology(arguments.v1, arguments.v2, arguments.clients).up()
        print(topology.describe())
    else:
        down()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
