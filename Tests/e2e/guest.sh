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

# shellcheck source=Tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../vm/lib.sh"
guest_init "${1:?usage: guest.sh RESULTS_DIR}"
guest_source_env
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
repo=$vm_repo

guest_started
# The agent's masquerade rules (iptables-restore) need the optional ones; the kernel would load most on demand.
guest_load_modules nf_conntrack veth bridge dummy -- \
    iptable_nat iptable_filter xt_ipvs xt_comment xt_mark xt_MASQUERADE nf_nat ip_tables nf_tables nft_compat
mkdir -p /run/netns
command -v nginx >/dev/null || { say "nginx is missing: run Tests/vm/install-deps.sh on the host"; guest_finish 93; }
if [ "${CANARY_E2E_SCENARIOS:-all}" != selftest ] && [ ! -x "${CANARY_E2E_AGENT:-}" ]; then
    say "agent binary ${CANARY_E2E_AGENT:-(unset)} missing"
    guest_finish 94
fi

work_dir=$(mktemp -d /tmp/canary-e2e.XXXXXX)
cd "$work_dir" || guest_finish 95
program=scenarios.py
[ "${CANARY_E2E_MODE:-scenarios}" = demo ] && program=demo.py
say "running $program (scenarios: ${CANARY_E2E_SCENARIOS:-all})"
/usr/bin/python3 -u "$repo/Tests/e2e/$program" --results "$results_dir" --agent "$CANARY_E2E_AGENT" \
    --scenarios "${CANARY_E2E_SCENARIOS:-all}" </dev/null 2>&1 | tee "$results_dir/scenarios.log"
status=${PIPESTATUS[0]}
/usr/bin/python3 "$repo/Tests/e2e/topology.py" down || true
guest_finish "$status"
