#!/usr/bin/env python3
"""The e2e traffic driver: real TCP connections to a Service address, counted per version and pod.

One process, one selector loop, many connections in flight (fast enough in an emulated VM). Each
connection is bound to one of the client source addresses (round robin), so schedulers that hash
the source (sh, mh) see hundreds of clients. Run it inside the clients' network namespace:

    ip netns exec e2e-clients python3 traffic.py burst --target 10.96.0.10:80 --sources 10.250.1.1+600 \\
        --connections 2000 --json out.json
    … load --target … --out load.json            # until SIGTERM/SIGINT (or --duration): continuous load
    … hold --target … --connections 8 --duration 60 --out hold.json   # long-lived keep-alive connections

``burst`` makes N new connections (HTTP/1.0, one request each) and reports the responses per version
(the body, "v1"/"v2"), per pod (the ``X-Pod`` header), optionally per source address, and every
failure by kind. ``load`` keeps a few connections always in flight and writes its counters to
``--out`` every second (and when stopped) with a per-second timeline. ``hold`` keeps connections open
and sends one request on each every ``--interval`` seconds (HTTP/1.1 keep-alive): a long-lived
client, for draining.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import resource
import selectors
import signal
import socket
import sys
import threading
import time

_NETNS_HOME = None  # this process's own network namespace, opened once
_NETNS_FDS: dict[str, int] = {}
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def new_socket(family: int, netns: str | None = None) -> socket.socket:
    """A TCP socket in the named network namespace (``ip netns``'s /run/netns/NAME), made by switching
    this thread there for the socket call only: the socket stays there, the thread comes back. No
    process to start, which is slow in an emulated VM."""
    global _NETNS_HOME
    if not netns:
        return socket.socket(family, socket.SOCK_STREAM)
    if _NETNS_HOME is None:
        _NETNS_HOME = os.open("/proc/self/ns/net", os.O_RDONLY)
    if netns not in _NETNS_FDS:
        _NETNS_FDS[netns] = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    _setns(_NETNS_FDS[netns])
    try:
        return socket.socket(family, socket.SOCK_STREAM)
    finally:
        _setns(_NETNS_HOME)


LINGER_ABORT = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # struct linger {l_onoff = 1, l_linger = 0}
REQUEST_CLOSE = b"GET / HTTP/1.0\r\nHost: e2e\r\nUser-Agent: canary-e2e\r\n\r\n"
REQUEST_KEEPALIVE = b"GET / HTTP/1.1\r\nHost: e2e\r\nUser-Agent: canary-e2e\r\n\r\n"


def parse_sources(spec: str) -> list[str]:
    """``A+N`` (N addresses from A, skipping .0/.255), ``A-B`` (range), or a comma list."""
    if "+" in spec:
        start, count = spec.split("+", 1)
        addresses, value = [], int(ipaddress.IPv4Address(start))
        while len(addresses) < int(count):
            address = ipaddress.IPv4Address(value)
            if address.packed[3] not in (0, 255):
                addresses.append(str(address))
            value += 1
        return addresses
    if "-" in spec and "," not in spec:
        first, last = (int(ipaddress.IPv4Address(part)) for part in spec.split("-", 1))
        return [str(ipaddress.IPv4Address(v)) for v in range(first, last + 1)
                if ipaddress.IPv4Address(v).packed[3] not in (0, 255)]
    return [part for part in spec.split(",") if part] if spec else []


def parse_target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


def parse_response(data: bytes) -> tuple[str | None, str | None, str | None]:
    """(version, pod, error) from a whole HTTP response."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return None, None, "bad_response" if data else "empty_response"
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.") or b" 200 " not in lines[0] + b" ":
        return None, None, "http_" + (lines[0].split(b" ")[1].decode(errors="replace") if b" " in lines[0] else "bad")
    pod = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-pod":
            pod = value.strip().decode(errors="replace")
    return body.strip().decode(errors="replace") or None, pod, None


def error_kind(code: int, phase: str) -> str:
    names = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset", errno.ETIMEDOUT: "timeout",
             errno.EHOSTUNREACH: "host_unreachable", errno.ENETUNREACH: "net_unreachable",
             errno.EPIPE: "broken_pipe", errno.EADDRNOTAVAIL: "address_not_available"}
    return f"{phase}_{names.get(code, errno.errorcode.get(code, str(code)).lower())}"


class Counters:
    def __init__(self, per_source: bool = False):
        self.ok = 0
        self.failed = 0
        self.by_version: dict[str, int] = {}
        self.by_pod: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.by_source: dict[str, dict[str, int]] | None = {} if per_source else None
        self.failure_samples: list[dict] = []

    def success(self, source: str, version: str, pod: str | None) -> None:
        self.ok += 1
        self.by_version[version] = self.by_version.get(version, 0) + 1
        if pod:
            self.by_pod[pod] = self.by_pod.get(pod, 0) + 1
        if self.by_source is not None:
            pods = self.by_source.setdefault(source, {})
            key = pod or version
            pods[key] = pods.get(key, 0) + 1

    def failure(self, source: str, kind: str) -> None:
        self.failed += 1
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.failure_samples) < 50:
            self.failure_samples.append({"time": time.time(), "source": source, "kind": kind})

    def merge(self, other: "Counters") -> None:
        self.ok += other.ok
        self.failed += other.failed
        for mine, theirs in ((self.by_version, other.by_version), (self.by_pod, other.by_pod), (self.errors, other.errors)):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        if self.by_source is not None and other.by_source is not None:
            for source, pods in other.by_source.items():
                mine = self.by_source.setdefault(source, {})
                for pod, value in pods.items():
                    mine[pod] = mine.get(pod, 0) + value
        self.failure_samples = (self.failure_samples + other.failure_samples)[:50]

    def as_dict(self) -> dict:
        result = {"total": self.ok + self.failed, "ok": self.ok, "failed": self.failed,
                  "by_version": dict(sorted(self.by_version.items())), "by_pod": dict(sorted(self.by_pod.items())),
                  "errors": self.errors, "failure_samples": self.failure_samples}
        if self.by_source is not None:
            result["by_source"] = self.by_source
        return result


class Connection:
    __slots__ = ("sock", "source", "deadline", "buffer", "phase")

    def __init__(self, sock, source, deadline):
        self.sock = sock
        self.source = source
        self.deadline = deadline
        self.buffer = bytearray()
        self.phase = "connect"


class OneShotDriver:
    """Keeps ``concurrency`` one-request connections in flight until ``total`` were made (or stopped)."""

    def __init__(self, target: tuple[str, int], sources: list[str], concurrency: int, timeout: float,
                 counters: Counters, netns: str | None = None):
        self.netns = netns
        self.target = target
        self.sources = sources or [""]
        self.concurrency = concurrency
        self.timeout = timeout
        self.counters = counters
        self.selector = selectors.DefaultSelector()
        self.open: dict[int, Connection] = {}
        self.started = 0
        self.stop = False

    def _start_one(self) -> None:
        source = self.sources[self.started % len(self.sources)]
        self.started += 1
        sock = new_socket(socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET, self.netns)
        sock.setblocking(False)
        try:
            if source:
                sock.bind((source, 0))
            code = sock.connect_ex(self.target)
        except OSError as error:
            sock.close()
            self.counters.failure(source, error_kind(error.errno or 0, "connect"))
            return
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.counters.failure(source, error_kind(code, "connect"))
            return
        connection = Connection(sock, source, time.monotonic() + self.timeout)
        self.open[sock.fileno()] = connection
        self.selector.register(sock, selectors.EVENT_WRITE, connection)

    def _finish(self, connection: Connection, error: str | None = None) -> None:
        try:
            self.selector.unregister(connection.sock)
        except (KeyError, ValueError):
            pass
        self.open.pop(connection.sock.fileno(), None)
        if error is None:
            # The whole answer is in and the server has closed: end with a reset rather than a FIN
            # and its ACK (fewer packets per connection, and no TIME_WAIT entries piling up).
            try:
                connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
            except OSError:
                pass
        connection.sock.close()
        if error:
            self.counters.failure(connection.source, error)
            return
        version, pod, problem = parse_response(bytes(connection.buffer))
        if problem or version is None:
            self.counters.failure(connection.source, problem or "empty_body")
        else:
            self.counters.success(connection.source, version, pod)

    def _on_event(self, connection: Connection, mask: int) -> None:
        sock = connection.sock
        if connection.phase == "connect":
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._finish(connection, error_kind(code, "connect"))
                return
            try:
                sock.send(REQUEST_CLOSE)
            except OSError as error:
                self._finish(connection, error_kind(error.errno or 0, "send"))
                return
            connection.phase = "read"
            self.selector.modify(sock, selectors.EVENT_READ, connection)
            return
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as error:
            self._finish(connection, error_kind(error.errno or 0, "read"))
            return
        if chunk:
            connection.buffer += chunk
        else:
            self._finish(connection)

    def run(self, total: int | None, rate: float | None = None) -> None:
        """Until ``total`` connections were made (None: until ``stop``); at most ``rate`` new ones a
        second. Once stopped, the connections in flight still finish (or reach their deadline)."""
        last_sweep = time.monotonic()
        began = time.monotonic()
        while True:
            while (len(self.open) < self.concurrency and (total is None or self.started < total) and not self.stop
                   and (rate is None or self.started < (time.monotonic() - began) * rate + 1)):
                self._start_one()
            if not self.open:
                if self.stop or (total is not None and self.started >= total):
                    break
                self.selector.select(timeout=0.01) if self.selector.get_map() else time.sleep(0.01)
                continue
            for key, mask in self.selector.select(timeout=0.05 if rate else 0.2):
                self._on_event(key.data, mask)
            now = time.monotonic()
            if now - last_sweep > 0.2:
                last_sweep = now
                for connection in [c for c in self.open.values() if c.deadline < now]:
                    self._finish(connection, f"{connection.phase}_deadline")


def burst(target: str, sources: list[str], connections: int, concurrency: int = 32, timeout: float = 10.0,
          per_source: bool = False, netns: str | None = None, threads: int = 2) -> dict:
    """Makes ``connections`` new connections (from the network namespace ``netns``, if named);
    returns the counters (see the module doc). ``threads`` drivers share the work: most of a
    connection's cost is the kernel's (in the sending thread's system calls, which release the GIL),
    so two threads use both CPUs of the VM. Source addresses are dealt to the threads round robin,
    so each address still makes its share of the connections."""
    threads = max(1, min(threads, connections))
    sources = sources or [""]
    parts = []
    for index in range(threads):
        share = connections // threads + (1 if index < connections % threads else 0)
        # Rotate the source list so that, together, the threads use each address in turn.
        part_sources = sources[index::threads] if len(sources) >= threads else sources
        parts.append((Counters(per_source), part_sources, share))
    started = time.monotonic()
    usages = []

    def work(counters, part_sources, count):
        OneShotDriver(parse_target(target), part_sources, max(1, concurrency // threads), timeout, counters,
                      netns).run(count)
        usages.append(resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)))

    workers = [threading.Thread(target=work, args=part, daemon=True) for part in parts]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    counters = Counters(per_source)
    for part, _, _ in parts:
        counters.merge(part)
    result = counters.as_dict()
    result["seconds"] = round(time.monotonic() - started, 3)
    result["target"] = target
    result["cpu_seconds"] = {"user": round(sum(u.ru_utime for u in usages), 3),
                             "system": round(sum(u.ru_stime for u in usages), 3)}
    return result


def write_json(path: str, payload: dict) -> None:
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as file:
        json.dump(payload, file)
    os.replace(temporary, path)


def load(target: str, sources: list[str], out: str, concurrency: int = 4, timeout: float = 10.0,
         duration: float | None = None, rate: float | None = None, netns: str | None = None,
         stop: threading.Event | None = None) -> dict:
    """Continuous load until ``stop`` is set (in the main thread also SIGTERM/SIGINT) or ``duration``;
    counters in ``out`` every second."""
    counters = Counters()
    driver = OneShotDriver(parse_target(target), sources, concurrency, timeout, counters, netns)
    started = time.time()
    timeline: list[dict] = []
    state = {"last": time.monotonic(), "ok": 0, "failed": 0, "versions": {}}

    def snapshot(final: bool = False) -> dict:
        now = time.monotonic()
        if now - state["last"] >= 1.0 or final:
            versions = {k: v - state["versions"].get(k, 0) for k, v in counters.by_version.items()}
            timeline.append({"t": round(time.time() - started, 2), "ok": counters.ok - state["ok"],
                             "failed": counters.failed - state["failed"], "by_version": versions})
            state.update(last=now, ok=counters.ok, failed=counters.failed, versions=dict(counters.by_version))
            payload = counters.as_dict()
            payload.update(target=target, started=started, seconds=round(time.time() - started, 2),
                           running=not final, timeline=timeline)
            write_json(out, payload)
            return payload
        return {}

    def on_signal(*_):
        driver.stop = True

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    snapshot(final=False)
    # Run in slices so the file is refreshed every second.
    deadline = time.monotonic() + duration if duration else None
    original_select = driver.selector.select

    def select(timeout=None):
        events = original_select(timeout)
        snapshot()
        if (deadline and time.monotonic() > deadline) or (stop is not None and stop.is_set()):
            driver.stop = True
        return events

    driver.selector.select = select  # type: ignore[method-assign]
    driver.run(None, rate)
    return snapshot(final=True)


class HeldConnection:
    def __init__(self, index: int, source: str):
        self.index = index
        self.source = source
        self.sock: socket.socket | None = None
        self.buffer = bytearray()
        self.pods: dict[str, int] = {}
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self.waiting_since: float | None = None
        self.next_request = 0.0
        self.closed = False


def hold(target: str, sources: list[str], out: str, connections: int = 8, duration: float = 60.0,
         interval: float = 1.0, timeout: float = 10.0, netns: str | None = None,
         stop: threading.Event | None = None, abort_on_close: bool = False) -> dict:
    """Long-lived keep-alive connections, one request each every ``interval`` s, for ``duration`` s
    (or until ``stop`` is set; in the main thread also SIGTERM). A connection that breaks is a failure
    and is not reopened."""
    address = parse_target(target)
    selector = selectors.DefaultSelector()
    held = [HeldConnection(i, (sources or [""])[i % max(1, len(sources))]) for i in range(connections)]
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.monotonic()

    def fail(connection: HeldConnection, kind: str) -> None:
        connection.failed += 1
        connection.errors.append(kind)
        connection.closed = True
        if connection.sock is not None:
            try:
                selector.unregister(connection.sock)
            except (KeyError, ValueError):
                pass
            connection.sock.close()

    for connection in held:
        sock = new_socket(socket.AF_INET, netns)
        if connection.source:
            sock.bind((connection.source, 0))
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError as error:
            fail(connection, error_kind(error.errno or 0, "connect"))
            continue
        sock.setblocking(False)
        connection.sock = sock
        selector.register(sock, selectors.EVENT_READ, connection)

    def report(final: bool) -> dict:
        payload = {"target": target, "seconds": round(time.monotonic() - started, 2), "running": not final,
                   "connections": [{"source": c.source, "pods": c.pods, "ok": c.ok, "failed": c.failed,
                                    "errors": c.errors, "open": not c.closed} for c in held]}
        payload["ok"] = sum(c.ok for c in held)
        payload["failed"] = sum(c.failed for c in held)
        write_json(out, payload)
        return payload

    last_report = 0.0
    while not stop.is_set() and time.monotonic() - started < duration:
        now = time.monotonic()
        for connection in held:
            if connection.closed or connection.sock is None:
                continue
            if connection.waiting_since is None and now >= connection.next_request:
                try:
                    connection.sock.send(REQUEST_KEEPALIVE)
                    connection.waiting_since = now
                    connection.buffer.clear()
                except OSError as error:
                    fail(connection, error_kind(error.errno or 0, "send"))
            elif connection.waiting_since is not None and now - connection.waiting_since > timeout:
                fail(connection, "read_deadline")
        for key, _ in selector.select(timeout=0.1):
            connection = key.data
            try:
                chunk = connection.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as error:
                fail(connection, error_kind(error.errno or 0, "read"))
                continue
            if not chunk:
                fail(connection, "closed_by_peer")
                continue
            connection.buffer += chunk
            head, separator, body = bytes(connection.buffer).partition(b"\r\n\r\n")
            if not separator:
                continue
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            if len(body) < length:
                continue
            version, pod, problem = parse_response(bytes(connection.buffer))
            if problem:
                fail(connection, problem)
                continue
            connection.ok += 1
            key_name = pod or version or "?"
            connection.pods[key_name] = connection.pods.get(key_name, 0) + 1
            connection.waiting_since = None
            connection.next_request = time.monotonic() + interval
        if time.monotonic() - last_report > 1.0:
            last_report = time.monotonic()
            report(False)
    for connection in held:
        if connection.sock is not None and not connection.closed:
            selector.unregister(connection.sock)
            if abort_on_close:
                # A reset: IPVS forgets the connection after its CLOSE timeout (10 s) instead of
                # counting it inactive through FIN_WAIT/TIME_WAIT (2 minutes).
                connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
            connection.sock.close()
            connection.closed = True
    return report(True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="e2e traffic driver")
    parser.add_argument("mode", choices=["burst", "load", "hold"])
    parser.add_argument("--target", required=True, help="ADDRESS:PORT of the Service")
    parser.add_argument("--sources", default="", help="A+N | A-B | a,b,c (default: the kernel's choice)")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--per-source", action="store_true")
    parser.add_argument("--duration", type=float)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--rate", type=float, help="load: at most this many new connections a second")
    parser.add_argument("--json", "--out", dest="out", help="write the result here (load/hold: refreshed every second)")
    arguments = parser.parse_args(argv)
    sources = parse_sources(arguments.sources)
    if arguments.mode == "burst":
        result = burst(arguments.target, sources, arguments.connections, arguments.concurrency,
                       arguments.timeout, arguments.per_source)
        if arguments.out:
            write_json(arguments.out, result)
        else:
            json.dump(result, sys.stdout)
            print()
        return 0
    if not arguments.out:
        parser.error(f"{arguments.mode} needs --out")
    if arguments.mode == "load":
        load(arguments.target, sources, arguments.out, arguments.concurrency, arguments.timeout, arguments.duration,
             arguments.rate)
    else:
        hold(arguments.target, sources, arguments.out, arguments.connections, arguments.duration or 3600,
             arguments.interval, arguments.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
