#!/usr/bin/env bash
# Runs the planner benchmarks (package-benchmark) and writes the results:
#   results/planner.md    the Markdown table (what the README shows)
#   results/planner.json  p99 of each metric, smaller is better (for tools)
#
# Size: CANARY_BENCH_SERVICES × CANARY_BENCH_ENDPOINTS (default 10000 × 25); CI sets a small
# size with --small (100 × 5). Extra arguments go to `swift package benchmark`, e.g.
#   ./run.sh --filter "One endpoint.*"
set -euo pipefail
cd "$(dirname "$0")"

if [[ "${1:-}" == "--small" ]]; then
    shift
    export CANARY_BENCH_SERVICES="${CANARY_BENCH_SERVICES:-100}"
    export CANARY_BENCH_ENDPOINTS="${CANARY_BENCH_ENDPOINTS:-5}"
fi
services="${CANARY_BENCH_SERVICES:-10000}"
endpoints="${CANARY_BENCH_ENDPOINTS:-25}"
results="${CANARY_BENCH_RESULTS:-results}"
mkdir -p "$results"

# The machine is shared: say how busy it was, the tails (p99, p100) depend on it.
load_before="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"

# One run, stored as a baseline, then read back in both formats.
swift package --allow-writing-to-package-directory benchmark baseline update planner \
    --no-progress --quiet "$@"

{
    echo "# Planner benchmarks"
    echo
    echo "Size: ${services} services × ${endpoints} endpoints. Machine: $(nproc) cores, $(uname -sr)."
    echo "Made by \`Benchmarks/run.sh\` on $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
    echo "Load average before the run: ${load_before}; after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)."
    echo "Allocation counts are exact; times are wall clock on a shared machine, so their tails vary from run to run."
    echo
    # The table only: the tool's own notes before it (interposer warnings) are not results.
    swift package benchmark baseline read planner --format markdown --no-progress | sed -n '/^## Baseline/,$p'
} > "$results/planner.md"

swift package --allow-writing-to-package-directory benchmark baseline read planner \
    --format jsonSmallerIsBetter --path "$results" --no-progress

echo "wrote $results/planner.md and $results/planner.json"
