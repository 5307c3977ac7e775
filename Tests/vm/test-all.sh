#!/usr/bin/env bash
# Runs ALL the tests: every suite on the host (`swift test`; the kernel suites skip there, naming
# the reason), the packaging checks (Tests/packaging/validate.sh), the kernel suites inside a VM with
# a real IPVS kernel (run-kernel-tests.sh), then the end-to-end scenarios with real traffic in a VM
# (Tests/e2e/run.sh). Exits non-zero if any part fails. Install what it needs first with
# Tests/vm/install-deps.sh.
#
#   bash Tests/vm/test-all.sh
#
# SWIFT_SCRATCH_PATH (default .build) is used by both steps, so the VM step reuses the build.
# CANARY_HOST_TEST_TIMEOUT (default 2700 s) bounds `swift test` on the host, build included.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo" || exit 1
scratch=${SWIFT_SCRATCH_PATH:-.build}
export SWIFT_SCRATCH_PATH=$scratch

say() { printf '==> %s\n' "$*"; }

# A hung host test must not eat the whole CI budget: bound it (build included).
host_timeout=${CANARY_HOST_TEST_TIMEOUT:-2700}

say "host: swift test --scratch-path $scratch (kernel suites skip here: this host has no IPVS)"
host_started=$(date +%s)
timeout --kill-after=30 "$host_timeout" swift test --scratch-path "$scratch" </dev/null
host_status=$?
if [ "$host_status" -eq 124 ] || [ "$host_status" -eq 137 ]; then
    say "host tests TIMED OUT after ${host_timeout}s"
fi
host_seconds=$(( $(date +%s) - host_started ))
say "host tests: exit status $host_status after ${host_seconds}s"

say "packaging: Tests/packaging/validate.sh (manifests, systemd unit, example config)"
bash "$repo/Tests/packaging/validate.sh" </dev/null
packaging_status=$?

# The stand-in API server the end-to-end bench runs against must behave like kube-apiserver (Gateway
# API discovery, generation, the status subresource, schema validation, conflicts): its own tests.
say "stand-in API server: python3 -m unittest test_apiserver (Tests/e2e)"
(cd "$repo/Tests/e2e" && python3 -m unittest -q test_apiserver </dev/null)
apiserver_status=$?
[ "$apiserver_status" -ne 0 ] && packaging_status=$apiserver_status

# The VM run goes ahead even when the host failed: one run tells about both.
vm_started=$(date +%s)
vm_output=$(mktemp)
trap 'rm -f "$vm_output"' EXIT
bash "$repo/Tests/vm/run-kernel-tests.sh" 2>&1 | tee "$vm_output"
vm_status=${PIPESTATUS[0]}
vm_seconds=$(( $(date +%s) - vm_started ))

# End to end: the ten scenarios with real traffic in a VM (Tests/e2e/run.sh), with the agent the
# steps above built. Report: e2e-results/report.md and report.png (CANARY_E2E_RESULTS moves it).
e2e_started=$(date +%s)
say "end to end: Tests/e2e/run.sh (report in ${CANARY_E2E_RESULTS:-e2e-results}/report.md)"
CANARY_E2E_SCRATCH_PATH=$scratch CANARY_E2E_SKIP_BUILD=1 bash "$repo/Tests/e2e/run.sh" </dev/null
e2e_status=$?
e2e_seconds=$(( $(date +%s) - e2e_started ))

say "host tests: exit $host_status (${host_seconds}s); packaging: exit $packaging_status; VM kernel tests: exit $vm_status (${vm_seconds}s); end to end: exit $e2e_status (${e2e_seconds}s)"
if [ "$host_status" -ne 0 ] || [ "$packaging_status" -ne 0 ] || [ "$vm_status" -ne 0 ] || [ "$e2e_status" -ne 0 ]; then
    [ "$host_status" -ne 0 ] && say "FAILED: host tests"
    [ "$packaging_status" -ne 0 ] && say "FAILED: packaging checks"
    [ "$vm_status" -ne 0 ] && say "FAILED: VM kernel tests"
    [ "$e2e_status" -ne 0 ] && say "FAILED: end-to-end scenarios (see ${CANARY_E2E_RESULTS:-e2e-results}/report.md)"
    grep '^vm: [0-9]* passed, ' "$vm_output" | tail -n 1
    exit 1
fi
say "all tests passed"
# Last line, plain: the VM's counts ("vm: N passed, N failed, N skipped").
grep '^vm: [0-9]* passed, ' "$vm_output" | tail -n 1
