#!/usr/bin/env bash
# Runs INSIDE the VM, as root, started by Benchmarks/perf/run.sh through `vng --exec`.
#
#   bash Benchmarks/perf/guest.sh RESULTS_DIR
#
# RESULTS_DIR is shared read-write with the host (vng --rwdir); the host wrote guest.json there.
# Loads IPVS, runs guest.py (the measurements) and writes back guest.log, raw.jsonl and, last,
# status (its absence means the guest died: the console of a TCG guest can be lost).
set -uo pipefail

# shellcheck source=Tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../Tests/vm/lib.sh"
guest_init "${1:?usage: guest.sh RESULTS_DIR}"
guest_started
guest_load_modules dummy

python3 "$(dirname "${BASH_SOURCE[0]}")/guest.py" "$results_dir"
guest_finish $?
