#!/usr/bin/env bash
# The real-kernel test bench: builds the tests on the host, boots a VM with Debian's kernel (which
# has IPVS) over this machine's own file system, runs the kernel test suites inside it and exits
# non-zero unless every one of them ran and passed.
#
#   bash Tests/vm/run-kernel-tests.sh
#
# Fails when: the build fails; the guest never wrote a result (boot failure, crash, timeout); the
# test run failed; ANY test was skipped inside the VM; no kernel test ran at all.
#
# Environment (all optional):
#   SWIFT_SCRATCH_PATH          swiftpm scratch path (default: .build)
#   CANARY_KERNEL_TEST_FILTER   Swift Testing --filter regex (default: the kernel test targets)
#   CANARY_VM_KERNEL            kernel image to boot (default: the newest /boot/vmlinuz-*)
#   CANARY_VM_MEMORY, CANARY_VM_CPUS   VM size (default: 2G, 2)
#   CANARY_VM_TIMEOUT           seconds before the VM is killed (default: 1500)
#   CANARY_VM_RESULTS           results directory (default: vm-results/run-<time> in the repo)
#   CANARY_VM_PARALLEL=1        let Swift Testing run kernel tests in parallel inside the VM
#   CANARY_*                    every other CANARY_ variable is passed on to the tests in the guest
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

# shellcheck source=Tests/vm/lib.sh
source "$repo/Tests/vm/lib.sh"
vm_tool=run-kernel-tests
scratch=${SWIFT_SCRATCH_PATH:-.build}
filter=${CANARY_KERNEL_TEST_FILTER:-'^(IPVSKernelTests|NodeNetworkTests)\.'}
vm_settings 2G 2 1500
vm_require vng "vng (virtme-ng)"
vm_require python3

# 1. Build on the host: the guest sees the host's file system read-only and only runs the binary.
say "building tests (swift build --build-tests --scratch-path $scratch)…"
build_started=$(date +%s)
swift build --build-tests --scratch-path "$scratch"
bin_path=$(swift build --scratch-path "$scratch" --show-bin-path)
shopt -s nullglob
test_binaries=("$bin_path"/*PackageTests.xctest)
shopt -u nullglob
[ "${#test_binaries[@]}" -eq 1 ] || die "expected one *PackageTests.xctest in $bin_path, found ${#test_binaries[@]}"
test_binary=${test_binaries[0]}
say "built in $(( $(date +%s) - build_started ))s: $test_binary"

# 2. The kernel: Debian's, whose modules (ip_vs and its schedulers) sit under /lib/modules.
vm_find_kernel

# 3. A results directory shared read-write with the guest; the rest of / is read-only there.
if [ -n "${CANARY_VM_RESULTS:-}" ]; then
    results=$CANARY_VM_RESULTS
    mkdir -p "$results"
    rm -f "$results"/{status,status.tmp,guest.log,test-output.txt,events.jsonl,vng.log,guest.env}
else
    results=$(vm_new_run_dir "$repo/vm-results")
fi
results=$(cd "$results" && pwd)

{
    printf 'export CANARY_TEST_BINARY=%q\n' "$test_binary"
    printf 'export CANARY_TEST_FILTER=%q\n' "$filter"
    vm_export_env CANARY_ CANARY_REQUIRE_KERNEL CANARY_TEST_BINARY CANARY_TEST_FILTER
} >"$results/guest.env"

# 4. Boot; the guest writes everything into $results (its console can be lost).
say "booting VM (kernel $kernel_version, $vm_memory, $vm_cpus cpus, timeout ${vm_timeout}s)…"
say "running kernel tests (filter $filter) in the guest; results in $results"
vm_boot "$results" "$repo/Tests/vm/guest.sh"
vm_say_finished

# 5. Judge and report.
if [ -s "$results/vng.log" ]; then
    say "tail of the VM console ($results/vng.log):"
    vm_show_log "$results/vng.log" vm 15
fi
if [ -s "$results/guest.log" ]; then
    say "tail of the guest log ($results/guest.log):"
    vm_show_log "$results/guest.log" guest
else
    say "the guest wrote no log"
fi
# Guest log lines carry the guest's uptime: "guest: [12.34s] started …".
guest_boot=$(sed -n 's/^guest: \[\([0-9.]*s\)\] started .*/\1/p' "$results/guest.log" 2>/dev/null | head -n 1 || true)
guest_timing=$(grep -o 'tests took [0-9]*s' "$results/guest.log" 2>/dev/null || true)
say "timings: VM total ${vm_seconds}s${guest_boot:+, guest script started at uptime $guest_boot}${guest_timing:+, $guest_timing}"
say "summary (results in $results):"
# summarize.py's last line is the plain count line "vm: N passed, N failed, N skipped".
python3 "$repo/Tests/vm/summarize.py" "$results"
