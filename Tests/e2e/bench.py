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
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
TRAFFIC = os.path.join(HERE, "traffic.py")
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


def traffic_command(netns: str | None, *arguments: str) -> list[str]:
    command = [PYTHON, TRAFFIC, *arguments]
    return ["ip", "netns", "exec", netns, *command] if netns else command


def burst(target: str, connections: int, sources: str = "10.250.1.1+600", netns: str | None = "e2e-clients",
          concurrency: int = 32, per_source: bool = False, timeout: float = 10.0) -> dict:
    """Makes ``connections`` new connections to ``target`` (ADDRESS:PORT) from ``sources``; returns the
    traffic driver's counters (ok, failed, by_version, by_pod, errors, seconds)."""
    arguments = ["burst", "--target", target, "--connections", str(connections), "--concurrency", str(concurrency),
                 "--timeout", str(timeout)]
    if sources:
        arguments += ["--sources", sources]
    if per_source:
        arguments.append("--per-source")
    result = subprocess.run(traffic_command(netns, *arguments), capture_output=True, text=True,
                            timeout=max(300, connections / 5))
    if result.returncode != 0:
        raise BenchError(f"traffic driver failed: {result.stderr.strip()[-800:]}")
    return json.loads(result.stdout)


class Background:
    """A traffic driver running in the background (load or hold) whose counters are in a file."""

    def __init__(self, mode: str, target: str, out: str, netns: str | None = "e2e-clients",
                 sources: str = "10.250.1.1+600", extra: list[str] | None = None):
        self.out = out
        self.mode = mode
        try:
            os.unlink(out)
        except OSError:
            pass
        arguments = [mode, "--target", target, "--out", out] + (["--sources", sources] if sources else []) + (extra or [])
        self.process = subprocess.Popen(traffic_command(netns, *arguments), stdout=subprocess.DEVNULL,
                                        stderr=open(out + ".stderr", "w"))
        deadline = time.monotonic() + 30
        while not os.path.exists(out) and time.monotonic() < deadline and self.process.poll() is None:
            time.sleep(0.1)
        if not os.path.exists(out):
            raise BenchError(f"background {mode} did not start: {open(out + '.stderr').read()[-500:]}")

    def counters(self) -> dict:
        for _ in range(20):
            try:
                with open(self.out) as file:
                    return json.load(file)
            except (OSError, ValueError):
                time.sleep(0.05)
        raise BenchError(f"cannot read {self.out}")

    def stop(self, timeout: float = 30) -> dict:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.counters()


def load(target: str, out: str, rate: float = 60, concurrency: int = 4, **options) -> Background:
    """Continuous load: about ``rate`` new connections a second until stopped."""
    return Background("load", target, out, extra=["--rate", str(rate), "--concurrency", str(concurrency),
                                                  "--timeout", "10"], **options)


def hold(target: str, out: str, connections: int = 8, duration: float = 600, interval: float = 1.0, **options) -> Background:
    """Long-lived keep-alive connections, one request each every ``interval`` seconds."""
    return Background("hold", target, out, extra=["--connections", str(connections), "--duration", str(duration),
                                                  "--interval", str(interval)], **options)


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
