#!/usr/bin/env bash
# The e2e scenarios against the container image: the agent runs from the image's root file system as
# deploy/daemonset.yaml runs it (the node-setup init container first, then the agent with the
# DaemonSet's arguments and environment, a read-only root file system, only CAP_NET_ADMIN and
# CAP_NET_RAW, no_new_privs: see Tests/e2e/image_agent.py), in the VM of Tests/e2e/run.sh.
#
#   bash Tests/e2e/image.sh [IMAGE_OUT]
#
# IMAGE_OUT is deploy/build-image.sh's output directory (default image-out, or $CANARY_IMAGE_OUT); its
# rootfs/ is the root file system umoci unpacked from the image archive. Nothing is built here.
# Runs scenarios 2 (the seed canary at weight 10, counted traffic) and 12 (a rolling update: SIGTERM,
# then a new agent adopts the table) unless CANARY_E2E_SCENARIOS says otherwise; results in
# e2e-results/image (or $CANARY_E2E_RESULTS). Every other CANARY_E2E_/CANARY_VM_ setting of run.sh
# applies. Exits as run.sh does.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-${CANARY_IMAGE_OUT:-$repo/image-out}}
rootfs=$(cd "$out" 2>/dev/null && pwd)/rootfs
if [ ! -x "$rootfs/usr/local/bin/canary-agent" ]; then
    echo "image.sh: no image root file system at $rootfs: run deploy/build-image.sh first" >&2
    exit 1
fi

# run.sh runs "$CANARY_E2E_SCRATCH_PATH/debug/canary-agent" and hands that path to the scenarios as the
# agent binary: here that is the launcher that runs the image's agent. Beside the image, since the
# guest sees the host's file system but not its /tmp.
launcher_dir=$(cd "$out" && pwd)/e2e-launcher
mkdir -p "$launcher_dir/debug"
ln -sfn "$repo/Tests/e2e/image_agent.py" "$launcher_dir/debug/canary-agent"

echo "==> the agent from the image: $rootfs ($(CANARY_E2E_IMAGE_ROOTFS=$rootfs "$launcher_dir/debug/canary-agent" --version))"
CANARY_E2E_IMAGE_ROOTFS=$rootfs \
CANARY_E2E_SKIP_BUILD=1 \
CANARY_E2E_SCRATCH_PATH=$launcher_dir \
CANARY_E2E_SCENARIOS=${CANARY_E2E_SCENARIOS:-canary-weight,rolling-update} \
CANARY_E2E_RESULTS=${CANARY_E2E_RESULTS:-$repo/e2e-results/image} \
    bash "$repo/Tests/e2e/run.sh"
