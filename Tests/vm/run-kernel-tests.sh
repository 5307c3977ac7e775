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

scratch=${SWIFT_SCRATCH_PATH:-.build}
filter=${CANARY_KERNEL_TEST_FILTER:-'^(IPVSKernelTests|NodeNetworkTests)\.'}
memory=${CANARY_VM_MEMORY:-2G}
cpus=${CANARY_VM_CPUS:-2}
vm_timeout=${CANARY_VM_TIMEOUT:-1500}

say() { printf '==> %s\n' "$*"; }
die() { printf 'run-kernel-tests: %s\n' "$*" >&2; exit 1; }

command -v vng >/dev/null 2>&1 || die "vng (virtme-ng) not found: run Tests/vm/install-deps.sh"
command -v python3 >/dev/null 2>&1 || die "python3 not found: run Tests/vm/install-deps.sh"

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
if [ -n "${CANARY_VM_KERNEL:-}" ]; then
    kernel=$CANARY_VM_KERNEL
else
    kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*' -print | sort -V | tail -n 1)
fi
if [ -z "$kernel" ] || [ ! -r "$kernel" ]; then
    die "no readable kernel image in /boot: run Tests/vm/install-deps.sh"
fi
kernel_version=${kernel##*/vmlinuz-}
[ -d "/lib/modules/$kernel_version" ] || die "no /lib/modules/$kernel_version for $kernel"

# 3. A results directory shared read-write with the guest; the rest of / is read-only there.
if [ -n "${CANARY_VM_RESULTS:-}" ]; then
    results=$CANARY_VM_RESULTS
    mkdir -p "$results"
    rm -f "$results"/{status,status.tmp,guest.log,test-output.txt,events.jsonl,vng.log,guest.env}
else
    mkdir -p "$repo/vm-results"
    results=$(mktemp -d "$repo/vm-results/run-$(date -u +%Y%m%d-%H%M%S)-XXXX")
    # Keep the last few runs only.
    find "$repo/vm-results" -mindepth 1 -maxdepth 1 -type d -name 'run-*' -print | sort | head -n -5 |
        while read -r old; do rm -rf -- "$old"; done
fi
results=$(cd "$results" && pwd)

{
    printf 'export CANARY_TEST_BINARY=%q\n' "$test_binary"
    printf 'export CANARY_TEST_FILTER=%q\n' "$filter"
    for name in $(compgen -e); do
        case $name in
            CANARY_REQUIRE_KERNEL | CANARY_TEST_BINARY | CANARY_TEST_FILTER) ;;
            CANARY_*) printf 'export %s=%q\n' "$name" "${!name}" ;;
        esac
    done
} >"$results/guest.env"

# 4. Boot. KVM is present on these machines but hangs: always emulate (--disable-kvm).
#    The guest's console can be lost, so the guest writes everything into $results.
guest_command="bash $(printf '%q' "$repo/Tests/vm/guest.sh") $(printf '%q' "$results")"
say "booting VM (kernel $kernel_version, $memory, $cpus cpus, timeout ${vm_timeout}s)…"
say "running kernel tests (filter $filter) in the guest; results in $results"
vm_started=$(date +%s)
set +e
timeout --kill-after=30 "$vm_timeout" \
    vng --run "$kernel" --disable-kvm --memory "$memory" --cpus "$cpus" --user root \
        --rwdir "$results" --exec "$guest_command" </dev/null >"$results/vng.log" 2>&1
vng_status=$?
set -e
vm_seconds=$(( $(date +%s) - vm_started ))
if [ "$vng_status" -eq 124 ] || [ "$vng_status" -eq 137 ]; then
    say "VM TIMED OUT after ${vm_seconds}s (vng status $vng_status)"
else
    say "VM finished in ${vm_seconds}s (vng status $vng_status)"
fi

# 5. Judge and report.
if [ -s "$results/vng.log" ]; then
    say "tail of the VM console ($results/vng.log):"
    tail -n 15 "$results/vng.log" | sed 's/^/  vm| /'
fi
if [ -s "$results/guest.log" ]; then
    say "tail of the guest log ($results/guest.log):"
    grep -v '^[[:space:]]*$' "$results/guest.log" | tail -n 40 | sed 's/^/  guest| /'
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
