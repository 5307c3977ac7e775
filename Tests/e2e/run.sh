#!/usr/bin/env bash
# End to end on a real kernel: builds canary-agent, boots a VM with Debian's kernel (which has IPVS)
# over this machine's file system, and runs the e2e scenarios of Tests/e2e/scenarios.py inside it:
# nginx backends in network namespaces, clients with hundreds of source addresses, the agent in
# Kubernetes mode (against Tests/e2e/apiserver.py) and in static mode, real traffic counted.
#
#   bash Tests/e2e/run.sh
#
# Exits non-zero unless every selected scenario passed. Writes the report into the results directory
# (default e2e-results/ in the repository, git-ignored): report.md, report.png (target against
# observed share per scenario), results.json, the agents' logs, guest.log and the VM console.
#
# Environment (all optional):
#   CANARY_E2E_SCENARIOS     comma-separated scenario names or numbers (default: all); see
#                            `python3 Tests/e2e/scenarios.py --list`
#   CANARY_E2E_RESULTS       results directory (default: e2e-results in the repository)
#   CANARY_E2E_SCRATCH_PATH  swiftpm scratch path for the agent (default: .build-e2e)
#   CANARY_E2E_SKIP_BUILD=1  use the agent already built there
#   CANARY_VM_KERNEL, CANARY_VM_MEMORY (2G), CANARY_VM_CPUS (2), CANARY_VM_TIMEOUT (2400 s)
#   CANARY_E2E_*             every other CANARY_E2E_ variable is passed on to the guest
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

# shellcheck source=Tests/vm/lib.sh
source "$repo/Tests/vm/lib.sh"
vm_tool=e2e
scratch=${CANARY_E2E_SCRATCH_PATH:-.build-e2e}
mode=${CANARY_E2E_MODE:-scenarios}
vm_settings 2G 2 2400
vm_require vng "vng (virtme-ng)"
vm_require nginx

# 1. The agent, built on the host: the guest sees this file system read-only and only runs it.
if [ "${CANARY_E2E_SKIP_BUILD:-0}" != 1 ]; then
    say "building canary-agent (swift build --product canary-agent --scratch-path $scratch)…"
    started=$(date +%s)
    swift build --product canary-agent --scratch-path "$scratch"
    say "built in $(( $(date +%s) - started ))s"
fi
agent="$repo/$scratch/debug/canary-agent"
[ "${scratch#/}" != "$scratch" ] && agent="$scratch/debug/canary-agent"
if [ "${CANARY_E2E_SCENARIOS:-all}" != selftest ]; then
    [ -x "$agent" ] || die "no agent binary at $agent"
    "$agent" run --help >/dev/null 2>&1 || die "$agent has no 'run' command (the daemon): nothing to test end to end"
fi

# 2. The kernel.
vm_find_kernel

# 3. The results directory, shared read-write with the guest.
results=${CANARY_E2E_RESULTS:-$repo/e2e-results}
mkdir -p "$results"
results=$(cd "$results" && pwd)
# Git-ignored wherever it is (the repository's .gitignore need not know it).
[ -f "$results/.gitignore" ] || printf '*\n' >"$results/.gitignore"
find "$results" -mindepth 1 -maxdepth 1 ! -name .gitignore ! -name demo -exec rm -rf -- {} +
{
    printf 'export CANARY_E2E_AGENT=%q\n' "$agent"
    printf 'export CANARY_E2E_MODE=%q\n' "$mode"
    vm_export_env CANARY_E2E_ CANARY_E2E_AGENT CANARY_E2E_MODE
} >"$results/guest.env"

# 4. Boot; the guest writes everything into $results (its console can be lost).
say "booting VM (kernel $kernel_version, $vm_memory, $vm_cpus cpus, emulated, timeout ${vm_timeout}s); results in $results"
say "the VM boots in 1-3 minutes; then the guest's progress follows (also in $results/scenarios.log)"
# Follow the guest's own log as it is written.
: >"$results/scenarios.log"
sleep 100000 &
follower=$!
tail -n +1 -F --pid="$follower" "$results/scenarios.log" 2>/dev/null | sed -u 's/^/  vm| /' &
vm_boot "$results" "$repo/Tests/e2e/guest.sh"
sleep 1
kill "$follower" 2>/dev/null || true
wait 2>/dev/null || true
vm_say_finished

# 5. Report and verdict.
if [ ! -s "$results/status" ]; then
    say "the guest wrote no status (boot failure, crash or timeout); tail of its log:"
    vm_show_log "$results/guest.log" guest
    vm_show_log "$results/vng.log" vm 15
fi
report_status=0
if [ "$mode" = demo ]; then
    say "demo output: $results/demo.txt"
    [ "$(vm_guest_status "$results")" = 0 ] || { say "the demo FAILED (agent log: $results/agent-demo.log)"; exit 1; }
    exit 0
fi
# Debian's python3: it has python3-matplotlib, for the chart.
/usr/bin/python3 "$repo/Tests/e2e/report.py" "$results" --vm-seconds "$vm_seconds" || report_status=$?
guest_status=$(vm_guest_status "$results")
say "report: $results/report.md, chart: $results/report.png"
if [ "$guest_status" != 0 ] || [ "$report_status" != 0 ]; then
    say "FAILED (guest status $guest_status, report status $report_status)"
    exit 1
fi
say "all scenarios passed"
