#!/usr/bin/env bash
# Installs everything the build and the VM kernel bench need on a fresh Debian 12 machine that
# already has the Swift toolchain. Idempotent and fast when everything is already there.
#
#   bash Tests/vm/install-deps.sh
#
# Needs root (or sudo) for apt. Installs:
#   - C libraries the package links: libnl-3, libnl-genl-3, libmnl (-dev);
#   - the VM bench: qemu, Debian's kernel (it has IPVS as modules), busybox-static (virtme-ng's
#     initramfs needs it), ipvsadm and the usual network tools used by the kernel tests;
#   - virtme-ng (`vng`) from PyPI, which is not packaged for Debian 12;
#   - the container image's tools (deploy/build-image.sh): mmdebstrap, umoci, binutils (objcopy);
#     kubectl (Debian's kubernetes-client, unless a kubectl is already there) for `kubectl kustomize`.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*"; }

APT_PACKAGES=(
    libnl-3-dev libnl-genl-3-dev libmnl-dev pkg-config
    qemu-system-x86 linux-image-amd64 busybox-static
    ipvsadm iproute2 kmod iptables ipset nftables procps
    python3 python3-pip
    mmdebstrap umoci binutils
)
VIRTME_NG_PIP_SPEC="virtme-ng"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing_apt_packages() {
    local package
    for package in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
            printf '%s\n' "$package"
        fi
    done
}

mapfile -t missing < <(missing_apt_packages)
if [ "${#missing[@]}" -eq 0 ]; then
    log "apt packages: all ${#APT_PACKAGES[@]} present"
else
    log "apt packages missing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
    log "apt packages installed"
fi

# The kernel the VM boots: Debian's, with its modules under /lib/modules/<version>.
if ! compgen -G '/boot/vmlinuz-*' >/dev/null; then
    log "ERROR: no /boot/vmlinuz-* after installing linux-image-amd64" >&2
    exit 1
fi

# virtme-ng. Prefer the python3 first on PATH (pyenv's, where there is one); Debian's own python3
# is "externally managed" (PEP 668), so pip needs --break-system-packages there.
if command -v vng >/dev/null 2>&1 && vng --version >/dev/null 2>&1; then
    log "virtme-ng: $(vng --version 2>&1 | head -n1) at $(command -v vng)"
else
    python=$(command -v python3)
    pip_flags=(--quiet --disable-pip-version-check --root-user-action=ignore)
    if "$python" -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
        pip_flags+=(--break-system-packages)
    fi
    log "installing virtme-ng with $python -m pip"
    as_root "$python" -m pip install "${pip_flags[@]}" "$VIRTME_NG_PIP_SPEC" </dev/null
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
    hash -r
    if ! command -v vng >/dev/null 2>&1; then
        # pip may put scripts in a directory not on PATH (e.g. /usr/local/bin is, ~/.local/bin is not).
        scripts_dir=$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
        log "ERROR: vng installed under $scripts_dir, which is not on PATH" >&2
        exit 1
    fi
    log "virtme-ng: $(vng --version 2>&1 | head -n1) at $(command -v vng)"
fi

# Packaging checks (Tests/packaging/validate.sh): systemd-analyze, from Debian's systemd, and
# kubernetes-validate from PyPI (it brings PyYAML, which the script's other checks use too).
KUBERNETES_VALIDATE_PIP_SPEC="kubernetes-validate==1.37.0"
if ! command -v systemd-analyze >/dev/null 2>&1; then
    log "installing systemd (systemd-analyze)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends systemd </dev/null
fi
log "systemd-analyze: $(systemd-analyze --version | head -n1)"
if command -v kubernetes-validate >/dev/null 2>&1 && kubernetes-validate --version >/dev/null 2>&1; then
    log "kubernetes-validate: $(kubernetes-validate --version 2>&1 | head -n1) at $(command -v kubernetes-validate)"
else
    python=$(command -v python3)
    pip_flags=(--quiet --disable-pip-version-check --root-user-action=ignore)
    if "$python" -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
        pip_flags+=(--break-system-packages)
    fi
    log "installing $KUBERNETES_VALIDATE_PIP_SPEC with $python -m pip"
    as_root "$python" -m pip install "${pip_flags[@]}" "$KUBERNETES_VALIDATE_PIP_SPEC" </dev/null
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
    hash -r
    if ! command -v kubernetes-validate >/dev/null 2>&1; then
        scripts_dir=$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
        log "ERROR: kubernetes-validate installed under $scripts_dir, which is not on PATH" >&2
        exit 1
    fi
    log "kubernetes-validate: $(kubernetes-validate --version 2>&1 | head -n1) at $(command -v kubernetes-validate)"
fi

# kubectl kustomize (Tests/packaging/validate.sh): Debian's kubernetes-client, unless some kubectl is
# already installed (another package's /usr/bin/kubectl would conflict with it).
if command -v kubectl >/dev/null 2>&1; then
    log "kubectl: $(command -v kubectl)"
else
    log "installing kubernetes-client (kubectl)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends kubernetes-client </dev/null
fi

# The end-to-end bench (Tests/e2e): nginx backends in network namespaces (Debian's nginx; the bench
# runs its own instances with their own config and never the system service).
E2E_APT_PACKAGES=(nginx python3-matplotlib)  # python3-matplotlib: the chart of Tests/e2e/report.py
mapfile -t e2e_missing < <(for package in "${E2E_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$package"
done)
if [ "${#e2e_missing[@]}" -eq 0 ]; then
    log "e2e apt packages: all ${#E2E_APT_PACKAGES[@]} present"
else
    log "e2e apt packages missing: ${e2e_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    # policy-rc.d may forbid starting the packaged service (containers): that is fine, it is not used.
    as_root apt-get install -y -qq --no-install-recommends "${e2e_missing[@]}" </dev/null
    log "e2e apt packages installed"
fi
