#!/usr/bin/env bash
# Runs the benchmarks (package-benchmark) and writes the results:
#   results/planner.md    the planner suite's Markdown table (what the README shows)
#   results/planner.json  p99 of each of its metrics, smaller is better (for tools)
#   results/host.md       issue 17's host suite: goal / actual / verdict, then every table
#   results/host-<S>x<E>.json  p99 of each host metric at each size, smaller is better
#
# Size: CANARY_BENCH_SERVICES × CANARY_BENCH_ENDPOINTS for the planner (default 10000 × 25), and
# × each of CANARY_BENCH_HOST_ENDPOINTS for the host suite (default "10 25"); CI sets a small size
# with --small (100 × 5, the host suite at 5 only). CANARY_BENCH_HOST_TARGETS picks the host targets. Extra arguments go to `swift package benchmark`, e.g.
#   ./run.sh --filter "One endpoint.*"
set -euo pipefail
cd "$(dirname "$0")"

if [[ "${1:-}" == "--small" ]]; then
    shift
    export CANARY_BENCH_SERVICES="${CANARY_BENCH_SERVICES:-100}"
    export CANARY_BENCH_ENDPOINTS="${CANARY_BENCH_ENDPOINTS:-5}"
    export CANARY_BENCH_HOST_ENDPOINTS="${CANARY_BENCH_HOST_ENDPOINTS:-5}"
fi
services="${CANARY_BENCH_SERVICES:-10000}"
endpoints="${CANARY_BENCH_ENDPOINTS:-25}"
host_endpoints="${CANARY_BENCH_HOST_ENDPOINTS:-10 25}"
# The host suite's targets: HostBenchmarks (no Kubernetes client) and KubernetesBenchmarks (one watch
# event end to end, the memory in Kubernetes mode), whose first release build brings the HTTP and
# TLS stack (BoringSSL, swift-nio, async-http-client): about 8 minutes more on two cores.
read -r -a host_targets <<< "${CANARY_BENCH_HOST_TARGETS:-HostBenchmarks KubernetesBenchmarks}"
host_target_options=()
for target in "${host_targets[@]}"; do host_target_options+=(--target "$target"); done
results="${CANARY_BENCH_RESULTS:-results}"
mkdir -p "$results"
command_line="Benchmarks/run.sh${*:+ $*}"
[[ -n "${CANARY_BENCH_SERVICES:-}${CANARY_BENCH_ENDPOINTS:-}${CANARY_BENCH_HOST_ENDPOINTS:-}" ]] &&
    command_line="CANARY_BENCH_SERVICES=${services} CANARY_BENCH_ENDPOINTS=${endpoints} CANARY_BENCH_HOST_ENDPOINTS=\"${host_endpoints}\" ${command_line}"

load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown; }
machine() {
    local cpu
    cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)"
    echo "$(nproc) cores${cpu:+ ($cpu)}, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null), $(uname -sr)"
}
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# The planner suite: one run, stored as a baseline, then read back in both formats.
# The machine is shared: say how busy it was, the tails (p99, p100) depend on it.
load_before="$(load)"
CANARY_BENCH_ENDPOINTS="$endpoints" swift package --allow-writing-to-package-directory benchmark baseline update planner \
    --target PlannerBenchmarks --no-progress --quiet "$@"
load_after="$(load)"

{
    echo "# Planner benchmarks"
    echo
    echo "Size: ${services} services × ${endpoints} endpoints. Machine: $(nproc) cores, $(uname -sr)."
    echo "Made by \`Benchmarks/run.sh\` on $(date -u +%Y-%m-%d) at commit ${commit}."
    echo "Load average before the run: ${load_before}; after: ${load_after}."
    echo "Allocation counts are exact; times are wall clock on a shared machine, so their tails vary from run to run."
    echo
    # The table only: the tool's own notes before it (interposer warnings) are not results.
    swift package benchmark baseline read planner --format markdown --no-progress | sed -n '/^## Baseline/,$p'
} > "$results/planner.md"

swift package --allow-writing-to-package-directory benchmark baseline read planner \
    --format jsonSmallerIsBetter --path "$results" --no-progress
echo "wrote $results/planner.md and $results/planner.json"

# The host suite (issue 17), once per size; each run is its own baseline.
host_tables="$(mktemp)"
trap 'rm -f "$host_tables"' EXIT
host_loads=()
host_jsons=()
for each in $host_endpoints; do
    baseline="host-${services}x${each}"
    before="$(load)"
    CANARY_BENCH_ENDPOINTS="$each" swift package --allow-writing-to-package-directory benchmark baseline update "$baseline" \
        "${host_target_options[@]}" --no-progress --quiet "$@"
    host_loads+=("${services} × ${each}: before ${before}, after $(load)")
    swift package --allow-writing-to-package-directory benchmark baseline read "$baseline" \
        --format jsonSmallerIsBetter --path "$results" --no-progress
    host_jsons+=("$results/$baseline.json")
    swift package benchmark baseline read "$baseline" --format markdown --no-progress | sed -n '/^## Baseline/,$p' \
        >> "$host_tables"
done

{
    echo "# Host benchmarks (issue 17): the agent's path without the kernel"
    echo
    echo "Command: \`${command_line}\` (the host suite: \`Benchmarks/Benchmarks/HostBenchmarks\` and \`KubernetesBenchmarks\`)."
    echo "Made on $(date -u +%Y-%m-%d) at commit ${commit}. Machine: $(machine)."
    echo "Load average (1, 5, 15 min) around each size's run: $(IFS=';'; echo "${host_loads[*]}" | sed 's/;/; /g')."
    echo "Allocation counts and retained bytes are exact (the malloc interposer); times are wall clock on a"
    echo "shared machine, so their tails (p99) vary from run to run with the load."
    echo
    python3 verdicts.py "${host_jsons[@]}"
    echo
    echo "Where the time goes, the shapes of the services and the comparison with earlier runs (written by"
    echo "hand for the committed run): [host-notes.md](host-notes.md)."
    echo
    echo "## Every measurement"
    echo
    cat "$host_tables"
} > "$results/host.md"
echo "wrote $results/host.md and ${host_jsons[*]}"
