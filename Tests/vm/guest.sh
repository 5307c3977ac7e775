#!/usr/bin/env bash
# Runs INSIDE the VM, as root, started by Tests/vm/run-kernel-tests.sh through `vng --exec`.
#
#   bash Tests/vm/guest.sh RESULTS_DIR
#
# RESULTS_DIR is the host directory shared read-write with the guest (vng --rwdir). The host writes
# RESULTS_DIR/guest.env (the test binary, the filter, forwarded CANARY_* variables); this script
# loads the IPVS modules, runs the already-built kernel test binary and writes back:
#   guest.log       everything this script and the tests printed
#   test-output.txt the test binary's own output
#   events.jsonl    Swift Testing's event stream (JSON lines), parsed by the host
#   status          the test binary's exit status, written last: its absence means the guest died
# The rest of the file system is the host's, mounted read-only (with a few writable overlays such
# as /tmp), so swiftpm does no work here: the host has built everything.
set -uo pipefail

results_dir=${1:?usage: guest.sh RESULTS_DIR}
log_file="$results_dir/guest.log"
exec >>"$log_file" 2>&1

say() { printf 'guest: [%ss] %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$*"; }
finish() {
    local status=$1
    say "exit status $status"
    sync
    printf '%s\n' "$status" >"$results_dir/status.tmp" && mv "$results_dir/status.tmp" "$results_dir/status"
    sync
    exit 0
}

# shellcheck source=/dev/null
if ! source "$results_dir/guest.env"; then
    say "cannot read $results_dir/guest.env"
    finish 90
fi
: "${CANARY_TEST_BINARY:?}" "${CANARY_TEST_FILTER:?}"

say "started $(date -u +%FT%TZ)"
say "kernel $(uname -r)"
say "$(ipvsadm --version 2>&1 || echo 'ipvsadm: not found')"
say "memory: $(awk '/MemTotal/ {print $2, $3}' /proc/meminfo), cpus: $(nproc)"

# Debian's kernel has IPVS and its schedulers as modules; the host's /lib/modules is visible here.
required_modules=(ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh ip_vs_mh ip_vs_lc ip_set ip_set_hash_netnet xt_set)
optional_modules=(nf_conntrack sctp)
if [ ! -d "/lib/modules/$(uname -r)" ]; then
    say "no /lib/modules/$(uname -r): install the matching linux-image package on the host"
    finish 91
fi
for module in "${required_modules[@]}"; do
    if ! modprobe "$module"; then
        say "modprobe $module failed"
        finish 92
    fi
done
for module in "${optional_modules[@]}"; do
    modprobe "$module" || say "optional module $module not loaded"
done
say "modules: $(lsmod | awk 'NR > 1 && ($1 ~ /^ip_vs/ || $1 == "nf_conntrack" || $1 == "sctp") {print $1}' | sort | tr '\n' ' ')"
ip link set lo up 2>/dev/null || true

if [ ! -x "$CANARY_TEST_BINARY" ]; then
    say "test binary $CANARY_TEST_BINARY is missing or not executable"
    finish 93
fi

# The kernel-test trait: a failed IPVS probe is a test FAILURE here, never a skip.
export CANARY_REQUIRE_KERNEL=1
# Plain console output in the log files (the host parses the event stream, not the colours).
export NO_COLOR=1

test_arguments=(
    --testing-library swift-testing
    --filter "$CANARY_TEST_FILTER"
    --event-stream-output-path "$results_dir/events.jsonl"
    --event-stream-version 0
)
# One kernel, one IPVS table: run the tests one at a time unless asked otherwise.
if [ "${CANARY_VM_PARALLEL:-0}" != 1 ]; then
    test_arguments+=(--no-parallel)
fi

# Writable working directory for anything the tests write relative to it.
work_dir=$(mktemp -d /tmp/canary-kernel-tests.XXXXXX)
cd "$work_dir" || finish 94

say "running: $CANARY_TEST_BINARY ${test_arguments[*]}"
started=$(date +%s)
"$CANARY_TEST_BINARY" "${test_arguments[@]}" </dev/null 2>&1 | tee "$results_dir/test-output.txt"
status=${PIPESTATUS[0]}
say "tests took $(( $(date +%s) - started ))s"
finish "$status"
