#!/usr/bin/env bash
# canary-agent in a few minutes, on real IPVS: installs what is missing, builds the agent, boots a VM
# with Debian's kernel, puts nginx "pods" at the addresses of systemd/config.example.yaml, starts
# `canary-agent run --config systemd/config.example.yaml`, sends 2,000 connections to each service
# and prints the kernel's table and the measured split per version next to the target.
#
#   bash Tests/e2e/demo.sh
#
# Output also in e2e-results/demo/demo.txt (CANARY_E2E_RESULTS to change it). The full end-to-end
# scenarios are Tests/e2e/run.sh.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
say() { printf '==> %s\n' "$*"; }

say "canary-agent demo: build, boot a VM with a real IPVS kernel, run the agent from the example config, measure the split"
say "checking the packages the bench needs (Tests/vm/install-deps.sh)…"
bash "$repo/Tests/vm/install-deps.sh" | sed 's/^/    /'
export CANARY_E2E_MODE=demo
export CANARY_E2E_RESULTS=${CANARY_E2E_RESULTS:-$repo/e2e-results/demo}
export CANARY_VM_TIMEOUT=${CANARY_VM_TIMEOUT:-900}
exec bash "$repo/Tests/e2e/run.sh"
