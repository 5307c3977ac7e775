#!/usr/bin/env bash
# Runs INSIDE the VM, as root, started by Benchmarks/perf/run.sh through `vng --exec`.
#
#   bash Benchmarks/perf/guest.sh RESULTS_DIR
#
# RESULTS_DIR is shared read-write with the host (vng --rwdir); the host wrote guest.json there.
# Loads IPVS, runs guest.py (the measurements) and writes back guest.log, raw.jsonl and, last,
# status (its absence means the guest died: the console of a TCG guest can be lost).
set -uo pipefail

results_dir=${1:?usage: guest.sh RESULTS_DIR}
exec >>"$results_dir/guest.log" 2>&1

say() { printf 'guest: [%ss] %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$*"; }
finish() {
    say "exit status $1"
    sync
    printf '%s\n' "$1" >"$results_dir/status.tmp" && mv "$results_dir/status.tmp" "$results_dir/status"
    sync
    exit 0
}

say "started $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {print $2, $3}' /proc/meminfo)"
for module in ip_vs ip_vs_wrr dummy ip_set ip_set_hash_netnet xt_set; do
    modprobe "$module" || { say "modprobe $module failed"; finish 92; }
done
ip link set lo up 2>/dev/null || true
say "$(ipvsadm --version 2>&1)"

python3 "$(dirname "${BASH_SOURCE[0]}")/guest.py" "$results_dir"
finish $?
