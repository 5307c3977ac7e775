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


def run(command: list[str], stdin_path: str | None = None, stdout=subprocess.PIPE, timeout: float = 3600):
    """Runs a command; returns (wall seconds, stdout text, exit status)."""
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
    flush()
    if contender == "agent":
        wall, text, status = run([TOOL, "sync", str(services), str(endpoints)])
    elif contender == "ipvsadm":
        wall, text, status = run(["ipvsadm", "-R"], stdin_path=rules)
    elif contender == "floor":
        wall, text, status = run([FLOOR, rules, str(CONFIG.get("floor_batch_bytes", 1 << 20))])
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


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def metrics(listen: str) -> dict[str, float]:
    """Prometheus text → {'name{labels}': value}."""
    values = {}
    for line in http_text(f"http://{listen}/metrics").splitlines():
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
        """Seconds from the start to the first /readyz 200 (polled every 20 ms), None on timeout."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return None
            if http_status(f"http://{self.listen}/readyz") == 200:
                return time.monotonic() - self.started
            time.sleep(0.02)
        return None

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


def footprint(agent: Agent, services: int, endpoints: int, mode: str) -> None:
    """4: resident memory at this size, and CPU while nothing changes."""
    pid = agent.process.pid
    idle = CONFIG["idle_seconds"]
    before_metrics = metrics(agent.listen)
    cpu_before = cpu_seconds(pid)
    time.sleep(idle)
    cpu_after = cpu_seconds(pid)
    after_metrics = metrics(agent.listen)
    full_syncs = (metric_sum(after_metrics, "canary_agent_sync_duration_seconds_count", kind="full")
                  - metric_sum(before_metrics, "canary_agent_sync_duration_seconds_count", kind="full"))
    operations = (metric_sum(after_metrics, "canary_agent_netlink_operations_total")
                  - metric_sum(before_metrics, "canary_agent_netlink_operations_total"))
    entry = {"measure": "footprint", "mode": mode, "services": services, "endpoints": endpoints,
             "rss_kib": rss_kib(pid), "peak_rss_kib": peak_rss_kib(pid), "idle_seconds": idle,
             "idle_cpu_seconds": cpu_after - cpu_before, "idle_full_syncs": full_syncs,
             "idle_netlink_operations": operations, "drift_check_interval": CONFIG["drift_check_interval"]}
    record(entry)
    log(f"footprint {mode} {services}x{endpoints}: RSS {entry['rss_kib']} KiB, idle CPU "
        f"{entry['idle_cpu_seconds']:.2f}s over {idle}s, {full_syncs:.0f} full syncs")


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
        check = verify(services, endpoints)
        entry = {"measure": "full_sync", "services": services, "endpoints": endpoints, "contender": "daemon",
                 "repetition": 0, "wall_seconds": ready, "status": 0 if ready is not None else 1,
                 "output": {}, "verify": check, "correct": ready is not None and check.get("match") is True}
        try:
            entry["output"] = {"full_sync_seconds": metric_sum(metrics(agent.listen), "canary_agent_sync_duration_seconds_sum", kind="full")}
        except OSError:
            pass
        record(entry)
        log(f"daemon start to /readyz {services}x{endpoints}: {ready}, table {'OK' if entry['correct'] else 'WRONG'}")
        if ready is not None and size.get("footprint"):
            footprint(agent, services, endpoints, "static")
    finally:
        agent.stop()


def main() -> int:
    log(f"kernel {os.uname().release}, {os.cpu_count()} cpus")
    for size in CONFIG["sizes"]:
        services, endpoints = size["services"], size["endpoints"]
        rules = os.path.join(WORK, f"rules-{services}x{endpoints}.txt")
        with open(rules, "w") as out:
            subprocess.run([TOOL, "rules", str(services), str(endpoints)], stdout=out, check=True)
        sample = 0
        for repetition in range(CONFIG["repeat"]):
            for contender in size["contenders"]:
                if contender == "ipvsadm" and repetition >= size.get("ipvsadm_repeat", 1):
                    continue
                full_sync(size, contender, rules, repetition, sample)
                sample += 1
        if AGENT:
            try:
                daemon_static(size)
            except Exception:  # noqa: BLE001 - reported, the other measurements go on
                record({"measure": "error", "what": "daemon static", "trace": traceback.format_exc()})
                log(traceback.format_exc())
    flush()
    log("done")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001
        record({"measure": "error", "what": "guest", "trace": traceback.format_exc()})
        log(traceback.format_exc())
        sys.exit(1)
