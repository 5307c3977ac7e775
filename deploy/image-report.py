#!/usr/bin/env python3
"""The image's SBOM (SPDX 2.3 JSON) and its report, from what deploy/build-image.sh left in --out.

Bookworm packages no SBOM tool (no syft, no trivy), so the SBOM is written here from the image's own
dpkg database (packages.tsv, from dpkg-query) and from the Package.resolved the release build used
(the Swift packages linked statically into canary-agent). Sizes are measured, not estimated:
compressed = the blobs a registry stores and a node pulls (the gzip layer, the config, the manifest);
unpacked = the root file system umoci unpacked from the archive.
"""
import argparse
import datetime
import hashlib
import json
import os
import sys

MB = 1000 * 1000


def blob_path(layout: str, digest: str) -> str:
    algorithm, value = digest.split(":")
    return os.path.join(layout, "blobs", algorithm, value)


def tree_size(root: str) -> tuple[int, int]:
    """Apparent bytes of regular files (hard links once) and the number of files."""
    seen, total, count = set(), 0, 0
    for directory, _, files in os.walk(root):
        for name in files:
            stat = os.lstat(os.path.join(directory, name))
            if (stat.st_dev, stat.st_ino) in seen:
                continue
            seen.add((stat.st_dev, stat.st_ino))
            total += stat.st_size
            count += 1
    return total, count


def spdx_id(text: str) -> str:
    return "SPDXRef-" + "".join(c if c.isalnum() or c in ".-" else "-" for c in text)


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("out", "archive", "repository", "tag", "version", "revision", "created", "source", "resolved", "binary"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--goal-mb", type=float, default=60)
    parser.add_argument("--seconds", action="append", default=[])
    args = parser.parse_args()
    out, layout = args.out, os.path.join(args.out, "oci")

    # --- sizes
    index = json.load(open(os.path.join(layout, "index.json")))
    descriptor = next(m for m in index["manifests"]
                      if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == args.tag)
    manifest = json.load(open(blob_path(layout, descriptor["digest"])))
    layers = [layer["size"] for layer in manifest["layers"]]
    compressed = sum(layers) + manifest["config"]["size"] + descriptor["size"]
    archive = os.path.getsize(os.path.join(out, args.archive))
    unpacked, files = tree_size(os.path.join(out, "rootfs"))
    binary = os.path.getsize(args.binary)
    binary_gz = None
    try:
        import zlib
        binary_gz = len(zlib.compress(open(args.binary, "rb").read(), 6))
    except OSError:
        pass

    # --- packages
    packages = []
    for line in open(os.path.join(out, "packages.tsv")):
        name, version, architecture, installed_kib = line.rstrip("\n").split("\t")
        packages.append((name, version, architecture, int(installed_kib or 0)))
    swift_packages = []
    try:
        resolved = json.load(open(args.resolved))
        for pin in resolved.get("pins", []):
            state = pin.get("state", {})
            swift_packages.append((pin.get("identity"), state.get("version") or state.get("branch") or "",
                                   state.get("revision", ""), pin.get("location", "")))
    except (OSError, ValueError):
        pass

    # --- SBOM: SPDX 2.3
    created = args.created
    namespace_hash = hashlib.sha256(f"{args.revision}{descriptor['digest']}".encode()).hexdigest()[:16]
    document = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{args.repository}:{args.tag}",
        "documentNamespace": f"https://spdx.org/spdxdocs/{args.repository}-{args.tag}-{namespace_hash}",
        "creationInfo": {"created": created, "creators": ["Tool: canary-agent deploy/image-report.py"],
                         "comment": "Written from the image's dpkg database (dpkg-query) and the release build's "
                                    "Package.resolved; Debian 12 packages no SBOM generator."},
        "documentDescribes": ["SPDXRef-image"],
        "packages": [],
        "relationships": [],
    }
    image = {
        "SPDXID": "SPDXRef-image", "name": f"{args.repository}:{args.tag}", "versionInfo": args.tag,
        "downloadLocation": "NOASSERTION", "filesAnalyzed": False, "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": descriptor["digest"].split(":")[1]}],
        "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION", "copyrightText": "NOASSERTION",
        "comment": "The OCI image manifest's digest.",
    }
    agent = {
        "SPDXID": "SPDXRef-canary-agent", "name": "canary-agent", "versionInfo": args.version,
        "downloadLocation": f"git+{args.source}@{args.revision}" if "://" in args.source else "NOASSERTION",
        "filesAnalyzed": False,
        "primaryPackagePurpose": "APPLICATION", "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION", "copyrightText": "NOASSERTION",
        "sourceInfo": f"revision {args.revision}", "comment": "/usr/local/bin/canary-agent",
    }
    document["packages"] += [image, agent]
    document["relationships"].append({"spdxElementId": "SPDXRef-image", "relationshipType": "CONTAINS",
                                      "relatedSpdxElement": "SPDXRef-canary-agent"})
    for name, version, architecture, _ in packages:
        identifier = spdx_id(f"deb-{name}-{architecture}")
        document["packages"].append({
            "SPDXID": identifier, "name": name, "versionInfo": version, "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False, "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION", "supplier": "Organization: Debian",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": f"pkg:deb/debian/{name}@{version}?arch={architecture}&distro=debian-12"}],
        })
        document["relationships"].append({"spdxElementId": "SPDXRef-image", "relationshipType": "CONTAINS",
                                          "relatedSpdxElement": identifier})
    for identity, version, revision, location in swift_packages:
        identifier = spdx_id(f"swift-{identity}")
        document["packages"].append({
            "SPDXID": identifier, "name": identity, "versionInfo": version or revision,
            "downloadLocation": f"git+{location}@{revision}" if location.startswith("http") else "NOASSERTION",
            "filesAnalyzed": False, "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION", "comment": "Swift package, linked statically into canary-agent",
        })
        document["relationships"].append({"spdxElementId": "SPDXRef-canary-agent",
                                          "relationshipType": "STATIC_LINK", "relatedSpdxElement": identifier})
    with open(os.path.join(out, "sbom.spdx.json"), "w") as file:
        json.dump(document, file, indent=2)
        file.write("\n")

    # --- report
    config = json.load(open(os.path.join(out, "config.json")))
    labels = config.get("config", {}).get("Labels", {})
    timings = [item.split("=", 1) for item in args.seconds]
    verdict = "within" if compressed < args.goal_mb * MB else "OVER"
    biggest = sorted(packages, key=lambda p: -p[3])[:12]
    lines = [
        "# The container image",
        "",
        f"Written by `deploy/build-image.sh` (built {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC). "
        f"Image `{args.repository}:{args.tag}`, revision `{args.revision}`, manifest `{descriptor['digest']}`.",
        "",
        "## Size",
        "",
        "| | bytes | MB |",
        "|---|---:|---:|",
        f"| compressed (what a node pulls: {len(layers)} gzip layer + config + manifest) | {compressed} | {compressed / MB:.1f} |",
        f"| the oci-archive file | {archive} | {archive / MB:.1f} |",
        f"| unpacked root file system ({files} files) | {unpacked} | {unpacked / MB:.1f} |",
        f"| of which /usr/local/bin/canary-agent (static Swift runtime, stripped) | {binary} | {binary / MB:.1f} |",
    ]
    if binary_gz:
        lines.append(f"| canary-agent alone, gzip | {binary_gz} | {binary_gz / MB:.1f} |")
    lines += [
        "",
        f"Goal: under {args.goal_mb:g} MB compressed: **{verdict}** ({compressed / MB:.1f} MB).",
        "",
        "## What is in it",
        "",
        f"Debian 12 (bookworm), `mmdebstrap --variant=essential` (the Essential set: a shell, coreutils, dpkg; "
        f"no apt), plus the packages the agent and the node-setup init container need, and the agent. "
        f"No compiler, no apt, no Python (the script checks); Perl only as Debian's Essential `perl-base`, which "
        f"debconf, and so ca-certificates, needs. Manual pages, documentation (but the "
        f"copyright files), locales and apt's lists are left out. {len(packages)} Debian packages "
        f"(all with their versions in `packages.tsv` beside the image; SPDX 2.3 in `sbom.spdx.json`, which "
        f"also lists the {len(swift_packages)} Swift packages linked into the agent).",
        "",
        "The largest packages (dpkg's Installed-Size, before the excluded paths):",
        "",
        "| package | version | KiB |",
        "|---|---|---:|",
    ]
    lines += [f"| {name} | {version} | {kib} |" for name, version, _, kib in biggest]
    lines += [
        "",
        "## Config",
        "",
        f"- entrypoint `{json.dumps(config.get('config', {}).get('Entrypoint'))}`, cmd `{json.dumps(config.get('config', {}).get('Cmd'))}`",
    ]
    lines += [f"- label `{key}` = `{value}`" for key, value in sorted(labels.items())]
    lines += [
        "",
        "## Build times",
        "",
        "This run, on its machine (CI's and the development machines: 2 shared cores).",
        "",
    ]
    lines += [f"- {name}: {value} s" for name, value in timings]
    try:
        load = open("/proc/loadavg").read().split()[:3]
        lines.append(f"- load average at the end (1, 5, 15 min): {', '.join(load)} (other builds on the same cores stretch these times)")
    except OSError:
        pass
    lines.append("")
    with open(os.path.join(out, "image.md"), "w") as file:
        file.write("\n".join(lines))
    print(f"image-report: compressed {compressed / MB:.1f} MB ({verdict} the {args.goal_mb:g} MB goal), "
          f"unpacked {unpacked / MB:.1f} MB, {len(packages)} Debian packages", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
