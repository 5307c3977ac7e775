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

# shellcheck source=Tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
guest_init "${1:?usage: guest.sh RESULTS_DIR}"
guest_source_env
: "${CANARY_TEST_BINARY:?}" "${CANARY_TEST_FILTER:?}"
guest_started
# Debian's kernel has IPVS and its schedulers as modules; the host's /lib/modules is visible here.
guest_load_modules -- nf_conntrack sctp

if [ ! -x "$CANARY_TEST_BINARY" ]; then
    say "test binary $CANARY_TEST_BINARY is missing or not executable"
    guest_finish 93
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
cd "$work_dir" || guest_finish 94

say "running: $CANARY_TEST_BINARY ${test_arguments[*]}"
started=$(date +%s)
"$CANARY_TEST_BINARY" "${test_arguments[@]}" </dev/null 2>&1 | tee "$results_dir/test-output.txt"
status=${PIPESTATUS[0]}
say "tests took $(( $(date +%s) - started ))s"
guest_finish "$status"
