#!/usr/bin/env python3
"""Issue 7's measurements, run INSIDE the VM (real IPVS) by Benchmarks/perf/guest.sh.

Reads RESULTS/guest.json (written by run.sh: tools, sizes, repetitions) and appends one JSON
object per measurement to RESULTS/raw.jsonl; run.sh's report.py turns them into perf.json and
perf.md on the host. Every full sync is followed by a dump that checks the whole table
(PerfTool verify: every service, destination and weight), so a fast but wrong run cannot pass,
and the table is flushed (and checked empty) before each run.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import subprocess
import sys
import time
import traceback
import urllib.request

RESULTS = sys.argv[1]
CONFIG = json.load(open(os.path.join(RESULTS, "guest.json")))
WORK = "/tmp/canary-perf"
os.makedirs(WORK, exist_ok=True)
RAW = open(os.path.join(RESULTS, "raw.jsonl"), "a", buffering=1)
TOOL = CONFIG["perf_tool"]
FLOOR = CONFIG["floor"]
AGENT = CONFIG.get("agent") or ""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"guest: [{time.monotonic():.2f}] {message}", flush=True)


def record(entry: dict) -> None:
    RAW.write(json.dumps(entry) + "\n")
    os.fsync(RAW.fileno())


# Every run starts in a network namespace of its own: its IPVS table is empty and so is its
# destination trash. (A deleted destination waits in the namespace's trash for minutes, and each
# new destination is first looked up there linearly: after flushing 100,000 destinations the next
# 100,000 adds take several times longer. A fresh namespace makes every run start the same.)
CURRENT_NAMESPACE: str | None = None
NAMESPACES_MADE = 0


def fresh_namespace() -> str:
    global CURRENT_NAMESPACE, NAMESPACES_MADE
    NAMESPACES_MADE += 1
    name = f"canary-perf-{NAMESPACES_MADE}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    CURRENT_NAMESPACE = name
    return name


def drop_namespace() -> None:
    """Empties the namespace's table (so that its estimators stop), deletes it and lets the
    kernel's clean-up finish before the next run."""
    global CURRENT_NAMESPACE
    if CURRENT_NAMESPACE is None:
        return
    run([TOOL, "flush"])
    name, CURRENT_NAMESPACE = CURRENT_NAMESPACE, None
    subprocess.run(["ip", "netns", "del", name])
    time.sleep(3)


def run(command: list[str], stdin_path: str | None = None, stdout=subprocess.PIPE, timeout: float = 3600):
    """Runs a command (in the current namespace, if any); returns (wall seconds, stdout text, exit status)."""
    if CURRENT_NAMESPACE is not None:
        command = ["ip", "netns", "exec", CURRENT_NAMESPACE, *command]
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    started = time.monotonic()
    completed = subprocess.run(command, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout)
    wall = time.monotonic() - started
    if stdin_path:
        stdin.close()
    text = completed.stdout.decode(errors="replace") if completed.stdout is not None else ""
    if completed.returncode != 0:
        log(f"{command[0]} exited {completed.returncode}: {completed.stderr.decode(errors='replace')[-400:]}")
    return wall, text, completed.returncode


def parse_json(text: str):
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {"unparsed": text[-400:]}


def table_size() -> tuple[int, int]:
    """Services and destinations per `ipvsadm -Sn` (independent of the agent's own dump)."""
    _, text, _ = run(["ipvsadm", "-Sn"])
    services = sum(1 for line in text.splitlines() if line.startswith("-A"))
    destinations = sum(1 for line in text.splitlines() if line.startswith("-a"))
    return services, destinations


def flush() -> None:
    run([TOOL, "flush"])
    services, destinations = table_size()
    if services or destinations:
        raise RuntimeError(f"flush left {services} services and {destinations} destinations")


def verify(services: int, endpoints: int, repeat: int = 1) -> dict:
    wall, text, status = run([TOOL, "verify", str(services), str(endpoints), str(repeat)])
    result = parse_json(text)
    result["wall_seconds"] = wall
    result["status"] = status
    return result


# MARK: 1. full sync, 2. dump


def dump_with_ipvsadm() -> tuple[float, int, int, int]:
    """`ipvsadm -Sn`, timed: (seconds, status, services, destinations)."""
    wall, text, status = run(["ipvsadm", "-Sn"])
    lines = text.splitlines()
    return (wall, status, sum(1 for line in lines if line.startswith("-A")),
            sum(1 for line in lines if line.startswith("-a")))


def full_sync(size: dict, contender: str, rules: str, repetition: int, sample: int) -> dict:
    """One full sync from an empty table, then the table read back twice: by the agent's
    dumpTable() (PerfTool verify: the whole table checked) and by `ipvsadm -Sn` (counted), both
    timed, in alternating order: these are also the dump measurements (2)."""
    services, endpoints = size["services"], size["endpoints"]
    fresh_namespace()
    try:
        return measure_full_sync(size, contender, rules, repetition, sample)
    finally:
        drop_namespace()


def measure_full_sync(size: dict, contender: str, rules: str, repetition: int, sample: int) -> dict:
    services, endpoints = size["services"], size["endpoints"]
    flush()
    if contender == "agent":
        wall, text, status = run([TOOL, "sync", str(services), str(endpoints)])
    elif contender == "ipvsadm":
        wall, text, status = run(["ipvsadm", "-R"], stdin_path=rules)
    elif contender == "floor":
        wall, text, status = run([FLOOR, rules, str(CONFIG.get("floor_batch_bytes", 1 << 20))])
    elif contender == "floor_agent_io":
        # The floor with the agent's I/O pattern (64 KiB datagrams, one recv per ack).
        wall, text, status = run([FLOOR, rules, str(64 * 1024), "1"])
    else:
        raise ValueError(contender)
    order = ["agent", "ipvsadm"] if sample % 2 == 0 else ["ipvsadm", "agent"]
    for reader in order:
        if reader == "agent":
            check = verify(services, endpoints)
        else:
            ipvsadm_seconds, ipvsadm_status, ipvsadm_services, ipvsadm_destinations = dump_with_ipvsadm()
    expected_destinations = check.get("expected_destinations")
    counted = ipvsadm_services == services and ipvsadm_destinations == expected_destinations
    entry = {
        "measure": "full_sync", "services": services, "endpoints": endpoints, "contender": contender,
        "repetition": repetition, "wall_seconds": wall, "status": status,
        "output": parse_json(text) if text.strip() else {}, "verify": check,
        "ipvsadm_count": [ipvsadm_services, ipvsadm_destinations],
        "correct": status == 0 and check.get("match") is True and counted,
    }
    record(entry)
    table_ok = check.get("match") is True and counted
    for reader in order:
        dump = {"measure": "dump", "services": services, "endpoints": endpoints, "contender": reader,
                "repetition": sample, "after": contender, "correct": table_ok}
        if reader == "agent":
            dump.update({"in_process_seconds": check.get("dump_median_seconds"), "wall_seconds": check["wall_seconds"]})
        else:
            dump.update({"wall_seconds": ipvsadm_seconds, "status": ipvsadm_status})
        record(dump)
    log(f"full sync {services}x{endpoints} {contender}#{repetition}: {wall:.2f}s, "
        f"status {status}, table {'OK' if entry['correct'] else 'WRONG'} "
        f"({check.get('services')} services, {check.get('destinations')} destinations; ipvsadm counts "
        f"{ipvsadm_services}, {ipvsadm_destinations}); dumps: agent {check.get('dump_median_seconds')}s "
        f"in process, ipvsadm -Sn {ipvsadm_seconds:.2f}s")
    return entry


# MARK: the daemon (1a end to end, 4 footprint)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def http_text(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


SCRAPE_SECONDS: list[float] = []


def metrics(listen: str) -> dict[str, float]:
    """Prometheus text → {'name{labels}': value}. A scrape makes the agent read the whole table
    from the kernel first (per-destination traffic), so at 10,000 services it takes as long as a
    dump: its time is kept in SCRAPE_SECONDS."""
    values = {}
    started = time.monotonic()
    text = http_text(f"http://{listen}/metrics", timeout=CONFIG.get("scrape_timeout", 900))
    SCRAPE_SECONDS.append(time.monotonic() - started)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            values[name] = float(value)
        except ValueError:
            pass
    return values


def metric_sum(values: dict[str, float], prefix: str, **labels: str) -> float:
    total = 0.0
    for name, value in values.items():
        if name != prefix and not name.startswith(prefix + "{"):
            continue
        if all(f'{key}="{wanted}"' in name for key, wanted in labels.items()):
            total += value
    return total


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def children_cpu_seconds(pid: int) -> float:
    """CPU of the agent's finished children (iptables, iptables-restore)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / CLOCK_TICKS  # cutime, cstime


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peak_rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class Agent:
    """canary-agent run, started and stopped here; its log in the results directory."""

    def __init__(self, arguments: list[str], name: str):
        self.listen = CONFIG.get("agent_listen", "127.0.0.1:9109")
        self.log_path = os.path.join(RESULTS, f"agent-{name}.log")
        self.log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [AGENT, "run", "--listen", self.listen, "--interface", "canary0", *arguments],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> float | None:
        """Seconds from the start to the first /readyz 200 (polled every 20 ms), None on timeout.
        Meanwhile a sampler watches the start from outside (see `StartupTimeline`)."""
        deadline = self.started + timeout
        self.timeline = StartupTimeline(self.process.pid, self.started)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return None
                if http_status(f"http://{self.listen}/readyz") == 200:
                    return time.monotonic() - self.started
                time.sleep(0.02)
            return None
        finally:
            self.timeline.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        run([AGENT, "cleanup", "--interface", "canary0"])


class StartupTimeline:
    """Where the daemon's start goes, seen from outside without slowing it (no tracing): once a
    second, the addresses on its interface (it binds one per service before programming it), its
    children (ipset, iptables, iptables-restore) and its CPU time. The phases follow: the configuration
    read until the interface appears, the table read and the desired table until the first
    address, the binds until the last one, the plan and the IPVS operations until the first
    ipset or iptables child, the masquerade set and rules while they run."""

    def __init__(self, pid: int, started: float, interface: str = "canary0"):
        self.pid, self.started, self.interface = pid, started, interface
        self.samples: list[dict] = []
        self.children: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _addresses(self) -> int | None:
        completed = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", self.interface],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return completed.stdout.count(b"\n") if completed.returncode == 0 else None

    def _children(self) -> list[tuple[int, str]]:
        found = []
        try:
            for task in os.listdir(f"/proc/{self.pid}/task"):
                for child in open(f"/proc/{self.pid}/task/{task}/children").read().split():
                    try:
                        name = open(f"/proc/{child}/cmdline", "rb").read().split(b"\0")
                        found.append((int(child), " ".join(part.decode(errors="replace") for part in name if part)))
                    except OSError:
                        pass
        except OSError:
            pass
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic() - self.started
            try:
                cpu = cpu_seconds(self.pid)
            except OSError:
                break
            self.samples.append({"t": round(now, 2), "addresses": self._addresses(), "cpu": cpu})
            for pid, command in self._children():
                entry = self.children.setdefault(pid, {"command": command, "first_seen": round(now, 2)})
                entry["last_seen"] = round(now, 2)
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def phases(self, ready: float | None) -> dict:
        """The phases' start times (seconds after the start), from the samples."""
        appeared = next((sample["t"] for sample in self.samples if sample["addresses"] is not None), None)
        first = next((sample["t"] for sample in self.samples if sample["addresses"]), None)
        most = max((sample["addresses"] or 0 for sample in self.samples), default=0)
        last = next((sample["t"] for sample in self.samples if (sample["addresses"] or 0) == most and most), None)
        children = sorted(self.children.values(), key=lambda child: child["first_seen"])
        iptables = [child for child in children if "iptables" in child["command"] or "ipset" in child["command"]]
        return {"interface_seen": appeared, "first_address_seen": first, "last_address_seen": last,
                "addresses": most, "first_iptables_seen": iptables[0]["first_seen"] if iptables else None,
                "last_iptables_seen": iptables[-1]["last_seen"] if iptables else None,
                "children": children, "ready": ready, "resolution_seconds": 1.0,
                "note": "times in seconds after the start, sampled once a second: each is within about a second"}


def footprint(agent: Agent, services: int, endpoints: int, mode: str, drift_check_interval: float) -> None:
    """4: resident memory at this size, and CPU while nothing changes."""
    pid = agent.process.pid
    idle = CONFIG["idle_seconds"]
    rss_before_scrape = rss_kib(pid)
    before_metrics = metrics(agent.listen)
    scrape_seconds = SCRAPE_SECONDS[-1]
    rss_after_scrape = rss_kib(pid)
    cpu_before = cpu_seconds(pid)
    children_before = children_cpu_seconds(pid)
    time.sleep(idle)
    cpu_after = cpu_seconds(pid)
    children_after = children_cpu_seconds(pid)
    after_metrics = metrics(agent.listen)

    def delta(name: str, **labels: str) -> float:
        return metric_sum(after_metrics, name, **labels) - metric_sum(before_metrics, name, **labels)

    full_syncs = delta("canary_agent_sync_duration_seconds_count", kind="full")
    full_sync_seconds = delta("canary_agent_sync_duration_seconds_sum", kind="full")
    idle_cpu = cpu_after - cpu_before
    entry = {"measure": "footprint", "mode": mode, "services": services, "endpoints": endpoints,
             "rss_kib": rss_before_scrape, "rss_after_scrape_kib": rss_after_scrape, "peak_rss_kib": peak_rss_kib(pid),
             "scrape_seconds": scrape_seconds, "idle_seconds": idle,
             "idle_cpu_seconds": idle_cpu, "idle_children_cpu_seconds": children_after - children_before,
             "idle_full_syncs": full_syncs, "idle_full_sync_seconds": full_sync_seconds,
             # CPU not explained by the drift checks (their wall time bounds their CPU): busy polling.
             "idle_cpu_outside_drift_checks_seconds": max(0.0, idle_cpu - full_sync_seconds),
             "idle_netlink_operations": delta("canary_agent_netlink_operations_total"),
             "drift_check_interval": drift_check_interval}
    record(entry)
    log(f"footprint {mode} {services}x{endpoints}: RSS {entry['rss_kib']} KiB ({rss_after_scrape} after a "
        f"{scrape_seconds:.1f}s scrape), idle CPU {idle_cpu:.2f}s over {idle}s, {full_syncs:.0f} full syncs "
        f"taking {full_sync_seconds:.2f}s")


def daemon_static(size: dict) -> None:
    services, endpoints = size["services"], size["endpoints"]
    config_path = os.path.join(WORK, f"static-{services}x{endpoints}.yaml")
    with open(config_path, "w") as out:
        subprocess.run([TOOL, "config", str(services), str(endpoints)], stdout=out, check=True)
    flush()
    agent = Agent(["--config", config_path, "--drift-check-interval", str(CONFIG["drift_check_interval"])],
                  f"static-{services}x{endpoints}")
    try:
        ready = agent.wait_ready(CONFIG["ready_timeout"])
        if ready is None:
            log(f"daemon {services}x{endpoints}: not ready after {CONFIG['ready_timeout']}s; its log ends with: "
                + open(agent.log_path, errors="replace").read()[-600:])
        check = verify(services, endpoints)
        entry = {"measure": "full_sync", "services": services, "endpoints": endpoints, "contender": "daemon",
                 "repetition": 0, "wall_seconds": ready, "status": 0 if ready is not None else 1,
                 "output": {}, "verify": check, "correct": ready is not None and check.get("match") is True,
                 "startup": agent.timeline.phases(ready)}
        try:
            values = metrics(agent.listen)
            entry["output"] = {"full_sync_seconds": metric_sum(values, "canary_agent_sync_duration_seconds_sum", kind="full"),
                               "scrape_seconds": SCRAPE_SECONDS[-1],
                               "errors": {key: value for key, value in values.items() if key.startswith("canary_agent_errors_total")}}
        except OSError as error:
            entry["output"] = {"scrape_error": str(error)}
        record(entry)
        log(f"daemon start to /readyz {services}x{endpoints}: {ready}, table {'OK' if entry['correct'] else 'WRONG'}; "
            f"start: {json.dumps({key: value for key, value in entry['startup'].items() if key != 'children'})}")
        if ready is not None and size.get("footprint"):
            footprint(agent, services, endpoints, "static", CONFIG["drift_check_interval"])
    finally:
        agent.stop()


# MARK: 3. one change (Kubernetes mode, the e2e stand-in API server)

NAMESPACE = "perf"
NODE = "perf-node"


def ipv4(value: int) -> str:
    return ".".join(str(value >> shift & 0xFF) for shift in (24, 16, 8, 0))


def k8s_service(index: int) -> dict:
    vip = ipv4(0x0A60_0000 + index)
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": f"perf-{index}", "namespace": NAMESPACE,
                     "labels": {"service.kubernetes.io/service-proxy-name": "canary-agent"}},
        "spec": {"type": "ClusterIP", "clusterIP": vip, "clusterIPs": [vip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
    }


def k8s_slice(index: int, endpoints: int, replaced: int | None = None) -> dict:
    """The Service's endpoints 11.0.0.0 + 64 i + j; `replaced` swaps the last one for j = 63."""
    numbers = list(range(endpoints))
    if replaced is not None:
        numbers[-1] = replaced
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"perf-{index}-slice", "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": f"perf-{index}"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ipv4(0x0B00_0000 + index * 64 + j)], "conditions": {"ready": True},
                       "nodeName": NODE} for j in numbers],
    }


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))]


def histogram_quantile(before: dict, after: dict, name: str, fraction: float) -> float | None:
    """Quantile of the observations made between two scrapes, from the cumulative buckets."""
    buckets = []
    for key, value in after.items():
        if key.startswith(name + "_bucket{") and 'le="' in key:
            bound_text = key.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if bound_text == "+Inf" else float(bound_text)
            buckets.append((bound, value - before.get(key, 0.0)))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = fraction * buckets[-1][1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return float("inf")  # above the highest bucket: only "more than previous_bound" is known
            inside = count - previous_count
            return previous_bound + (bound - previous_bound) * ((rank - previous_count) / inside if inside else 1)
        previous_bound, previous_count = bound, count
    return None


def one_change(size: dict) -> None:
    services, endpoints = size["services"], size["endpoints"]
    sys.path.insert(0, os.path.join(CONFIG["repo"], "Tests", "e2e"))
    try:
        import apiserver  # the e2e stand-in Kubernetes API server
    except ImportError as error:
        record({"measure": "one_change_skipped", "services": services, "endpoints": endpoints,
                "reason": f"Tests/e2e/apiserver.py cannot be imported: {error}"})
        return
    flush()
    directory = os.path.join(WORK, f"apiserver-{services}x{endpoints}")
    os.makedirs(directory, exist_ok=True)
    server = apiserver.start(directory)
    agent = None
    watcher = None
    try:
        apiserver.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": {}}})
        for index in range(services):
            apiserver.put(k8s_service(index))
            apiserver.put(k8s_slice(index, endpoints))
        agent = Agent(["--kubeconfig", os.path.join(directory, "kubeconfig"), "--node-name", NODE,
                       "--scheduler", "wrr", "--drift-check-interval",
                       str(CONFIG.get("one_change_drift_check_interval", CONFIG["drift_check_interval"]))],
                      f"kubernetes-{services}x{endpoints}")
        ready = agent.wait_ready(CONFIG["ready_timeout"])
        counted = table_size()
        record({"measure": "kubernetes_ready", "services": services, "endpoints": endpoints,
                "ready_seconds": ready, "table": counted, "startup": agent.timeline.phases(ready)})
        log(f"kubernetes mode {services}x{endpoints}: ready after {ready}s, table {counted}")
        if ready is None:
            raise RuntimeError("the agent never became ready in Kubernetes mode")
        if counted != (services, services * endpoints):
            raise RuntimeError(f"Kubernetes mode table is {counted}, want {(services, services * endpoints)}")

        watcher = subprocess.Popen([TOOL, "watch", "1000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True, bufsize=1)
        changed = services // 2
        vip = ipv4(0x0A60_0000 + changed)
        pid = agent.process.pid
        # Let the first sync's after-effects settle, then take the baselines.
        time.sleep(2)
        before = metrics(agent.listen)
        cpu_before = cpu_seconds(pid)
        children_before = children_cpu_seconds(pid)
        latencies, polls, timeouts = [], [], 0
        budget_end = time.monotonic() + CONFIG.get("change_budget_seconds", 1e9)
        count = 0
        for change in range(CONFIG["changes"]):
            if time.monotonic() > budget_end:
                log(f"one change: time budget spent after {count} changes")
                break
            count += 1
            replaced = 63 if change % 2 == 0 else None
            new_last = 63 if replaced is not None else endpoints - 1
            watcher.stdin.write(f"{vip}:80 {ipv4(0x0B00_0000 + changed * 64 + new_last)}:8080\n")
            watcher.stdin.flush()
            if watcher.stdout.readline().strip() != "ready":
                raise RuntimeError("PerfTool watch did not answer ready")
            started = time.monotonic()
            apiserver.put(k8s_slice(changed, endpoints, replaced))
            answer = watcher.stdout.readline().split()
            if answer and answer[0] == "seen":
                latencies.append(float(answer[1]) - started)
                polls.append(int(answer[2]))
            else:
                timeouts += 1
            time.sleep(0.05)  # one change at a time, as events come
        cpu_after = cpu_seconds(pid)
        children_after = children_cpu_seconds(pid)
        after = metrics(agent.listen)
        operations = (metric_sum(after, "canary_agent_netlink_operations_total")
                      - metric_sum(before, "canary_agent_netlink_operations_total"))
        full_syncs = (metric_sum(after, "canary_agent_sync_duration_seconds_count", kind="full")
                      - metric_sum(before, "canary_agent_sync_duration_seconds_count", kind="full"))
        by_operation = {}
        for key, value in after.items():
            if key.startswith("canary_agent_netlink_operations_total{"):
                delta = value - before.get(key, 0.0)
                if delta:
                    by_operation[key.split("{", 1)[1].rstrip("}")] = delta
        histogram = "canary_agent_event_to_kernel_seconds"
        entry = {
            "measure": "one_change", "services": services, "endpoints": endpoints, "changes": count,
            "seen": len(latencies), "timeouts": timeouts,
            "external_p50_seconds": percentile(latencies, 0.50), "external_p99_seconds": percentile(latencies, 0.99),
            "external_max_seconds": max(latencies) if latencies else None,
            "histogram_p50_seconds": histogram_quantile(before, after, histogram, 0.50),
            "histogram_p99_seconds": histogram_quantile(before, after, histogram, 0.99),
            "histogram_top_bucket_seconds": max((float(key.split('le="', 1)[1].split('"', 1)[0]) for key in after
                                                 if key.startswith(histogram + "_bucket{") and '+Inf' not in key), default=None),
            "histogram_count": metric_sum(after, histogram + "_count") - metric_sum(before, histogram + "_count"),
            "netlink_operations_per_change": operations / count, "netlink_operations": by_operation,
            "full_syncs_during": full_syncs, "polls_median": percentile(polls, 0.5),
            "cpu_seconds_per_change": (cpu_after - cpu_before) / count,
            "children_cpu_seconds_per_change": (children_after - children_before) / count,
            "changes_asked": CONFIG["changes"],
            "drift_check_interval": CONFIG.get("one_change_drift_check_interval", CONFIG["drift_check_interval"]),
            "errors": {key.split("{", 1)[1].rstrip("}"): value - before.get(key, 0.0) for key, value in after.items()
                       if key.startswith("canary_agent_errors_total{") and value - before.get(key, 0.0)},
            "note": "external: from the put at the API server to PerfTool watch seeing the new destination "
                    "(weight > 0) in a 1 ms netlink poll; includes the API server's watch delivery",
        }
        for key in ("histogram_p50_seconds", "histogram_p99_seconds"):
            if entry[key] == float("inf"):  # above the highest bucket: only a lower bound is known
                entry[key] = None
                entry[key.replace("_seconds", "_above_seconds")] = entry["histogram_top_bucket_seconds"]
        record(entry)
        log(f"one change {services}x{endpoints}: p50 {entry['external_p50_seconds']}, p99 "
            f"{entry['external_p99_seconds']}, {entry['netlink_operations_per_change']:.2f} ops/change, "
            f"{timeouts} timeouts")
        if size.get("footprint") and CONFIG.get("kubernetes_footprint", True):
            footprint(agent, services, endpoints, "kubernetes",
                      CONFIG.get("one_change_drift_check_interval", CONFIG["drift_check_interval"]))
    finally:
        if watcher:
            watcher.stdin.close()
            watcher.wait(timeout=30)
        if agent:
            agent.stop()
        apiserver.stop()


def main() -> int:
    global CURRENT_NAMESPACE
    log(f"kernel {os.uname().release}, {os.cpu_count()} cpus")
    for size in CONFIG["sizes"]:
        services, endpoints = size["services"], size["endpoints"]
        rules = os.path.join(WORK, f"rules-{services}x{endpoints}.txt")
        with open(rules, "w") as out:
            subprocess.run([TOOL, "rules", str(services), str(endpoints)], stdout=out, check=True)
        def contenders() -> None:
            sample = 0
            for repetition in range(CONFIG["repeat"]):
                for contender in size["contenders"]:
                    if contender == "ipvsadm" and repetition >= size.get("ipvsadm_repeat", 1):
                        continue
                    full_sync(size, contender, rules, repetition, sample)
                    sample += 1

        def daemon() -> None:
            global CURRENT_NAMESPACE
            if not AGENT:
                return
            for phase in ("daemon-static", "one-change"):
                # The whole phase (agent, API server, checks) in a namespace of its own.
                name = fresh_namespace()
                CURRENT_NAMESPACE = None
                subprocess.run(["ip", "netns", "exec", name, sys.executable, os.path.abspath(__file__), RESULTS,
                                phase, str(services), str(endpoints)], stdin=subprocess.DEVNULL)
                CURRENT_NAMESPACE = name
                drop_namespace()

        # CANARY_PERF_DAEMON_FIRST: the daemon's rows first, when a long run may not finish.
        for part in ((daemon, contenders) if CONFIG.get("daemon_first") else (contenders, daemon)):
            part()
    log("done")
    return 0


def phase(name: str, services: int, endpoints: int) -> int:
    """A daemon phase, run by main() in a fresh namespace through `ip netns exec`."""
    size = next(size for size in CONFIG["sizes"] if size["services"] == services and size["endpoints"] == endpoints)
    measurement = {"daemon-static": daemon_static, "one-change": one_change}[name]
    try:
        measurement(size)
    except Exception:  # noqa: BLE001 - reported, the other measurements go on
        record({"measure": "error", "what": name, "services": services, "endpoints": endpoints,
                "trace": traceback.format_exc()})
        log(traceback.format_exc())
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5:
        sys.exit(phase(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001
        record({"measure": "error", "what": "guest", "trace": traceback.format_exc()})
        log(traceback.format_exc())
        sys.exit(1)
