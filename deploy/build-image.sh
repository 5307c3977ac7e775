#!/usr/bin/env bash
# Builds canary-agent's container image, offline, from Debian's packages and the agent's release
# build, with Debian's own tools: mmdebstrap makes the root file system, umoci packs it into an OCI
# image archive. This is the canonical way the image is built (CI runs it on a fresh clone); there is
# no Containerfile. Needs root (mmdebstrap's root mode, umoci unpack), the Swift toolchain, and
# Debian's mmdebstrap, umoci and python3 (`bash Tests/vm/install-deps.sh` installs them).
#
#   bash deploy/build-image.sh [--output DIR] [--revision REV] [--repository NAME]
#
#   --output DIR        where the image goes (default image-out, or $CANARY_IMAGE_OUT; git-ignored)
#   --revision REV      the commit to build (default HEAD). Always a commit, never the working tree:
#                       the image's revision label and `canary-agent --version` name exactly what is in
#                       it. Uncommitted changes are left out (with a warning).
#   --repository NAME   the image name inside the archive (default canary-agent); the tag is always
#                       the version in Sources/canary-agent/BuildInfo.swift
#
# Writes into DIR:
#   canary-agent-VERSION.oci.tar   the image, an OCI image layout in a tar ("oci-archive");
#                                  push it with skopeo: skopeo copy
#                                  oci-archive:DIR/canary-agent-VERSION.oci.tar:VERSION
#                                  docker://REGISTRY/canary-agent:VERSION (or `podman load -i` it)
#   oci/                           the same layout, unpacked (what the archive holds)
#   rootfs/                        the image's root file system, unpacked from the archive by umoci
#                                  (Tests/e2e/image.sh runs the agent from it in the VM)
#   packages.tsv                   the Debian packages in the image: name, version, architecture
#   sbom.spdx.json                 SPDX 2.3: those packages, canary-agent, and the Swift packages
#                                  linked into it (written here from dpkg-query and Package.resolved:
#                                  bookworm has no SBOM tool)
#   image.md                       the report: sizes against the goal, contents, build times
#   canary-agent.debug             the agent's debug information and symbols (not in the image)
#   config.json                    the image's OCI config (entrypoint, cmd, labels)
# and copies image.md to Benchmarks/results/image.md (or to $CANARY_IMAGE_REPORT; set empty, no copy).
#
# Environment (optional): CANARY_IMAGE_SOURCE (the source label; default the origin remote's URL),
# CANARY_IMAGE_SCRATCH (default .build-image: the source export and the
# SwiftPM scratch path, kept between runs so a rebuild is incremental), CANARY_IMAGE_MIRROR (an apt
# sources file or mirror URL for mmdebstrap; default: this machine's own Debian sources),
# CANARY_IMAGE_SIZE_GOAL_MB (60, compressed).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

say() { printf 'build-image: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

out=${CANARY_IMAGE_OUT:-image-out}
revision_arg=HEAD
repository=canary-agent
while [ $# -gt 0 ]; do
    case $1 in
        --output) out=${2:?--output needs a directory}; shift 2 ;;
        --output=*) out=${1#*=}; shift ;;
        --revision) revision_arg=${2:?--revision needs a commit}; shift 2 ;;
        --revision=*) revision_arg=${1#*=}; shift ;;
        --repository) repository=${2:?--repository needs a name}; shift 2 ;;
        --repository=*) repository=${1#*=}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
scratch=${CANARY_IMAGE_SCRATCH:-.build-image}
report_copy=${CANARY_IMAGE_REPORT-Benchmarks/results/image.md}
size_goal_mb=${CANARY_IMAGE_SIZE_GOAL_MB:-60}
suite=bookworm

# --- Tools ---------------------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap's root mode and umoci unpack need it)"
for dir in /opt/swift/usr/bin; do
    [ -d "$dir" ] && [[ ":$PATH:" != *":$dir:"* ]] && PATH="$PATH:$dir"
done
missing=()
for tool in git swift mmdebstrap umoci python3 dpkg-query tar gzip objcopy chroot unshare; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ "${#missing[@]}" -eq 0 ] || die "missing: ${missing[*]} (bash Tests/vm/install-deps.sh installs them)"
if [ -z "${CANARY_IMAGE_MIRROR:-}" ]; then
    for candidate in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        if [ -s "$candidate" ] && grep -q "$suite" "$candidate"; then CANARY_IMAGE_MIRROR=$candidate; break; fi
    done
fi
[ -n "${CANARY_IMAGE_MIRROR:-}" ] || die "no Debian $suite sources on this machine: set CANARY_IMAGE_MIRROR"

# --- 1. The source: one commit, exported beside the repository -----------------------------------
revision=$(git rev-parse --verify "$revision_arg^{commit}") || die "$revision_arg is not a commit"
if [ "$revision_arg" = HEAD ] && [ -n "$(git status --porcelain --untracked-files=no -- Package.swift Sources)" ]; then
    say "warning: uncommitted changes in Package.swift or Sources/ are NOT in the image (it is built from $revision)"
fi
exported_version=$(git show "$revision:Sources/canary-agent/BuildInfo.swift" 2>/dev/null \
    | sed -n 's/^ *static let version = "\([^"]*\)".*/\1/p') || true
[ -n "$exported_version" ] || die "$revision has no version in Sources/canary-agent/BuildInfo.swift"
version=$exported_version
# The commit timestamp: the image's creation time and every file's time, so the same commit gives
# the same layer (mmdebstrap honours SOURCE_DATE_EPOCH; the Debian packages are those of the day).
epoch=$(git show -s --format=%ct "$revision")
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
# The source label: CANARY_IMAGE_SOURCE, else the clone's origin remote, else "unknown" (no URL is made up).
source_url=${CANARY_IMAGE_SOURCE:-$(git config --get remote.origin.url 2>/dev/null || true)}
case $source_url in ""|/*|file:*) source_url=unknown ;; esac
tag=$version
archive_name=$repository-$version.oci.tar
say "image $repository:$tag from $revision (commit time $created)"

mkdir -p "$scratch" "$out"
scratch=$(cd "$scratch" && pwd)
out=$(cd "$out" && pwd)
src=$scratch/src
# A private index, so unchanged files keep their timestamps and the rebuild is incremental; the
# repository's own index and working tree are not touched.
mkdir -p "$src"
GIT_INDEX_FILE=$scratch/src.index git --work-tree="$src" read-tree --reset -u "$revision"

declare -A seconds
step_start() { step_started=$(date +%s); }
step_end() { seconds[$1]=$(( $(date +%s) - step_started )); say "$1: ${seconds[$1]}s"; }

# --- 2. The agent: release build, Swift's runtime linked in statically ---------------------------
build_kind="from scratch"
[ -d "$scratch/release/release" ] && build_kind="incremental: $scratch kept from an earlier run"
step_start
say "swift build -c release --product canary-agent --static-swift-stdlib (scratch $scratch/release, $build_kind)…"
swift build -c release --product canary-agent --static-swift-stdlib \
    --package-path "$src" --scratch-path "$scratch/release" >&2
built=$(swift build -c release --show-bin-path --package-path "$src" --scratch-path "$scratch/release")/canary-agent
[ -x "$built" ] || die "no binary at $built"
step_end "swift build (release)"
binary=$scratch/canary-agent
# Stripped (the static Swift runtime, Foundation's ICU data, BoringSSL: 150 MB with debug information,
# 80 MB without it or the symbol table), with the debug information and symbols beside the image in
# canary-agent.debug (a GNU debug link points there: gdb, or llvm-symbolizer for a crash's addresses).
# Then the revision stamped in (Sources/canary-agent/BuildInfo.swift), checked through --version.
objcopy --only-keep-debug "$built" "$out/canary-agent.debug"
objcopy --strip-all --add-gnu-debuglink="$out/canary-agent.debug" "$built" "$binary.tmp"
python3 deploy/stamp-revision.py "$binary.tmp" "$revision"
mv "$binary.tmp" "$binary"
expected_version="$version (revision $revision)"
actual_version=$("$binary" --version) || die "$binary --version failed"
[ "$actual_version" = "$expected_version" ] \
    || die "$binary --version says '$actual_version', expected '$expected_version'"
say "canary-agent --version: $actual_version"

# --- 3. The root file system: Debian's packages ---------------------------------------------------
# --variant=essential: Debian's Essential set (a shell and coreutils, for the node-setup init
# container's script and for a person debugging; dpkg, so the package database stays for scanners;
# perl-base, which debconf and so ca-certificates need) with no apt. The packages, and why:
#   libnl-3-200, libnl-genl-3-200, libmnl0: the C libraries the binary links (IPVS over generic
#     netlink, rtnetlink for canary0); libstdc++6, which the static Swift runtime still links;
#   iptables: iptables-restore for the masquerade chains; ipset: the hairpin set they match;
#   kmod: modprobe, for the node-setup init container;
#   ipvsadm: to look at the table by hand (kubectl exec ... -- ipvsadm -Ln);
#   ca-certificates: to reach an API server given by --kubeconfig with a public CA.
# The merged-usr hook makes /bin -> usr/bin without the usrmerge package (which pulls in Perl).
# Documentation, manual pages, locales out (the copyright files stay); apt's lists and caches out;
# glibc's iconv modules (gconv, 8 MB) out: nothing in the image converts character sets (the agent's
# text is UTF-8 through Swift and ICU). dpkg's path-exclude keeps the package database true.
# The DaemonSet's mount points are in the image (/usr/lib/modules, /run/xtables.lock), so the root file
# system can be mounted read-only before the volumes go on it.
packages=libnl-3-200,libnl-genl-3-200,libmnl0,libstdc++6,iptables,ipset,kmod,ipvsadm,ca-certificates
rootfs_dir=$scratch/rootfs
rootfs_tar=$scratch/rootfs.tar
packages_tsv=$out/packages.tsv
step_start
say "mmdebstrap --variant=essential $suite (+ $packages), sources from $CANARY_IMAGE_MIRROR (log: $scratch/mmdebstrap.log)…"
rm -rf "$rootfs_dir"
if ! SOURCE_DATE_EPOCH=$epoch mmdebstrap --variant=essential --mode=root --format=directory --skip=output/dev \
    --include="$packages" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/share/bash-completion/*' \
    --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*' \
    --customize-hook="install -D -m 0755 '$binary' \"\$1/usr/local/bin/canary-agent\"" \
    --customize-hook="dpkg-query --admindir=\"\$1/var/lib/dpkg\" -W -f='\${Package}\t\${Version}\t\${Architecture}\t\${Installed-Size}\n' | LC_ALL=C sort >'$packages_tsv'" \
    "$suite" "$rootfs_dir" "$CANARY_IMAGE_MIRROR" >"$scratch/mmdebstrap.log" 2>&1; then
    tail -n 30 "$scratch/mmdebstrap.log" >&2
    die "mmdebstrap failed (log: $scratch/mmdebstrap.log)"
fi
# What mmdebstrap leaves for apt (the image has none), and the files of this build machine or run.
rm -rf "$rootfs_dir"/etc/apt "$rootfs_dir"/var/lib/apt "$rootfs_dir"/var/cache/apt \
    "$rootfs_dir"/var/cache/debconf/*-old "$rootfs_dir"/var/lib/dpkg/*-old "$rootfs_dir"/var/log/* \
    "$rootfs_dir"/etc/machine-id "$rootfs_dir"/etc/hostname "$rootfs_dir"/etc/resolv.conf "$rootfs_dir"/dev/*
# The mount points (after mmdebstrap, which empties /run last).
mkdir -p "$rootfs_dir"/var/log "$rootfs_dir"/run "$rootfs_dir"/dev "$rootfs_dir"/proc "$rootfs_dir"/sys \
    "$rootfs_dir"/tmp "$rootfs_dir"/usr/lib/modules
chmod 1777 "$rootfs_dir"/tmp
install -m 0600 /dev/null "$rootfs_dir"/run/xtables.lock
# One layer, in a tar with fixed order, owners and times (the same commit gives the same layer, as
# far as Debian's archive of the day allows).
tar --sort=name --mtime="@$epoch" --clamp-mtime --numeric-owner --xattrs --xattrs-include='security.capability' \
    -C "$rootfs_dir" -cf "$rootfs_tar" .
step_end "mmdebstrap"

# --- 4. The OCI image: one layer, the config, the archive ---------------------------------------
step_start
layout=$out/oci
rm -rf "$layout" "$out/rootfs" "$out/bundle"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci raw add-layer --image "$layout:$tag" --history.created "$created" \
    --history.created_by "deploy/build-image.sh: mmdebstrap --variant=essential $suite + $packages + canary-agent" \
    "$rootfs_tar"
labels=(
    "org.opencontainers.image.title=canary-agent"
    "org.opencontainers.image.description=Kubernetes node agent: exact stable/canary traffic split with IPVS"
    "org.opencontainers.image.version=$version"
    "org.opencontainers.image.revision=$revision"
    "org.opencontainers.image.source=$source_url"
    "org.opencontainers.image.created=$created"
    "org.opencontainers.image.base.name=debian:$suite (mmdebstrap --variant=essential)"
)
label_args=()
for label in "${labels[@]}"; do label_args+=(--config.label "$label"); done
umoci config --image "$layout:$tag" --no-history --created "$created" --author "deploy/build-image.sh" \
    --architecture amd64 --os linux \
    --config.entrypoint /usr/local/bin/canary-agent --config.cmd run \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.workingdir / --config.stopsignal SIGTERM \
    --manifest.annotation "org.opencontainers.image.version=$version" \
    --manifest.annotation "org.opencontainers.image.revision=$revision" \
    "${label_args[@]}"
umoci gc --layout "$layout"
# The archive: the layout in a tar with fixed owners and times (what skopeo and podman read as
# oci-archive:FILE).
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$out/$archive_name.tmp" .
mv "$out/$archive_name.tmp" "$out/$archive_name"
# The root file system as a runtime sees it: unpacked from the image by umoci, not from mmdebstrap.
umoci unpack --image "$layout:$tag" "$out/bundle" >/dev/null
mv "$out/bundle/rootfs" "$out/rootfs"
python3 - "$out/bundle/config.json" "$layout" "$tag" "$out/config.json" <<'EOF'
# The image's own config blob (not umoci's runtime config): index -> manifest -> config.
import json, os, sys
_, _, layout, tag, target = sys.argv
def blob(digest):
    algorithm, value = digest.split(":")
    return os.path.join(layout, "blobs", algorithm, value)
index = json.load(open(os.path.join(layout, "index.json")))
manifest_descriptor = next(m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
manifest = json.load(open(blob(manifest_descriptor["digest"])))
json.dump(json.load(open(blob(manifest["config"]["digest"]))), open(target, "w"), indent=2, sort_keys=True)
EOF
rm -rf "$out/bundle" "$out"/*.mtree
step_end "umoci (pack, unpack)"

# --- 5. Checks on what the image holds -----------------------------------------------------------
rootfs=$out/rootfs
problems=()
# A command in the image, with /proc (a static Swift binary reads its arguments from /proc/self/cmdline).
in_image() {
    unshare --mount --propagation private -- /bin/sh -c 'mount --rbind /proc "$0/proc" && exec chroot "$0" "$@"' "$rootfs" "$@"
}
[ -x "$rootfs/usr/local/bin/canary-agent" ] || problems+=("no /usr/local/bin/canary-agent")
for tool in cc gcc clang swift swiftc ld as make apt apt-get python3; do
    for dir in usr/bin usr/sbin usr/local/bin; do
        [ -e "$rootfs/$dir/$tool" ] && problems+=("/$dir/$tool is in the image")
    done
done
for dir in usr/share/man usr/share/locale var/lib/apt/lists; do
    if [ -d "$rootfs/$dir" ] && [ -n "$(find "$rootfs/$dir" -type f -print -quit)" ]; then problems+=("/$dir has files"); fi
done
for tool in /usr/sbin/ipvsadm /usr/sbin/iptables-restore /usr/sbin/ipset /usr/sbin/modprobe /bin/sh; do
    [ -e "$rootfs$tool" ] || problems+=("$tool is missing")
done
# The image's binary, run in the image: every library it links is there, and it names its revision.
in_image_version=$(in_image /usr/local/bin/canary-agent --version 2>&1) || problems+=("canary-agent --version in the image: $in_image_version")
[ "$in_image_version" = "$expected_version" ] || problems+=("in the image, --version says '$in_image_version'")
# (The other tools: exit 127 is the loader's "cannot run"; ipvsadm needs a kernel with IPVS to say more.)
for tool in "/usr/sbin/ipvsadm -h" "/usr/sbin/iptables-restore --version" "/usr/sbin/ipset --version" "/usr/sbin/modprobe --version"; do
    status=0
    in_image $tool >/dev/null 2>&1 || status=$?
    [ "$status" -ne 127 ] || problems+=("'$tool' does not run in the image")
done
# The archive as a registry client reads it, where skopeo is installed (it is what pushes it).
if command -v skopeo >/dev/null 2>&1; then
    skopeo_revision=$(skopeo inspect --config "oci-archive:$out/$archive_name:$tag" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["config"]["Labels"]["org.opencontainers.image.revision"])') \
        || problems+=("skopeo cannot read oci-archive:$out/$archive_name:$tag")
    [ "${skopeo_revision:-}" = "$revision" ] || problems+=("skopeo reads revision '${skopeo_revision:-}' from the archive")
fi
if [ "${#problems[@]}" -gt 0 ]; then
    printf 'build-image: image check FAILED: %s\n' "${problems[@]}" >&2
    exit 1
fi
say "checks: the agent and its tools run in the image; no compiler, apt or Python; no docs, locales or apt lists"

# --- 6. SBOM, report ---------------------------------------------------------------------------
python3 deploy/image-report.py --out "$out" --archive "$archive_name" --repository "$repository" --tag "$tag" \
    --version "$version" --revision "$revision" --created "$created" --source "$source_url" \
    --resolved "$src/Package.resolved" --binary "$binary" --goal-mb "$size_goal_mb" \
    --seconds "swift build (release, $build_kind)=${seconds["swift build (release)"]}" \
    --seconds "mmdebstrap=${seconds[mmdebstrap]}" --seconds "umoci (pack, unpack)=${seconds["umoci (pack, unpack)"]}"
if [ -n "$report_copy" ]; then
    mkdir -p "$(dirname "$report_copy")"
    cp "$out/image.md" "$report_copy"
fi
say "done: $out/$archive_name (report: $out/image.md${report_copy:+, copied to $report_copy})"
say "push: skopeo copy oci-archive:$out/$archive_name:$tag docker://REGISTRY/$repository:$tag"
