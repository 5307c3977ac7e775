# Shell functions shared by the scripts that boot the VM bench and by the scripts they run inside it:
#   host:  Tests/vm/run-kernel-tests.sh, Tests/e2e/run.sh (and demo.sh), Benchmarks/perf/run.sh
#   guest: Tests/vm/guest.sh, Tests/e2e/guest.sh, Benchmarks/perf/guest.sh
# Source it (`source "$repo/Tests/vm/lib.sh"`); it runs nothing by itself.
#
# The VM: Debian's kernel (IPVS and its schedulers as modules under /lib/modules), booted by
# virtme-ng over this machine's file system, which the guest sees read-only except for one results
# directory shared read-write (--rwdir). The guest's console can be lost, so the guest writes
# everything there: guest.log, its own files and, last, `status` (its absence means the guest died).
#
# Host:  vm_require CMD [NAME]        die unless CMD is on PATH
#        vm_settings MEMORY CPUS TIMEOUT   vm_memory, vm_cpus, vm_timeout (CANARY_VM_* override)
#        vm_find_kernel               kernel, kernel_version (CANARY_VM_KERNEL or the newest /boot/vmlinuz-*)
#        vm_new_run_dir PARENT        a fresh PARENT/run-<time>-XXXX, keeping the last five
#        vm_export_env PREFIX [SKIP…] "export NAME=VALUE" lines of the environment, for guest.env
#        vm_boot RESULTS SCRIPT       boot, run `bash SCRIPT RESULTS` inside; vng_status, vm_seconds
#        vm_say_finished              "VM finished in …" or "VM TIMED OUT after …"
#        vm_show_log FILE LABEL [N]   the last N (40) non-blank lines of FILE, indented
#        vm_guest_status RESULTS      the guest's exit status, or "missing"
# Guest: guest_init RESULTS           output into RESULTS/guest.log; `say` prefixes the guest's uptime
#        guest_finish STATUS          writes RESULTS/status, last, and exits
#        guest_source_env             sources RESULTS/guest.env (the host's settings)
#        guest_started                the kernel, ipvsadm, memory and cpus, into the log
#        guest_load_modules [EXTRA…] [-- OPTIONAL…]   VM_MODULES and EXTRA (a failure ends the
#                                     guest), OPTIONAL (a failure is logged); lo up
# Both:  say TEXT, die TEXT (prefixed with $vm_tool)

vm_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
vm_repo=$(cd "$vm_lib_dir/../.." && pwd)
vm_tool=${vm_tool:-vm}
vm_side=host

# The modules every guest loads: IPVS with every scheduler the agent knows, and the ipset match the
# agent's masquerade rules use.
VM_MODULES=(ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh ip_vs_mh ip_vs_lc ip_set ip_set_hash_netnet xt_set)

say() {
    if [ "$vm_side" = guest ]; then
        printf 'guest: [%ss] %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$*"
    else
        printf '==> %s\n' "$*"
    fi
}
die() { printf '%s: %s\n' "$vm_tool" "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------ host

vm_require() {
    command -v "$1" >/dev/null 2>&1 || die "${2:-$1} not found: run Tests/vm/install-deps.sh"
}

vm_settings() {
    vm_memory=${CANARY_VM_MEMORY:-$1}
    vm_cpus=${CANARY_VM_CPUS:-$2}
    vm_timeout=${CANARY_VM_TIMEOUT:-$3}
}

vm_find_kernel() {
    kernel=${CANARY_VM_KERNEL:-$(find /boot -maxdepth 1 -name 'vmlinuz-*' -print | sort -V | tail -n 1)}
    [ -n "$kernel" ] && [ -r "$kernel" ] || die "no readable kernel image in /boot: run Tests/vm/install-deps.sh"
    kernel_version=${kernel##*/vmlinuz-}
    [ -d "/lib/modules/$kernel_version" ] || die "no /lib/modules/$kernel_version for $kernel"
}

vm_new_run_dir() {
    local parent=$1 run old
    mkdir -p "$parent"
    run=$(mktemp -d "$parent/run-$(date -u +%Y%m%d-%H%M%S)-XXXX")
    find "$parent" -mindepth 1 -maxdepth 1 -type d -name 'run-*' -print | sort | head -n -5 |
        while read -r old; do rm -rf -- "$old"; done
    printf '%s\n' "$run"
}

vm_export_env() {
    local prefix=$1 name skip
    shift
    for name in $(compgen -e); do
        [[ $name == "$prefix"* ]] || continue
        for skip in "$@"; do [ "$name" = "$skip" ] && continue 2; done
        printf 'export %s=%q\n' "$name" "${!name}"
    done
}

# KVM is present on these machines but hangs: always emulate (--disable-kvm).
vm_boot() {
    local results=$1 script=$2 started
    started=$(date +%s)
    vng_status=0
    timeout --kill-after=30 "$vm_timeout" \
        vng --run "$kernel" --disable-kvm --memory "$vm_memory" --cpus "$vm_cpus" --user root \
            --rwdir "$results" --exec "bash $(printf '%q' "$script") $(printf '%q' "$results")" \
            </dev/null >"$results/vng.log" 2>&1 || vng_status=$?
    vm_seconds=$(( $(date +%s) - started ))
}

vm_say_finished() {
    if [ "$vng_status" -eq 124 ] || [ "$vng_status" -eq 137 ]; then
        say "VM TIMED OUT after ${vm_seconds}s (vng status $vng_status)"
    else
        say "VM finished in ${vm_seconds}s (vng status $vng_status)"
    fi
}

vm_show_log() {
    { grep -v '^[[:space:]]*$' "$1" 2>/dev/null || true; } | tail -n "${3:-40}" | sed "s/^/  $2| /"
}

vm_guest_status() { cat "$1/status" 2>/dev/null || echo missing; }

# ------------------------------------------------------------------------------------ guest

guest_init() {
    results_dir=$1
    vm_side=guest
    exec >>"$results_dir/guest.log" 2>&1
}

guest_finish() {
    say "exit status $1"
    sync
    printf '%s\n' "$1" >"$results_dir/status.tmp" && mv "$results_dir/status.tmp" "$results_dir/status"
    sync
    exit 0
}

guest_source_env() {
    # shellcheck source=/dev/null
    source "$results_dir/guest.env" || { say "cannot read $results_dir/guest.env"; guest_finish 90; }
}

guest_started() {
    say "started $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {print $2, $3}' /proc/meminfo)"
    say "$(ipvsadm --version 2>&1 || echo 'ipvsadm: not found')"
}

guest_load_modules() {
    local module optional=0 loaded wanted=()
    if [ ! -d "/lib/modules/$(uname -r)" ]; then
        say "no /lib/modules/$(uname -r): install the matching linux-image package on the host"
        guest_finish 91
    fi
    for module in "${VM_MODULES[@]}" "$@"; do
        if [ "$module" = -- ]; then
            optional=1
        elif [ "$optional" = 1 ]; then
            modprobe "$module" 2>/dev/null || say "optional module $module not loaded"
        elif ! modprobe "$module"; then
            say "modprobe $module failed"
            guest_finish 92
        fi
        [ "$module" = -- ] || wanted+=("$module")
    done
    loaded=" $(lsmod | awk 'NR > 1 {print $1}' | tr '\n' ' ')"
    say "modules: $(for module in "${wanted[@]}"; do [[ $loaded == *" $module "* ]] && printf '%s ' "$module"; done)"
    ip link set lo up 2>/dev/null || true
}
