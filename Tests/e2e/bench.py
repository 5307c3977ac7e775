"""The e2e bench's toolbox: the agent as a process, traffic from the client namespaces, the kernel's
IPVS table as ipvsadm shows it, waiting, and the statistics every scenario judges with.

Runs inside the VM as root (see guest.sh), imported by scenarios.py and demo.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import traffic  # noqa: E402
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
APISERVER = os.path.join(HERE, "apiserver.py")
AGENT_LISTEN = "127.0.0.1:9109"
# How many standard deviations of the binomial an observed share may be off (see report.py).
SIGMAS = 4.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sh(*command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise BenchError(f"{' '.join(command)}: exit {result.returncode}: {(result.stderr or result.stdout).strip()[:500]}")
    return result


class BenchError(Exception):
    """The bench itself could not do what a scenario asked (not a verdict on the agent)."""


class CheckFailed(Exception):
    """A scenario's expectation did not hold."""


# ------------------------------------------------------------------------------------ statistics


def binomial_tolerance(p: float, n: int, sigmas: float = SIGMAS) -> float:
    """``sigmas`` standard deviations of an observed share over ``n`` independent trials of
    probability ``p``; never below half a trial, so an exact scheduler passes when p is 0 or 1."""
    if n <= 0:
        return 1.0
    return max(sigmas * math.sqrt(max(p * (1 - p), 0.0) / n), 0.5 / n)


# ------------------------------------------------------------------------------------ traffic


def burst(target: str, connections: int, sources: str = "10.250.1.1+600", netns: str | None = "e2e-clients",
          concurrency: int = 32, per_source: bool = False, timeout: float = 10.0) -> dict:
    """Makes ``connections`` new connections to ``target`` (ADDRESS:PORT) from ``sources`` in the
    network namespace ``netns`` (None: this one, the node's); returns the traffic driver's counters
    (ok, failed, by_version, by_pod, errors, seconds). In this process: starting a Python process
    takes tens of seconds in an emulated VM."""
    return traffic.burst(target, traffic.parse_sources(sources), connections, concurrency, timeout, per_source, netns)


class Background:
    """A traffic driver (load or hold) running in a thread of this process; its counters are
    written to a file every second and when it stops."""

    def __init__(self, mode: str, target: str, out: str, netns: str | None = "e2e-clients",
                 sources: str = "10.250.1.1+600", **options):
        self.out = out
        self.mode = mode
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        try:
            os.unlink(out)
        except OSError:
            pass
        function = traffic.load if mode == "load" else traffic.hold
        addresses = traffic.parse_sources(sources)

        def body():
            try:
                function(target, addresses, out, netns=netns, stop=self.stop_event, **options)
            except BaseException as error:  # noqa: BLE001 - reported by stop()
                self.error = error

        self.thread = threading.Thread(target=body, name=f"{mode}-{target}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not os.path.exists(out) and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.1)
        if not os.path.exists(out):
            raise BenchError(f"background {mode} did not start: {self.error!r}")

    def counters(self) -> dict:
        for _ in range(20):
            try:
                with open(self.out) as file:
                    return json.load(file)
            except (OSError, ValueError):
                time.sleep(0.05)
        raise BenchError(f"cannot read {self.out}")

    def stop(self, timeout: float = 60) -> dict:
        self.stop_event.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise BenchError(f"background {self.mode} did not stop within {timeout}s")
        if self.error is not None:
            raise BenchError(f"background {self.mode} failed: {self.error!r}")
        return self.counters()


def load(target: str, out: str, rate: float = 60, concurrency: int = 4, **options) -> Background:
    """Continuous load: about ``rate`` new connections a second until stopped."""
    return Background("load", target, out, rate=rate, concurrency=concurrency, timeout=10.0, **options)


def hold(target: str, out: str, connections: int = 8, duration: float = 3600, interval: float = 1.0, **options) -> Background:
    """Long-lived keep-alive connections, one request each every ``interval`` seconds."""
    return Background("hold", target, out, connections=connections, duration=duration, interval=interval, **options)


def share(counts: dict, version: str) -> float:
    total = sum(counts.values())
    return counts.get(version, 0) / total if total else 0.0


# ------------------------------------------------------------------------------------ the kernel


@dataclass
class VirtualService:
    protocol: str
    address: str  # "10.96.0.10:80"
    scheduler: str
    flags: str = ""
    destinations: dict[str, dict] = field(default_factory=dict)  # "ip:port" → {weight, active, inactive, forward}


IPVSADM_SERVICE = re.compile(r"^(TCP|UDP|SCTP|FWM)\s+(\S+)\s+(\S+)\s*(.*)$")
IPVSADM_DEST = re.compile(r"^\s+->\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)")


def ipvs_table() -> dict[str, VirtualService]:
    """The kernel's table by ``ipvsadm -Ln``: "TCP 10.96.0.10:80" → VirtualService."""
    table: dict[str, VirtualService] = {}
    current = None
    for line in sh("ipvsadm", "-Ln").stdout.splitlines():
        match = IPVSADM_SERVICE.match(line)
        if match:
            current = VirtualService(match[1], match[2], match[3], match[4].strip())
            table[f"{match[1]} {match[2]}"] = current
            continue
        match = IPVSADM_DEST.match(line)
        if match and current is not None:
            current.destinations[match[1]] = {"forward": match[2], "weight": int(match[3]),
                                              "active": int(match[4]), "inactive": int(match[5])}
    return table


def table_text() -> str:
    return sh("ipvsadm", "-Ln").stdout


def wait_for(what: str, predicate, timeout: float, interval: float = 0.5):
    """Polls ``predicate`` until it returns a truthy value; raises CheckFailed after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (BenchError, OSError, ValueError, KeyError) as error:
            last_error = error
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}"
                              + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval)


# ------------------------------------------------------------------------------------ the agent


class Agent:
    """``canary-agent run`` as a child process, its log in the results directory."""

    def __init__(self, binary: str, log_path: str, arguments: list[str], listen: str = AGENT_LISTEN):
        self.binary = binary
        self.log_path = log_path
        self.arguments = arguments
        self.listen = listen
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self, wait_ready: bool = True, timeout: float = 120) -> "Agent":
        self.starts += 1
        log_file = open(self.log_path, "a")
        log_file.write(f"\n===== start #{self.starts} at {time.strftime('%H:%M:%S')}: run {' '.join(self.arguments)}\n")
        log_file.flush()
        self.process = subprocess.Popen([self.binary, "run", *self.arguments, "--listen", self.listen],
                                        stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        def ready():
            if self.process is not None and self.process.poll() is not None:
                raise CheckFailed(f"the agent exited with status {self.process.returncode} before it was ready "
                                  f"(log: {self.log_tail(8)})")
            return self.http("/readyz")[0] == 200
        wait_for("the agent's /readyz", ready, timeout)

    def http(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://{self.listen}{path}", timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except (urllib.error.URLError, OSError) as error:
            raise BenchError(f"agent {path}: {error}") from None

    def status(self) -> dict:
        code, body = self.http("/status")
        if code != 200:
            raise BenchError(f"/status answered {code}")
        return json.loads(body)

    def service_status(self, name: str) -> dict | None:
        for service in self.status().get("services", []):
            if service.get("name") == name or service.get("key") == name:
                return service
        return None

    def metrics(self) -> str:
        return self.http("/metrics")[1].decode(errors="replace")

    def cli(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh(self.binary, *arguments, check=check)

    def signal(self, number: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(number)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (it should not need one)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 30) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as file:
                return " | ".join(line.rstrip() for line in file.readlines()[-lines:])
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            with open(self.log_path, errors="replace") as file:
                return file.read()
        except OSError:
            return ""
