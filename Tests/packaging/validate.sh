#!/usr/bin/env bash
# Checks the packaging: the Kubernetes manifests in deploy/, the systemd unit and the example static
# configuration in systemd/. Installs nothing: a missing tool is reported with how to get it
# (`bash Tests/vm/install-deps.sh` installs them all), and the script exits 2.
#
#   bash Tests/packaging/validate.sh
#
# Checks:
#   1. kubernetes-validate --strict (unknown fields are errors) on every manifest under deploy/,
#      against each version in CANARY_KUBERNETES_VERSIONS (default "1.30.0 1.34.0": the oldest and a
#      recent release this manifest set is meant for); first, that strict mode really rejects a
#      misspelled field, so a validator that passes everything cannot make this green;
#   1b. the kustomize base deploy/kustomization.yaml: `kubectl kustomize deploy/` renders, the result
#      passes kubernetes-validate --strict, it lists every manifest of deploy/ (not the example), every
#      container's image is the one set in its images: entry, and that tag is the version
#      deploy/build-image.sh builds (Sources/canary-agent/BuildInfo.swift);
#   2. every canary-agent.io/ annotation or label key the manifests use is one README.md documents;
#   3. systemd-analyze verify on the unit, and systemd-analyze security --offline under a ceiling
#      (CANARY_UNIT_EXPOSURE_MAX, default 3.0 on systemd's 0-10 scale) so hardening is not lost
#      quietly;
#   4. systemd/config.example.yaml parses as YAML and follows the README's schema (a Python mirror
#      of the rules that do not need the agent: the agent's own parser is Swift, and
#      `canary-agent plan --config` would also need a kernel with IPVS);
#   5. when the agent binary is there (CANARY_AGENT_BIN, else $SWIFT_SCRATCH_PATH or .build, debug
#      then release), every flag the unit and the DaemonSet pass to `canary-agent run` is one its
#      --help lists; otherwise this check is reported as skipped.
# Exits 0 when all pass, 1 when one fails, 2 when a tool is missing.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo" || exit 2

say() { printf 'packaging: %s\n' "$*"; }
failures=()
pass() { say "ok: $*"; }
fail() { say "FAILED: $*"; failures+=("$*"); }

kubernetes_versions=${CANARY_KUBERNETES_VERSIONS:-"1.30.0 1.34.0"}
exposure_max=${CANARY_UNIT_EXPOSURE_MAX:-3.0}
unit=systemd/canary-agent.service
example_config=systemd/config.example.yaml
unit_binary=/usr/local/bin/canary-agent

# --- Tools -------------------------------------------------------------------------------------
missing=()
command -v kubernetes-validate >/dev/null 2>&1 || missing+=("kubernetes-validate (PyPI: python3 -m pip install kubernetes-validate)")
command -v systemd-analyze >/dev/null 2>&1 || missing+=("systemd-analyze (Debian package systemd)")
command -v kubectl >/dev/null 2>&1 || missing+=("kubectl, for kubectl kustomize (Debian package kubernetes-client)")
if ! command -v python3 >/dev/null 2>&1; then
    missing+=("python3 (Debian package python3)")
elif ! python3 -c 'import yaml' >/dev/null 2>&1; then
    missing+=("PyYAML for $(command -v python3) (PyPI: pyyaml; kubernetes-validate brings it)")
fi
if [ "${#missing[@]}" -gt 0 ]; then
    for tool in "${missing[@]}"; do say "ERROR: missing tool: $tool" >&2; done
    say "ERROR: install them with: bash Tests/vm/install-deps.sh" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- 1. Kubernetes manifests -------------------------------------------------------------------
mapfile -t manifests < <(find deploy -type f \( -name '*.yaml' -o -name '*.yml' \) ! -name kustomization.yaml | LC_ALL=C sort)
if [ "${#manifests[@]}" -lt 6 ]; then
    fail "expected the DaemonSet, RBAC and example manifests under deploy/, found ${#manifests[@]} file(s)"
fi

# The versions asked for must be ones this kubernetes-validate has schemas for (it fails with an
# unclear message otherwise).
supported=$(python3 -c 'import kubernetes_validate.utils as u; print(" ".join(sorted(set(u.all_versions()))))' 2>/dev/null || true)
for version in $kubernetes_versions; do
    if [ -n "$supported" ] && [[ " $supported " != *" $version "* ]]; then
        fail "kubernetes-validate $(kubernetes-validate --version 2>/dev/null) has no schemas for Kubernetes $version (it has: $supported)"
        kubernetes_versions=${kubernetes_versions//$version/}
    fi
done

# Self-check: strict mode must reject a misspelled field, or a green result below means nothing.
cat >"$work/misspelled.yaml" <<'EOF'
apiVersion: v1
kind: Service
metadata:
  name: misspelled
spec:
  ports:
    - port: 80
      tragetPort: 8080
EOF
first_version=$(set -- $kubernetes_versions; echo "${1:-}")
if [ -n "$first_version" ]; then
    if kubernetes-validate --strict --quiet -k "$first_version" "$work/misspelled.yaml" >/dev/null 2>&1; then
        fail "kubernetes-validate --strict accepted a Service with a misspelled field: it does not check what it should"
    else
        pass "kubernetes-validate --strict rejects a misspelled field"
    fi
fi

for version in $kubernetes_versions; do
    if output=$(kubernetes-validate --strict --quiet -k "$version" "${manifests[@]}" 2>&1); then
        pass "kubernetes-validate --strict, Kubernetes $version: ${#manifests[@]} files"
    else
        printf '%s\n' "$output" | sed 's/^/    /'
        fail "kubernetes-validate --strict, Kubernetes $version"
    fi
done

# --- 1b. The kustomize base --------------------------------------------------------------------
if ! kubectl kustomize deploy/ >"$work/kustomized.yaml" 2>"$work/kustomize.err"; then
    sed 's/^/    /' "$work/kustomize.err"
    fail "kubectl kustomize deploy/ does not render"
else
    kubectl_version=$(kubectl version --client 2>/dev/null | grep -oE 'v[0-9]+\.[0-9]+\.[0-9]+' | head -n1)
    for version in $kubernetes_versions; do
        if output=$(kubernetes-validate --strict --quiet -k "$version" "$work/kustomized.yaml" 2>&1); then
            pass "kubectl kustomize deploy/ (kubectl $kubectl_version): $(grep -c '^kind:' "$work/kustomized.yaml") objects; kubernetes-validate --strict, Kubernetes $version"
        else
            printf '%s\n' "$output" | sed 's/^/    /'
            fail "kubernetes-validate --strict on kubectl kustomize deploy/, Kubernetes $version"
        fi
    done
    built_version=$(sed -n 's/^ *static let version = "\([^"]*\)".*/\1/p' Sources/canary-agent/BuildInfo.swift)
    if output=$(python3 - deploy "$work/kustomized.yaml" "$built_version" 2>&1 <<'EOF'
import os, sys, yaml
base, rendered, version = sys.argv[1:]
problems = []
kustomization = yaml.safe_load(open(os.path.join(base, "kustomization.yaml")))
listed = set(kustomization.get("resources", []))
present = {name for name in os.listdir(base) if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml"}
if listed != present:
    problems.append(f"resources {sorted(listed)} are not the manifests in {base}/ {sorted(present)}")
images = {entry["name"]: entry for entry in kustomization.get("images", [])}
if "canary-agent" not in images:
    print("no images: entry named canary-agent")
    sys.exit(1)
if not version:
    problems.append("no version in Sources/canary-agent/BuildInfo.swift")
for name, entry in images.items():
    if str(entry.get("newTag")) != version:
        problems.append(f"images: {name} has newTag {entry.get('newTag')!r}, but deploy/build-image.sh builds {version!r}")
wanted = f"{images['canary-agent'].get('newName', 'canary-agent')}:{images['canary-agent'].get('newTag')}"


def containers(path):
    for document in yaml.safe_load_all(open(path)):
        if document and document.get("kind") == "DaemonSet":
            spec = document["spec"]["template"]["spec"]
            yield from spec.get("initContainers", []) + spec["containers"]


# Before kustomize: every container names an image of the images: list, at the built tag.
for container in containers(os.path.join(base, "daemonset.yaml")):
    name, _, tag = container["image"].rpartition(":")
    if name not in images or tag != version:
        problems.append(f"container {container['name']}: image {container['image']} is not one of images: ({', '.join(images)}) at {version}")
# After kustomize: every container has the image kustomization.yaml sets.
rendered_containers = list(containers(rendered))
for container in rendered_containers:
    if container["image"] != wanted:
        problems.append(f"rendered container {container['name']}: image {container['image']}, not {wanted}")
if not rendered_containers:
    problems.append("no DaemonSet container in the rendered output")
print("\n".join(problems) if problems else f"{len(rendered_containers)} containers at {wanted}")
sys.exit(1 if problems else 0)
EOF
    ); then
        pass "deploy/kustomization.yaml lists every manifest; images: sets the image once ($output); the tag is the built version"
    else
        printf '%s\n' "$output" | sed 's/^/    /'
        fail "deploy/kustomization.yaml"
    fi
fi

# --- 2. Annotation and label keys match the README ---------------------------------------------
unknown_keys=()
while IFS= read -r key; do
    grep -qF -- "\`$key\`" README.md || unknown_keys+=("$key")
done < <(grep -rhoE 'canary-agent\.io/[A-Za-z0-9._-]+' deploy | LC_ALL=C sort -u)
if [ "${#unknown_keys[@]}" -eq 0 ]; then
    pass "every canary-agent.io/ key in deploy/ is documented in README.md"
else
    fail "keys used in deploy/ that README.md does not document: ${unknown_keys[*]}"
fi
if grep -rqE 'service\.kubernetes\.io/service-proxy-name: *canary-agent$' deploy/example; then
    pass "the example's stable Service is labelled service.kubernetes.io/service-proxy-name: canary-agent"
else
    fail "no Service in deploy/example carries service.kubernetes.io/service-proxy-name: canary-agent"
fi

# --- 3. systemd unit ---------------------------------------------------------------------------
# `systemd-analyze verify` also checks that every Exec*= command exists and is executable. The agent
# is not installed at /usr/local/bin on a build or CI machine, so verify a copy of the unit (same
# file name, since the name is part of what is checked) whose ExecStart points at a stub executable
# in a temporary directory; every other line is verified as written.
if [ ! -f "$unit" ]; then
    fail "$unit is missing"
else
    if ! grep -q "^ExecStart=$unit_binary run --config " "$unit"; then
        fail "$unit: ExecStart does not run $unit_binary run --config ..."
    fi
    mkdir -p "$work/unit"
    printf '#!/bin/sh\nexit 0\n' >"$work/unit/canary-agent"
    chmod 0755 "$work/unit/canary-agent"
    sed "s|$unit_binary|$work/unit/canary-agent|g" "$unit" >"$work/unit/canary-agent.service"
    if output=$(systemd-analyze verify "$work/unit/canary-agent.service" 2>&1) && [ -z "$output" ]; then
        pass "systemd-analyze verify $unit"
    else
        # verify exits 0 on some warnings (unknown settings among them): any output is a failure.
        printf '%s\n' "$output" | sed 's/^/    /'
        fail "systemd-analyze verify $unit"
    fi
    # The threshold is in tenths of systemd's exposure scale.
    threshold=$(awk -v max="$exposure_max" 'BEGIN { printf "%d", max * 10 }')
    if output=$(systemd-analyze security --offline=yes --threshold="$threshold" "$work/unit/canary-agent.service" 2>&1); then
        pass "systemd-analyze security: $(printf '%s\n' "$output" | grep -o 'Overall exposure level.*' | sed 's/ for [^:]*:/:/') (ceiling $exposure_max)"
    else
        printf '%s\n' "$output" | grep -E '✗|Overall' | sed 's/^/    /'
        fail "systemd-analyze security: exposure above $exposure_max (CANARY_UNIT_EXPOSURE_MAX)"
    fi
fi
if [ -f systemd/canary-agent-modules.conf ] \
    && ! grep -vE '^[[:space:]]*(#.*)?$' systemd/canary-agent-modules.conf | grep -vqE '^[a-z0-9_]+$'; then
    pass "systemd/canary-agent-modules.conf lists one module name a line"
else
    fail "systemd/canary-agent-modules.conf is missing or has a line that is not a module name"
fi

# --- 4. Example static configuration -----------------------------------------------------------
if output=$(python3 - "$example_config" 2>&1 <<'EOF'
"""The README's static-file rules that need no agent: the file must parse as YAML and follow the schema."""
import ipaddress
import re
import sys

import yaml

path = sys.argv[1]
problems = []


def problem(field, message):
    problems.append(f"{path}: {field}: {message}")


def endpoint(text, field, family):
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([0-9.]+):(\d+)", str(text))
    if not match:
        problem(field, f"'{text}' is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)")
        return None
    address_text, port_text = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        problem(field, f"'{address_text}' is not an IP address")
        return None
    if not 1 <= int(port_text) <= 65535:
        problem(field, f"port {port_text} is not a port (1-65535)")
    if address.version != family:
        problem(field, f"{text} is IPv{address.version} but the service address is IPv{family}")
    return address


def known_fields(mapping, field, allowed):
    if not isinstance(mapping, dict):
        problem(field or "the file", "must be a mapping")
        return {}
    for key in mapping:
        if key not in allowed:
            problem(f"{field}.{key}" if field else key, f"unknown field (known: {', '.join(sorted(allowed))})")
    return mapping


schedulers = {"sh", "rr", "wrr", "mh"}
with open(path, encoding="utf-8") as file:
    document = yaml.safe_load(file)
root = known_fields(document, "", {"scheduler", "services"})
if root.get("scheduler", "wrr") not in schedulers:
    problem("scheduler", f"'{root['scheduler']}' is not a scheduler (sh, rr, wrr or mh)")
services = root.get("services")
if not isinstance(services, list) or not services:
    problem("services", "must be a non-empty list of services")
    services = []
names, keys = set(), set()
for index, service in enumerate(services):
    field = f"services[{index}]"
    service = known_fields(service, field, {"name", "address", "port", "protocol", "scheduler",
                                            "persistence-timeout", "stable", "canary"})
    for required in ("name", "address", "port", "stable"):
        if required not in service:
            problem(f"{field}.{required}", "missing")
    name = service.get("name")
    if name in names:
        problem(f"{field}.name", f"'{name}' is given twice")
    names.add(name)
    try:
        address = ipaddress.ip_address(str(service.get("address")))
    except ValueError:
        problem(f"{field}.address", f"'{service.get('address')}' is not an IPv4 or IPv6 address")
        continue
    port = service.get("port")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        problem(f"{field}.port", f"'{port}' is not a port (1-65535)")
    protocol = str(service.get("protocol", "tcp")).lower()
    if protocol not in {"tcp", "udp", "sctp"}:
        problem(f"{field}.protocol", f"'{protocol}' is not tcp, udp or sctp")
    key = (protocol, address, port)
    if key in keys:
        problem(field, f"{protocol} {address}:{port} is already another service")
    keys.add(key)
    if service.get("scheduler", "wrr") not in schedulers:
        problem(f"{field}.scheduler", f"'{service['scheduler']}' is not a scheduler (sh, rr, wrr or mh)")
    timeout = service.get("persistence-timeout")
    if timeout is not None and (not isinstance(timeout, int) or not 1 <= timeout <= 2678400):
        problem(f"{field}.persistence-timeout", f"'{timeout}' is not a number of seconds (1-2678400)")
    stable = service.get("stable", [])
    if not isinstance(stable, list):
        problem(f"{field}.stable", "must be a list of ADDRESS:PORT")
        stable = []
    stable_addresses = [endpoint(item, f"{field}.stable[{i}]", address.version) for i, item in enumerate(stable)]
    canary = service.get("canary")
    if canary is not None:
        canary = known_fields(canary, f"{field}.canary", {"weight", "endpoints"})
        weight = str(canary.get("weight", ""))
        if not re.fullmatch(r"\d{1,3}(\.\d{1,2})?", weight) or float(weight) > 100:
            problem(f"{field}.canary.weight", f"'{weight}' is not a percentage from 0 to 100 with at most two decimals")
        endpoints = canary.get("endpoints")
        if not isinstance(endpoints, list):
            problem(f"{field}.canary.endpoints", "must be a list of ADDRESS:PORT")
            endpoints = []
        for i, item in enumerate(endpoints):
            canary_address = endpoint(item, f"{field}.canary.endpoints[{i}]", address.version)
            if canary_address is not None and canary_address in stable_addresses:
                problem(f"{field}.canary.endpoints[{i}]", f"{canary_address} is also a stable endpoint")
for line in problems:
    print(line)
if problems:
    sys.exit(1)
print(f"{len(services)} services")
EOF
); then
    pass "$example_config follows the README's schema ($output)"
else
    printf '%s\n' "$output" | sed 's/^/    /'
    fail "$example_config"
fi

# --- 5. Flags against the agent's own --help ----------------------------------------------------
scratch=${SWIFT_SCRATCH_PATH:-.build}
agent=${CANARY_AGENT_BIN:-}
if [ -z "$agent" ]; then
    for candidate in "$scratch/debug/canary-agent" "$scratch/release/canary-agent"; do
        if [ -x "$candidate" ]; then agent=$candidate; break; fi
    done
fi
if [ -z "$agent" ]; then
    say "skipped: flags against 'canary-agent run --help' (no built agent; set CANARY_AGENT_BIN)"
elif ! run_help=$("$agent" run --help 2>&1) || ! grep -q 'USAGE: canary-agent run' <<<"$run_help"; then
    # swift-argument-parser answers an unknown subcommand's --help with the top-level help.
    say "skipped: flags against 'canary-agent run --help' ($agent has no run command yet)"
else
    mapfile -t flags < <({
        grep '^ExecStart=' "$unit"
        python3 -c '
import sys, yaml
for document in yaml.safe_load_all(open(sys.argv[1])):
    if document and document.get("kind") == "DaemonSet":
        for container in document["spec"]["template"]["spec"]["containers"]:
            print("\n".join(container.get("args", [])))
' deploy/daemonset.yaml
    } | grep -oE -- '--[a-z][a-z0-9-]*' | LC_ALL=C sort -u)
    unknown_flags=()
    for flag in "${flags[@]}"; do
        grep -qE -- "(^|[^a-z0-9-])$flag([^a-z0-9-]|$)" <<<"$run_help" || unknown_flags+=("$flag")
    done
    if [ "${#unknown_flags[@]}" -eq 0 ]; then
        pass "the ${#flags[@]} flags the unit and the DaemonSet pass are all in '$agent run --help'"
    else
        fail "flags that '$agent run --help' does not list: ${unknown_flags[*]}"
    fi
fi

# --- RBAC: least privilege ----------------------------------------------------------------------
# The API calls the agent makes, written out by hand from its code (KubernetesSource's informers,
# KubernetesClient's create of core Events, the route status writer, the Lease elector): every verb
# a ClusterRole or Role grants must be in this table.
if output=$(python3 - deploy/rbac.yaml 2>&1 <<'EOF'
import sys, yaml
used = {
    ("", "services"): {"list", "watch"},
    ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
    ("", "endpoints"): {"list", "watch"},
    ("", "nodes"): {"list", "watch"},
    ("", "events"): {"create"},
    # Gateway API (KubernetesSource's route and ReferenceGrant informers; the status writer's merge patch).
    **{("gateway.networking.k8s.io", kind): {"list", "watch"}
       for kind in ("tcproutes", "udproutes", "httproutes", "grpcroutes", "referencegrants")},
    **{("gateway.networking.k8s.io", f"{kind}/status"): {"patch"}
       for kind in ("tcproutes", "udproutes", "httproutes", "grpcroutes")},
    # LeaderElector: get the Lease, create it when missing, update (PUT) to acquire and renew.
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
}
extra = []
for document in yaml.safe_load_all(open(sys.argv[1])):
    if not document or document.get("kind") not in ("ClusterRole", "Role"):
        continue
    for rule in document.get("rules", []):
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                granted = set(rule.get("verbs", []))
                beyond = granted - used.get((group, resource), set())
                if beyond:
                    extra.append(f"{group or 'core'}/{resource}: {', '.join(sorted(beyond))}")
if extra:
    print("verbs the agent never uses: " + "; ".join(extra))
    sys.exit(1)
EOF
); then
    pass "deploy/rbac.yaml grants only the verbs the agent uses"
else
    fail "deploy/rbac.yaml: $output"
fi

# --- Result ------------------------------------------------------------------------------------
if [ "${#failures[@]}" -gt 0 ]; then
    say "${#failures[@]} check(s) FAILED"
    exit 1
fi
say "all checks passed"
