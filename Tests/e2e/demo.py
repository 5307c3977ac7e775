#!/usr/bin/env python3
"""The demo, inside the VM (see demo.sh): the example configuration on real backends, real traffic.

    python3 demo.py --results DIR --agent BINARY

Puts nginx "pods" at the addresses systemd/config.example.yaml names (v1 on 10.9.1.2-4, the canary
v2 on 10.9.1.9), starts `canary-agent run --config systemd/config.example.yaml`, shows the kernel's
table (`canary-agent list`), sends 2,000 new connections to each IPv4 TCP service from 300 client
addresses, and prints the measured split per version next to the target and the effective share the
agent reports. Everything it prints also goes to DIR/demo.txt.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402
import topology as topo  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "systemd", "config.example.yaml")
LAYOUT = [("v1", "10.9.1.2"), ("v1", "10.9.1.3"), ("v1", "10.9.1.4"), ("v2", "10.9.1.9")]
# The example's IPv4 TCP services with backends here: name → (address:port, scheduler, target %).
SERVICES = {"web": ("10.96.0.10:80", "wrr", 10.0), "web-sticky": ("10.96.0.11:80", "sh", 12.5)}
CONNECTIONS = 2000
CLIENTS = 300


class Output:
    def __init__(self, path: str):
        self.file = open(path, "w")

    def say(self, text: str = "") -> None:
        line = f"demo: {text}" if text else ""
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()

    def block(self, text: str) -> None:
        for line in text.rstrip().splitlines():
            self.say("    " + line)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="canary-agent demo (in the VM)")
    parser.add_argument("--results", required=True)
    parser.add_argument("--agent", required=True)
    parser.add_argument("--config", default=EXAMPLE)
    parser.add_argument("--scenarios", help="ignored (guest.sh passes it)")
    arguments = parser.parse_args(argv)
    out = Output(os.path.join(arguments.results, "demo.txt"))
    out.say(f"network: 3 nginx pods answering 'v1' (10.9.1.2-4) and one answering 'v2' (10.9.1.9), as "
            f"{os.path.relpath(arguments.config, REPO)} names them, on a bridge like pods on a node; "
            f"{CLIENTS} client addresses in a namespace of their own")
    net = topo.Topology(clients=CLIENTS, layout=LAYOUT, bridge_cidr="10.9.0.1/16").up()
    agent = bench.Agent(arguments.agent, os.path.join(arguments.results, "agent-demo.log"),
                        ["--config", arguments.config])
    status = 1
    try:
        out.say(f"starting: canary-agent run --config {os.path.relpath(arguments.config, REPO)}")
        began = time.monotonic()
        agent.start()
        out.say(f"the agent is ready ({time.monotonic() - began:.0f}s); the kernel's IPVS table (canary-agent list):")
        out.block(agent.cli("list").stdout)
        rows = []
        for name, (target, scheduler, percent) in SERVICES.items():
            out.say(f"sending {CONNECTIONS} new connections to {name} ({target}, {scheduler}) from {CLIENTS} client addresses…")
            result = bench.burst(target, CONNECTIONS, sources=f"10.250.1.1+{CLIENTS}")
            entry = next((s for s in agent.status().get("services", []) if s.get("name") == name), {})
            effective = entry.get("effectiveShare", entry.get("effectiveCanaryShare"))
            counts = result["by_version"]
            total = sum(counts.values()) or 1
            rows.append((name, scheduler, percent, None if effective is None else 100 * float(effective),
                         100 * counts.get("v1", 0) / total, 100 * counts.get("v2", 0) / total, result["failed"],
                         result["seconds"]))
        out.say()
        out.say("the measured split per version, next to the target:")
        out.say()
        header = f"{'service':12} {'scheduler':9} {'canary target':>13} {'effective':>9} {'measured v1':>11} {'measured v2':>11} {'failed':>6}"
        out.say("    " + header)
        out.say("    " + "-" * len(header))
        for name, scheduler, percent, effective, v1, v2, failed, _ in rows:
            eff = "n/a" if effective is None else f"{effective:.2f} %"
            out.say(f"    {name:12} {scheduler:9} {percent:>11.2f} % {eff:>9} {v1:>9.2f} % {v2:>9.2f} % {failed:>6}")
        out.say()
        out.say("why sh's share differs from the target (canary-agent explain web-sticky):")
        out.block(agent.cli("explain", "web-sticky", "--config", arguments.config, check=False).stdout)
        status = 0 if all(row[6] == 0 for row in rows) else 1
        out.say("done: " + ("every connection answered" if status == 0 else "SOME CONNECTIONS FAILED"))
    except (bench.BenchError, bench.CheckFailed) as error:
        out.say(f"FAILED: {error}")
        out.say("agent log: " + agent.log_tail(15))
    finally:
        agent.stop()
        bench.sh(arguments.agent, "cleanup", check=False)
        topo.down()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
