#!/usr/bin/env bash
# Runs INSIDE the VM, as root, started by Tests/e2e/run.sh (or demo.sh) through `vng --exec`.
#
#   bash Tests/e2e/guest.sh RESULTS_DIR
#
# RESULTS_DIR is shared read-write with the host; the rest of the file system is the host's, read-only
# (with writable overlays such as /tmp). The host writes RESULTS_DIR/guest.env (CANARY_E2E_AGENT: the
# agent binary it built; CANARY_E2E_SCENARIOS: which scenarios; CANARY_E2E_MODE: scenarios | demo).
# This script loads the kernel modules, then runs Tests/e2e/scenarios.py (or demo.py), which writes
# results.json, the agent's logs and its own log into RESULTS_DIR. Written last: RESULTS_DIR/status
# (its absence means the guest died).
set -uo pipefail

results_dir=${1:?usage: guest.sh RESULTS_DIR}
log_file="$results_dir/guest.log"
exec >>"$log_file" 2>&1

say() { printf 'guest: [%ss] %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$*"; }
finish() {
    say "exit status $1"
    sync
    printf '%s\n' "$1" >"$results_dir/status.tmp" && mv "$results_dir/status.tmp" "$results_dir/status"
    sync
    exit 0
}

# shellcheck source=/dev/null
source "$results_dir/guest.env" || { say "cannot read $results_dir/guest.env"; finish 90; }
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

say "started $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {print $2, $3}' /proc/meminfo)"
for module in ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh ip_vs_mh nf_conntrack veth bridge dummy; do
    modprobe "$module" || { say "modprobe $module failed"; finish 92; }
done
# The agent's masquerade rules (iptables-restore) need these; the kernel would load most on demand.
for module in iptable_nat iptable_filter xt_ipvs xt_comment xt_mark xt_MASQUERADE xt_set ip_set_hash_netnet nf_nat ip_tables nf_tables nft_compat; do
    modprobe "$module" 2>/dev/null || say "optional module $module not loaded"
done
ip link set lo up
mkdir -p /run/netns
command -v nginx >/dev/null || { say "nginx is missing: run Tests/vm/install-deps.sh on the host"; finish 93; }
if [ "${CANARY_E2E_SCENARIOS:-all}" != selftest ] && [ ! -x "${CANARY_E2E_AGENT:-}" ]; then
    say "agent binary ${CANARY_E2E_AGENT:-(unset)} missing"
    finish 94
fi

work_dir=$(mktemp -d /tmp/canary-e2e.XXXXXX)
cd "$work_dir" || finish 95
program=scenarios.py
[ "${CANARY_E2E_MODE:-scenarios}" = demo ] && program=demo.py
say "running $program (scenarios: ${CANARY_E2E_SCENARIOS:-all})"
/usr/bin/python3 -u "$repo/Tests/e2e/$program" --results "$results_dir" --agent "$CANARY_E2E_AGENT" \
    --scenarios "${CANARY_E2E_SCENARIOS:-all}" </dev/null 2>&1 | tee "$results_dir/scenarios.log"
status=${PIPESTATUS[0]}
/usr/bin/python3 "$repo/Tests/e2e/topology.py" down || true
finish "$status"
