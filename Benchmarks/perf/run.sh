#!/usr/bin/env bash
# Issue 7's four measurements against the real kernel, from one command:
#
#   bash Benchmarks/perf/run.sh [--small]
#
# Builds PerfTool (the agent's full-sync path, release) and the libmnl floor (floor.c), finds the
# daemon (canary-agent run), boots the VM with Debian's kernel (IPVS) over this file system
# (virtme-ng, always --disable-kvm), runs Benchmarks/perf/guest.py inside it and writes
#   Benchmarks/results/perf.json   every number, the goals and whether they were met
#   Benchmarks/results/perf.md     the table with the ratios and the command that made it
# (CANARY_BENCH_RESULTS=DIR writes them elsewhere, as CI does).
#
# Full size: 10,000 services × 10 and × 25 destinations. --small: 200 × 5, a few minutes in
# all, what CI runs to keep the bench working (its numbers are not the issue's).
#
# Environment (optional):
#   CANARY_PERF_SIZES        e.g. "10000x10,10000x25" (services x destinations per service)
#   CANARY_PERF_IPVSADM_MAX  skip ipvsadm -R above this many destinations in all (default: none)
#   CANARY_PERF_REPEAT       runs of each contender per size (ipvsadm -R runs once)
#   CANARY_PERF_CONTENDERS   full-sync contenders, default "agent,floor,floor_agent_io,ipvsadm"
#   CANARY_PERF_CHANGES      changes in the one-change measurement (default 1,000; --small 20), within
#                            a time budget (CANARY_PERF_CHANGE_BUDGET seconds, default 600; --small 90)
#   CANARY_PERF_DAEMON_FIRST=1  measure the daemon (start, footprint, one change) before the full-sync contenders
#   CANARY_PERF_AGENT        a canary-agent binary to use instead of building one
#   CANARY_PERF_NO_BUILD=1   use the binaries already built
#   CANARY_VM_KERNEL, CANARY_VM_MEMORY, CANARY_VM_CPUS, CANARY_VM_TIMEOUT   as Tests/vm/run-kernel-tests.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench=$(dirname "$here")
repo=$(dirname "$bench")
command_line="bash Benchmarks/perf/run.sh${*:+ $*}"
for name in CANARY_PERF_REPEAT CANARY_PERF_IPVSADM_MAX CANARY_PERF_SIZES CANARY_PERF_CONTENDERS CANARY_PERF_CHANGES CANARY_PERF_CHANGE_BUDGET CANARY_PERF_DAEMON_FIRST CANARY_PERF_AGENT; do
    [ -n "${!name:-}" ] && command_line="$name=${!name} $command_line"
done

small=0
for argument in "$@"; do
    case $argument in
        --small) small=1 ;;
        *) printf 'usage: %s [--small]\n' "$0" >&2; exit 2 ;;
    esac
done

# shellcheck source=Tests/vm/lib.sh
source "$repo/Tests/vm/lib.sh"
vm_tool=perf
vm_settings 3G 2 "$([ "$small" = 1 ] && echo 1200 || echo 5400)"
vm_require vng "vng (virtme-ng)"
vm_require ipvsadm

results=${CANARY_BENCH_RESULTS:-$bench/results}
mkdir -p "$results"
results=$(cd "$results" && pwd)
work="$bench/.build/perf"
run_dir=$(vm_new_run_dir "$work")

# 1. Build: PerfTool (release, the Benchmarks package's own scratch), the floor, the daemon.
cd "$bench"
if [ "${CANARY_PERF_NO_BUILD:-0}" != 1 ]; then
    say "building PerfTool (release)…"
    swift build -c release --product PerfTool 2>&1 | grep -v 'unhandled;\|CMakeLists.txt$' | tail -n 3
fi
bin=$(swift build -c release --show-bin-path)
perf_tool="$bin/PerfTool"
[ -x "$perf_tool" ] || die "no $perf_tool"
gcc -O2 -Wall -o "$work/floor" "$here/floor.c" -lmnl || die "cannot build floor.c (libmnl-dev installed?)"

agent=${CANARY_PERF_AGENT:-}
agent_reason=""
# The daemon is there when the binary lists a `run` subcommand.
has_daemon() { "$1" --help 2>/dev/null | grep -qE '^[[:space:]]+run([[:space:]]|$)'; }
has_run_command() { grep -qs 'commandName: "run"' "$repo"/Sources/canary-agent/*.swift; }
if [ -z "$agent" ] && [ "$small" = 1 ] && [ -x "$repo/.build/debug/canary-agent" ] &&
    has_daemon "$repo/.build/debug/canary-agent"; then
    # CI has just built the debug agent (Tests/vm/test-all.sh): a release build would take longer
    # than the whole small run. Its times are a debug build's: the small run keeps the bench working.
    agent="$repo/.build/debug/canary-agent"
fi
if [ -z "$agent" ]; then
    if [ "${CANARY_PERF_NO_BUILD:-0}" != 1 ] && has_run_command; then
        say "building canary-agent (release, from the Benchmarks package)…"
        if ! swift build -c release --product canary-agent >"$run_dir/agent-build.log" 2>&1; then
            say "canary-agent does not build: $(grep -m1 'error:' "$run_dir/agent-build.log" || tail -n 1 "$run_dir/agent-build.log")"
        fi
    fi
    agent="$bin/canary-agent"
fi
if [ ! -x "$agent" ]; then
    agent_reason="canary-agent is not built ($agent)"
    agent=""
elif ! has_daemon "$agent"; then
    agent_reason="this canary-agent has no \`run\` command yet (the daemon is being written)"
    agent=""
fi
[ -n "$agent_reason" ] && say "daemon measurements skipped: $agent_reason"

# 2. What the guest measures.
python3 - "$run_dir/guest.json" "$small" "$perf_tool" "$work/floor" "$agent" "$agent_reason" "$repo" "$vm_memory" "$vm_cpus" <<'EOF'
import json, os, sys
path, small, perf_tool, floor, agent, agent_reason, repo, memory, cpus = sys.argv[1:]
small = small == "1"
default_sizes = "200x5" if small else "10000x10,10000x25"
ipvsadm_max = int(os.environ.get("CANARY_PERF_IPVSADM_MAX", "0") or 0)
sizes = []
for text in os.environ.get("CANARY_PERF_SIZES", default_sizes).split(","):
    services, endpoints = (int(part) for part in text.lower().split("x"))
    wanted = os.environ.get("CANARY_PERF_CONTENDERS", "agent,floor,floor_agent_io,ipvsadm").split(",")
    contenders = [name for name in ("agent", "floor", "floor_agent_io") if name in wanted]
    if "ipvsadm" in wanted and (not ipvsadm_max or services * endpoints <= ipvsadm_max):
        contenders.append("ipvsadm")
    sizes.append({"services": services, "endpoints": endpoints, "contenders": contenders,
                  "ipvsadm_repeat": 1, "footprint": True})
json.dump({
    "small": small, "sizes": sizes, "perf_tool": perf_tool, "floor": floor, "floor_batch_bytes": 1 << 20,
    "agent": agent, "agent_reason": agent_reason, "repo": repo,
    "repeat": int(os.environ.get("CANARY_PERF_REPEAT", "1" if small else "2")),
    "dump_repeat": 3,
    # Footprint: idle long enough to see the drift check at its period (twice at --small).
    "idle_seconds": 25 if small else 60, "drift_check_interval": 10 if small else 30,
    # One change: the drift check far away, so that the changes measure the event path alone; how
    # long a drift check holds the loop (a change arriving then waits for it) is the footprint's
    # full-sync time.
    "one_change_drift_check_interval": 3600,
    "change_budget_seconds": float(os.environ.get("CANARY_PERF_CHANGE_BUDGET", "90" if small else "600")),
    # A /metrics scrape reads the whole table from the kernel first: at 10,000 services, a dump's time.
    "scrape_timeout": 900, "kubernetes_footprint": small,
    "daemon_first": os.environ.get("CANARY_PERF_DAEMON_FIRST", "0") == "1",
    "ready_timeout": 300 if small else 1200,
    "changes": int(os.environ.get("CANARY_PERF_CHANGES", "20" if small else "1000")), "vm_memory": memory, "vm_cpus": int(cpus),
}, open(path, "w"), indent=1)
EOF

# 3. Boot the VM and run the guest.
vm_find_kernel
say "booting VM (${kernel##*/}, $vm_memory, $vm_cpus cpus, timeout ${vm_timeout}s); raw results in $run_dir"
vm_boot "$run_dir" "$here/guest.sh"
vm_say_finished
vm_show_log "$run_dir/guest.log" guest
[ -s "$run_dir/status" ] || say "the guest wrote no status: it died or timed out (see $run_dir/vng.log)"

# 4. The report.
python3 "$here/report.py" "$run_dir" "$results" "$command_line" "$vm_seconds" \
    "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
