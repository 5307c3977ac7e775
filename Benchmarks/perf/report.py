#!/usr/bin/env python3
"""Turns a perf run's raw.jsonl (written in the VM by guest.py) into perf.json and perf.md.

    report.py RUN_DIR RESULTS_DIR COMMAND VM_SECONDS COMMIT

Each contender's time at a size is its best run (the machine is shared: the fastest run is the
one least disturbed); every run is listed in perf.json. A run whose table did not check out
(PerfTool verify: every service, destination and weight) is never used: it is reported as wrong.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone

run_dir, results_dir, command, vm_seconds, commit = sys.argv[1:6]
config = json.load(open(os.path.join(run_dir, "guest.json")))
raw = []
raw_path = os.path.join(run_dir, "raw.jsonl")
if os.path.exists(raw_path):
    for line in open(raw_path):
        line = line.strip()
        if line:
            raw.append(json.loads(line))
status_path = os.path.join(run_dir, "status")
guest_status = open(status_path).read().strip() if os.path.exists(status_path) else "none (the guest died or timed out)"
agent_reason = config.get("agent_reason") or ""


def size_label(services: int, endpoints: int) -> str:
    return f"{services:,} × {endpoints}"


def seconds_text(value) -> str:
    if value is None:
        return "—"
    if value >= 60:
        return f"{int(value // 60)} min {value % 60:.1f} s"
    if value >= 1:
        return f"{value:.2f} s"
    return f"{value * 1000:.1f} ms"


def best(entries, key="wall_seconds"):
    values = [entry[key] for entry in entries if entry.get("correct") and entry.get(key) is not None]
    return min(values) if values else None


def median(values):
    values = sorted(value for value in values if value is not None)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def goal(met: bool | None, text: str) -> dict:
    return {"met": met, "text": text}


sizes = [(size["services"], size["endpoints"]) for size in config["sizes"]]
report = {
    "command": command, "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": commit,
    "host": {"cpus": os.cpu_count(), "kernel": platform.release(), "load": open("/proc/loadavg").read().split()[:3]},
    "vm": {"seconds": int(vm_seconds), "guest_status": guest_status, "emulated": "TCG (--disable-kvm)"},
    "small": config["small"], "full_sync": [], "dump": [], "one_change": [], "footprint": [], "errors": [],
}
rows_sync, rows_dump, rows_change, rows_footprint = [], [], [], []

for services, endpoints in sizes:
    label = size_label(services, endpoints)
    runs = [entry for entry in raw if entry["measure"] == "full_sync" and entry["services"] == services
            and entry["endpoints"] == endpoints and entry.get("repetition", 0) >= 0]
    by = {name: [entry for entry in runs if entry["contender"] == name] for name in ("agent", "daemon", "ipvsadm", "floor", "floor_agent_io")}
    times = {name: best(entries) for name, entries in by.items()}
    wrong = {name: sum(1 for entry in entries if not entry.get("correct")) for name, entries in by.items()}
    operations = next((entry["output"].get("operations") for entry in by["floor"] + by["agent"]
                       if isinstance(entry.get("output"), dict) and entry["output"].get("operations")), None)
    agent, floor, ipvsadm, daemon = times["agent"], times["floor"], times["ipvsadm"], times["daemon"]
    speedup = ipvsadm / agent if agent and ipvsadm else None
    over_floor = agent / floor if agent and floor else None
    daemon_speedup = ipvsadm / daemon if daemon and ipvsadm else None
    daemon_over_floor = daemon / floor if daemon and floor else None
    phases = {}
    agent_best = [entry for entry in by["agent"] if entry.get("correct") and entry["wall_seconds"] == agent]
    if agent_best:
        phases = {key: value for key, value in agent_best[0]["output"].items() if key.endswith("_seconds")}
    entry = {
        "services": services, "endpoints": endpoints, "operations": operations,
        "seconds": times, "wrong_runs": wrong,
        "runs": {name: [(run["wall_seconds"], run.get("correct")) for run in entries] for name, entries in by.items()},
        "agent_phases": phases,
        "ipvsadm_over_agent": speedup, "agent_over_floor": over_floor,
        "ipvsadm_over_daemon": daemon_speedup, "daemon_over_floor": daemon_over_floor,
        "goals": {
            "agent_3x_faster_than_ipvsadm": goal(speedup >= 3 if speedup else None, "ipvsadm -R / agent ≥ 3"),
            "agent_within_1.2x_of_floor": goal(over_floor <= 1.2 if over_floor else None, "agent / floor ≤ 1.2"),
            "daemon_3x_faster_than_ipvsadm": goal(daemon_speedup >= 3 if daemon_speedup else None, "ipvsadm -R / daemon ≥ 3"),
            "daemon_within_1.2x_of_floor": goal(daemon_over_floor <= 1.2 if daemon_over_floor else None, "daemon / floor ≤ 1.2"),
        },
    }
    report["full_sync"].append(entry)
    rows_sync.append((label, operations, times, wrong, speedup, over_floor, daemon_speedup, daemon_over_floor, phases))

    dumps = [entry for entry in raw if entry["measure"] == "dump" and entry["services"] == services
             and entry["endpoints"] == endpoints]
    agent_dump = median([entry.get("in_process_seconds") for entry in dumps if entry["contender"] == "agent" and entry.get("correct")])
    agent_dump_process = median([entry["wall_seconds"] for entry in dumps if entry["contender"] == "agent" and entry.get("correct")])
    ipvsadm_dump = median([entry["wall_seconds"] for entry in dumps if entry["contender"] == "ipvsadm" and entry.get("correct")])
    ratio = agent_dump / ipvsadm_dump if agent_dump and ipvsadm_dump else None
    table = dumps[0].get("table") if dumps else None
    report["dump"].append({
        "services": services, "endpoints": endpoints, "table_per_ipvsadm": table,
        "agent_dump_table_seconds": agent_dump, "agent_process_seconds_with_check": agent_dump_process,
        "ipvsadm_Sn_seconds": ipvsadm_dump, "agent_over_ipvsadm": ratio,
        "goals": {"no_slower_than_ipvsadm": goal(ratio <= 1.0 if ratio else None, "agent dumpTable() / ipvsadm -Sn ≤ 1")},
    })
    rows_dump.append((label, agent_dump, agent_dump_process, ipvsadm_dump, ratio))

    for measure, target, rows in (("one_change", report["one_change"], rows_change), ("footprint", report["footprint"], rows_footprint)):
        found = [entry for entry in raw if entry["measure"] == measure and entry["services"] == services
                 and entry["endpoints"] == endpoints]
        target.extend(found)
        rows.extend((label, entry) for entry in found)

report["errors"] = [entry for entry in raw if entry["measure"] == "error"]

# Goals over the whole run.
if rows_change:
    for _, entry in rows_change:
        p99 = entry.get("external_p99_seconds")
        entry["goals"] = {"p99_under_50ms": goal(p99 < 0.05 if p99 is not None else None, "p99 event → kernel < 50 ms")}
if rows_footprint:
    for _, entry in rows_footprint:
        rss = entry["rss_kib"] / 1024
        outside = entry.get("idle_cpu_outside_drift_checks_seconds", entry["idle_cpu_seconds"])
        busy = outside / entry["idle_seconds"] if entry["idle_seconds"] else None
        expected_syncs = entry["idle_seconds"] / entry["drift_check_interval"]
        entry["goals"] = {
            "rss_under_64MiB": goal(rss < 64, "VmRSS < 64 MiB"),
            "no_busy_polling": goal(entry["idle_full_syncs"] <= expected_syncs + 1 and (busy or 0) < 0.05
                                    and not entry.get("idle_netlink_operations"),
                                    "idle: only the drift check's full syncs (no operations), CPU outside them < 5 %"),
        }

os.makedirs(results_dir, exist_ok=True)
with open(os.path.join(results_dir, "perf.json"), "w") as out:
    json.dump(report, out, indent=1)
    out.write("\n")


def verdict(met, ratio_text: str) -> str:
    if met is None:
        return "not measured"
    return f"**met** ({ratio_text})" if met else f"**missed** ({ratio_text})"


lines = [
    "# Performance against the real kernel (issue 7)", "",
    f"Made by `{command}` on {report['date'][:10]} at commit {commit}, in a VM with Debian's kernel "
    f"(TCG emulation, about 10× slower than the host; {config.get('vm_cpus', '?')} vCPUs, {config.get('vm_memory', '?')}) "
    f"on a shared {os.cpu_count()}-core machine (load {' '.join(report['host']['load'])} at the end). "
    f"VM run: {vm_seconds} s, guest status {guest_status}.",
    "Absolute times vary with the machine's load; the ratios, taken in the same run, are what the goals judge. "
    "Each time is the best correct run; every table was checked whole after its run (services, destinations, weights).",
]
agent_binary = config.get("agent") or ""
if agent_binary:
    build = "a debug build" if "/debug/" in agent_binary or "debug" in os.path.basename(agent_binary) else "a release build"
    lines += ["", f"The daemon: `{os.path.relpath(agent_binary, config.get('repo', '/'))}` ({build})"
              + ("; the daemon's rows were measured before the full-sync contenders (CANARY_PERF_DAEMON_FIRST)" if config.get("daemon_first") else "")
              + "."]
if config["small"]:
    lines += ["", "**Small size (CI)**: this keeps the bench working; the issue's numbers are the full-size run's."]
lines += ["", "## 1. Full sync from an empty table", "",
          "| size | operations | agent (PerfTool) | daemon start → /readyz | ipvsadm -R | floor (libmnl) | ipvsadm ÷ agent (goal ≥ 3) | agent ÷ floor (goal ≤ 1.2) |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for label, operations, times, wrong, speedup, over_floor, daemon_speedup, daemon_over_floor, _ in rows_sync:
    def cell(name):
        if name == "daemon" and times.get(name) is None and any(
                entry.get("wall_seconds") is None for entry in raw
                if entry["measure"] == "full_sync" and entry["contender"] == "daemon" and f"{entry['services']:,} × {entry['endpoints']}" == label):
            return f"not ready within {config.get('ready_timeout')} s"
        if wrong.get(name) and times.get(name) is None:
            return f"WRONG TABLE ({wrong[name]} runs)"
        text = seconds_text(times.get(name))
        if name == "daemon" and times.get(name) is None:
            return f"not measured{': ' + agent_reason if agent_reason else ''}"
        return text + (f" ({wrong[name]} wrong runs)" if wrong.get(name) else "")
    lines.append(f"| {label} | {operations or '—'} | {cell('agent')} | {cell('daemon')} | {cell('ipvsadm')} | {cell('floor')} | "
                 f"{verdict(speedup >= 3 if speedup else None, f'{speedup:.1f}×' if speedup else '')} | "
                 f"{verdict(over_floor <= 1.2 if over_floor else None, f'{over_floor:.2f}×' if over_floor else '')} |")
for label, operations, times, wrong, speedup, over_floor, daemon_speedup, daemon_over_floor, _ in rows_sync:
    if daemon_speedup:
        own = next((entry["output"].get("full_sync_seconds") for entry in raw if entry["measure"] == "full_sync"
                    and entry["contender"] == "daemon" and entry.get("correct") and f"{entry['services']:,} × {entry['endpoints']}" == label
                    and isinstance(entry.get("output"), dict)), None)
        lines.append(f"\nDaemon at {label}: start → /readyz {seconds_text(times.get('daemon'))}"
                     + (f" (its first full sync, per its own histogram: {seconds_text(own)})" if own else "")
                     + f"; ipvsadm ÷ daemon {daemon_speedup:.1f}× (goal ≥ 3), daemon ÷ floor {daemon_over_floor:.2f}× (goal ≤ 1.2).")
for entry in report["full_sync"]:
    agent_io, floor, agent = entry["seconds"].get("floor_agent_io"), entry["seconds"].get("floor"), entry["seconds"].get("agent")
    if agent_io and floor and agent:
        lines.append(f"\nAt {size_label(entry['services'], entry['endpoints'])}, the floor with the agent's I/O pattern "
                     f"(64 KiB datagrams, one recv per ack) takes {seconds_text(agent_io)}: "
                     f"{agent_io / floor:.2f}× the floor. Of the agent's {seconds_text(agent - floor)} over the floor, "
                     f"{seconds_text(max(0.0, agent_io - floor))} is that I/O pattern; the rest is the agent's own "
                     f"work (realize, plan, encoding and decoding in Swift, process start).")
def startup_text(phases: dict) -> str:
    """The daemon's start, phase by phase, from guest.py's once-a-second samples."""
    marks = [("start", 0.0), ("interface", phases.get("interface_seen")), ("first address", phases.get("first_address_seen")),
             ("last address", phases.get("last_address_seen")), ("iptables", phases.get("first_iptables_seen")),
             ("iptables done", phases.get("last_iptables_seen")), ("ready", phases.get("ready"))]
    names = {("start", "interface"): "process start, configuration read and parsed, node prepared",
             ("interface", "first address"): "table dump, desired table (weights) and address claims",
             ("first address", "last address"): f"binding {phases.get('addresses')} addresses (rtnetlink, many requests per datagram)",
             ("last address", "iptables"): "plan, IPVS operations, recording them (model, metrics)",
             ("iptables", "iptables done"): "masquerade: the hairpin set filled (ipset restore, swapped in), then the chain checked (iptables -S) and written (iptables-restore)",
             ("iptables done", "ready"): "the rest of the sync"}
    known = [(name, value) for name, value in marks if value is not None]
    parts = []
    for (name, value), (next_name, next_value) in zip(known, known[1:]):
        label = names.get((name, next_name), f"{name} → {next_name}")
        parts.append(f"{label}: {seconds_text(max(0.0, next_value - value))}")
    return "; ".join(parts)


startup_lines = []
for entry in raw:
    phases = entry.get("startup")
    if phases and (entry.get("contender") == "daemon" or entry["measure"] == "kubernetes_ready"):
        mode = "static file" if entry.get("contender") == "daemon" else "Kubernetes"
        startup_lines.append(f"- {size_label(entry['services'], entry['endpoints'])}, {mode}: {startup_text(phases)} "
                             f"(sampled once a second from outside: each within about a second)")
if startup_lines:
    lines += ["", "Where the daemon's start goes (start → /readyz):", ""] + startup_lines

lines += ["", "Where the agent's time goes (best run, seconds inside PerfTool):", ""]
for label, *_, phases in rows_sync:
    if phases:
        lines.append(f"- {label}: " + ", ".join(f"{key.removesuffix('_seconds')} {seconds_text(value)}" for key, value in phases.items()))

lines += ["", "## 2. Reading the table back", "",
          "| size | agent dumpTable() | PerfTool process (dump + check) | ipvsadm -Sn | agent ÷ ipvsadm (goal ≤ 1) |",
          "| --- | ---: | ---: | ---: | ---: |"]
for label, agent_dump, agent_process, ipvsadm_dump, ratio in rows_dump:
    lines.append(f"| {label} | {seconds_text(agent_dump)} | {seconds_text(agent_process)} | {seconds_text(ipvsadm_dump)} | "
                 f"{verdict(ratio <= 1 if ratio else None, f'{ratio:.2f}×' if ratio else '')} |")

def histogram_text(entry: dict, key: str) -> str:
    above = entry.get(key.replace("_seconds", "_above_seconds"))
    return f"> {seconds_text(above)}" if above is not None else seconds_text(entry.get(key))


lines += ["", "## 3. One change (Kubernetes mode, stand-in API server)", ""]
if rows_change:
    lines += ["| size | changes (seen / timed out) | p50 (external) | p99 (external) | p50 / p99 (agent histogram) | netlink ops per change | agent CPU per change | + its children (iptables) | goal p99 < 50 ms |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for label, entry in rows_change:
        p99 = entry.get("external_p99_seconds")
        lines.append(f"| {label} | {entry.get('changes')} ({entry.get('seen')} / {entry.get('timeouts')}) | "
                     f"{seconds_text(entry.get('external_p50_seconds'))} | {seconds_text(p99)} | "
                     f"{histogram_text(entry, 'histogram_p50_seconds')} / {histogram_text(entry, 'histogram_p99_seconds')} | "
                     f"{entry.get('netlink_operations_per_change', 0):.2f} | {seconds_text(entry.get('cpu_seconds_per_change'))} | "
                     f"{seconds_text(entry.get('children_cpu_seconds_per_change'))} | "
                     f"{verdict(entry['goals']['p99_under_50ms']['met'], seconds_text(p99))} |")
    for label, entry in rows_change:
        operations = ", ".join(f"{key}: {value / max(1, entry.get('changes') or 1):.2f}" for key, value in sorted(entry.get("netlink_operations", {}).items()))
        lines.append(f"\n{label}: operations per change by kind: {operations or 'none'}; full syncs during the changes: "
                     f"{entry.get('full_syncs_during', 0):.0f} (drift check every {entry.get('drift_check_interval', '?')} s, "
                     f"so that the changes measure the event path; a change arriving during a drift check waits for it: "
                     f"see the full-sync time in 4)"
                     + (f"; {entry['changes']} of the {entry['changes_asked']} changes asked fit in the time budget"
                        if entry.get("changes_asked") and entry.get("changes") != entry.get("changes_asked") else "")
                     + (f"; agent errors during the changes: {entry['errors']}" if entry.get("errors") else "") + ".")
else:
    reason = agent_reason or next((entry.get("reason") for entry in raw if entry["measure"] == "one_change_skipped"), None) \
        or "no result (see the errors below)"
    lines.append(f"not measured: {reason}")

lines += ["", "## 4. Footprint", ""]
if rows_footprint:
    lines += ["| size | mode | VmRSS (goal < 64 MiB) | after a /metrics scrape | peak RSS | idle CPU | full syncs while idle (their time) | CPU outside them | netlink ops while idle | goal: no busy polling |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for label, entry in rows_footprint:
        rss = entry["rss_kib"] / 1024
        total = entry["idle_cpu_seconds"] / entry["idle_seconds"] * 100
        outside = entry.get("idle_cpu_outside_drift_checks_seconds", entry["idle_cpu_seconds"])
        busy = outside / entry["idle_seconds"] * 100
        after_scrape = entry.get("rss_after_scrape_kib")
        lines.append(f"| {label} | {entry['mode']} | {verdict(entry['goals']['rss_under_64MiB']['met'], f'{rss:.1f} MiB')} | "
                     f"{f'{after_scrape / 1024:.1f} MiB' if after_scrape else '—'} | "
                     f"{entry['peak_rss_kib'] / 1024:.1f} MiB | {entry['idle_cpu_seconds']:.2f} s over {entry['idle_seconds']} s ({total:.1f} %) | "
                     f"{entry['idle_full_syncs']:.0f} ({seconds_text(entry.get('idle_full_sync_seconds'))}; drift check every {entry['drift_check_interval']} s) | "
                     f"{outside:.2f} s | {entry['idle_netlink_operations']:.0f} | "
                     f"{verdict(entry['goals']['no_busy_polling']['met'], f'{busy:.1f} % CPU outside drift checks')} |")
    for label, entry in rows_footprint:
        if entry.get("scrape_seconds") is not None:
            lines.append(f"\n{label} ({entry['mode']}): one /metrics scrape took {seconds_text(entry['scrape_seconds'])} "
                         f"(the per-destination traffic is read on a netlink socket of its own, and not at all above "
                         f"--destination-metrics-limit; the shares wait for the reconciler, so a scrape during a drift check "
                         f"waits for it).")
else:
    lines.append(f"not measured: {agent_reason or 'no result (see the errors below)'}")

if report["errors"]:
    lines += ["", "## Errors", ""]
    for entry in report["errors"]:
        lines += [f"- {entry.get('what')}:", "", "```", entry.get("trace", "").strip()[-1500:], "```"]

with open(os.path.join(results_dir, "perf.md"), "w") as out:
    out.write("\n".join(lines) + "\n")
print(f"wrote {results_dir}/perf.md and {results_dir}/perf.json")
print("\n".join(lines))
