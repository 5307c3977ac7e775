#!/usr/bin/python3
"""canary-agent run from the container image's root file system, as deploy/daemonset.yaml runs it.

The e2e bench (Tests/e2e/scenarios.py, bench.Agent) runs "the agent binary" with its arguments and
signals it; Tests/e2e/image.sh hands it this program as that binary, so every scenario can run
unchanged against the image. For `canary-agent run` this does, in order, what the kubelet and the
container runtime do for the DaemonSet's pod:

1. the node-setup init container: its script, read from deploy/daemonset.yaml, run with /bin/sh from
   the image, privileged (all capabilities, /proc and /sys writable), the node's /lib/modules
   mounted read-only; its output goes to this program's standard error (the agent's log);
2. the canary-agent container: a private mount namespace, the image's root file system read-only
   (readOnlyRootFilesystem), the node's /proc (with /proc/sys read-only, as a runtime mounts it for a
   container that is not privileged) and /sys read-only, a small /dev, the node's /run/xtables.lock
   (the DaemonSet's hostPath volume); the host network namespace (hostNetwork); root with only the
   DaemonSet's capabilities (bounding, permitted, effective and inheritable sets: CAP_NET_ADMIN and
   CAP_NET_RAW, everything else dropped) and no_new_privs (allowPrivilegeEscalation: false); the
   environment the DaemonSet sets (NODE_NAME, HOST_IP, POD_NAMESPACE) and the image's PATH; the DaemonSet's command
   and arguments with $(VAR) expanded as the kubelet does.

The bench's own arguments are kept where the DaemonSet has none of its own: --kubeconfig (the stand-in
API server on 127.0.0.1, with its CA in that file, instead of the in-cluster service account),
--drift-check-interval and the like. --node-name and --listen are the DaemonSet's, with NODE_NAME and HOST_IP taken from the
bench's values (they must agree: the bench talks to the agent there). The bench's files (its
--kubeconfig, a static --config) are under /tmp, which is mounted read-only at the same place, like a
ConfigMap volume.

Every process in the chain execs the next (unshare, sh, chroot, setpriv), so the agent keeps this
program's process id: the bench's SIGTERM, SIGHUP and SIGKILL reach it as the kubelet's would.
Other commands (`cleanup`, `status`, `explain`) run in the same container settings without the init
step, as `kubectl exec` would. Not reproduced: the pod's PID namespace, seccomp's RuntimeDefault
profile, the cgroup limits.

Environment: CANARY_E2E_IMAGE_ROOTFS (the unpacked root file system, required), CANARY_E2E_IMAGE_MANIFEST
(default: deploy/daemonset.yaml of this repository).
"""
import os
import shlex
import subprocess
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
CAPABILITY_NAMES = {"NET_ADMIN": "net_admin", "NET_RAW": "net_raw", "SYS_MODULE": "sys_module",
                    "SYS_ADMIN": "sys_admin", "NET_BIND_SERVICE": "net_bind_service"}


def fail(message: str) -> None:
    print(f"image_agent: {message}", file=sys.stderr)
    sys.exit(97)


def daemonset(path: str) -> dict:
    with open(path) as file:
        for document in yaml.safe_load_all(file):
            if document and document.get("kind") == "DaemonSet":
                return document["spec"]["template"]["spec"]
    fail(f"no DaemonSet in {path}")
    return {}


def expand(text: str, environment: dict) -> str:
    """$(VAR) as the kubelet expands it in command and args; unknown references stay as written."""
    for name, value in environment.items():
        text = text.replace(f"$({name})", value)
    return text


def flag_pairs(arguments: list[str]) -> list[tuple[str, list[str]]]:
    """['--a', '1', '--b=2', '--c'] -> [('--a', ['--a', '1']), ('--b', ['--b=2']), ('--c', ['--c'])]."""
    pairs, index = [], 0
    while index < len(arguments):
        token = arguments[index]
        if token.startswith("--") and "=" not in token and index + 1 < len(arguments) \
                and not arguments[index + 1].startswith("--"):
            pairs.append((token, [token, arguments[index + 1]]))
            index += 2
        else:
            pairs.append((token.split("=", 1)[0], [token]))
            index += 1
    return pairs


def flag_value(arguments: list[str], flag: str) -> str | None:
    for name, tokens in flag_pairs(arguments):
        if name == flag:
            return tokens[1] if len(tokens) == 2 else tokens[0].split("=", 1)[1] if "=" in tokens[0] else None
    return None


def mounts_script(rootfs: str, privileged: bool) -> str:
    """Shell commands, run in the new mount namespace, that make the container's file system."""
    q = shlex.quote
    root = q(rootfs)
    lines = [
        "set -e",
        f"mount --bind {root} {root}",
        f"mount -o remount,bind,ro {root}",
        f"mount --rbind /proc {root}/proc",
        f"mount -t tmpfs -o mode=0755,nosuid tmpfs {root}/dev",
    ]
    for device in ("null", "zero", "full", "random", "urandom", "tty"):
        lines += [f": > {root}/dev/{device}", f"mount --bind /dev/{device} {root}/dev/{device}"]
    if privileged:
        lines += [f"mount --rbind /sys {root}/sys", f"mount --bind /lib/modules {root}/lib/modules",
                  f"mount -o remount,bind,ro {root}/lib/modules"]
    else:
        lines += [f"mount --bind {root}/proc/sys {root}/proc/sys", f"mount -o remount,bind,ro {root}/proc/sys",
                  f"mount --rbind /sys {root}/sys", f"mount -o remount,bind,ro {root}/sys",
                  f"mount --bind /run/xtables.lock {root}/run/xtables.lock",
                  f"mount --bind /tmp {root}/tmp", f"mount -o remount,bind,ro {root}/tmp"]
    return "\n".join(lines)


def container_command(rootfs: str, environment: dict, command: list[str], capabilities: list[str] | None,
                      no_new_privs: bool) -> list[str]:
    """unshare -> sh (mounts) -> chroot -> setpriv (capabilities) -> env -> the command; each execs the next."""
    privileged = capabilities is None
    inner = ["chroot", rootfs]
    if not privileged:
        caps = ",".join(["-all"] + [f"+{CAPABILITY_NAMES.get(c, c.lower())}" for c in capabilities])
        inner += ["/usr/bin/setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]
        if no_new_privs:
            inner.append("--no-new-privs")
        inner.append("--")
    inner += ["/usr/bin/env", "-i"] + [f"{name}={value}" for name, value in environment.items()] + command
    script = mounts_script(rootfs, privileged) + "\nexec " + " ".join(shlex.quote(part) for part in inner)
    return ["/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script]


def main(argv: list[str]) -> int:
    rootfs = os.environ.get("CANARY_E2E_IMAGE_ROOTFS", "")
    if not rootfs or not os.path.isfile(os.path.join(rootfs, "usr/local/bin/canary-agent")):
        fail(f"CANARY_E2E_IMAGE_ROOTFS={rootfs!r} is not an unpacked image (no usr/local/bin/canary-agent)")
    rootfs = os.path.realpath(rootfs)
    pod = daemonset(os.environ.get("CANARY_E2E_IMAGE_MANIFEST", os.path.join(REPO, "deploy/daemonset.yaml")))
    agent = next(c for c in pod["containers"] if c["name"] == "canary-agent")
    security = agent.get("securityContext", {})
    if not security.get("readOnlyRootFilesystem"):
        fail("the DaemonSet's agent container is not readOnlyRootFilesystem: this launcher always mounts it read-only")
    capabilities = security.get("capabilities", {})
    if capabilities.get("drop") != ["ALL"]:
        fail(f"the DaemonSet drops {capabilities.get('drop')}, not ALL: update this launcher")
    added = capabilities.get("add", [])
    no_new_privs = security.get("allowPrivilegeEscalation") is False
    image_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    # The DaemonSet's hostPath volume is FileOrCreate.
    os.close(os.open("/run/xtables.lock", os.O_CREAT | os.O_RDONLY, 0o600))

    if argv[:1] != ["run"] or "--help" in argv or "-h" in argv:
        # kubectl exec: the container's settings, the bench's command line.
        command = ["/usr/local/bin/canary-agent", *argv]
        os.execv("/usr/bin/unshare", container_command(rootfs, {"PATH": image_path}, command, added, no_new_privs))

    # The bench's values for what the DaemonSet takes from the downward API.
    bench_arguments = argv[1:]
    listen = flag_value(bench_arguments, "--listen") or "127.0.0.1:9109"
    host_ip, _, port = listen.rpartition(":")
    environment = {"PATH": image_path, "NODE_NAME": flag_value(bench_arguments, "--node-name") or "node-1",
                   "HOST_IP": host_ip.strip("[]"), "POD_NAMESPACE": "kube-system"}
    for variable in agent.get("env", []):
        if variable["name"] not in environment:
            if "value" not in variable:
                fail(f"the DaemonSet's env {variable['name']} comes from {list(variable)}: give it a value here")
            environment[variable["name"]] = variable["value"]

    # 1. The init container.
    for init in pod.get("initContainers", []):
        if not init.get("securityContext", {}).get("privileged"):
            fail(f"init container {init['name']} is not privileged: this launcher runs init containers privileged")
        command = [expand(part, environment) for part in init.get("command", []) + init.get("args", [])]
        print(f"image_agent: init container {init['name']}: {' '.join(command[:2])} …", file=sys.stderr, flush=True)
        status = subprocess.run(container_command(rootfs, {"PATH": image_path}, command, None, False),
                                stdin=subprocess.DEVNULL).returncode
        if status != 0:
            print(f"image_agent: init container {init['name']} exited {status}: the pod does not start", file=sys.stderr)
            return status

    # 2. The agent container: the DaemonSet's command and args, then the bench's that it does not set.
    command = [expand(part, environment) for part in agent.get("command", []) + agent.get("args", [])]
    daemonset_flags = {name for name, _ in flag_pairs(command[1:])}
    if command[:2] != ["/usr/local/bin/canary-agent", "run"]:
        fail(f"the DaemonSet runs {command[:2]}, not /usr/local/bin/canary-agent run")
    if flag_value(command[2:], "--listen") != listen:
        fail(f"the DaemonSet listens on {flag_value(command[2:], '--listen')}, the bench on {listen}")
    for name, tokens in flag_pairs(bench_arguments):
        if name not in daemonset_flags:
            command += tokens
    print(f"image_agent: container canary-agent (capabilities {', '.join(added)}; read-only root): "
          f"{' '.join(command)}", file=sys.stderr, flush=True)
    os.execv("/usr/bin/unshare", container_command(rootfs, environment, command, added, no_new_privs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
