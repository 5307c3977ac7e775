#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of the agent's boundaries: netlink replies (split, the in-place
# ack loop, IPVS decoding), the static YAML file, and the Kubernetes API's bodies (the watch-stream
# framer, the JSON decoding of watch events, list pages and Status, the translation of what was
# decoded). Each target runs for SECONDS (default 60) from its seed corpus (Tests/fuzz/corpus/TARGET,
# committed) plus every input that ever failed (Tests/fuzz/regressions/TARGET, committed: replayed
# first, so a fixed bug stays fixed), with its dictionary (Tests/fuzz/dictionaries/TARGET.dict) if any.
# A crash, a trap, an input slower than 1 s or more than 2 GB of memory fails the run; the input is
# copied to Tests/fuzz/regressions/TARGET for a human to commit with the fix.
#
#   bash Tests/fuzz/run.sh [SECONDS]          # CI: 30 s per target; the long run: 600
#   CANARY_FUZZ_REPORT=FILE bash Tests/fuzz/run.sh 600   # also writes the figures (markdown)
#   CANARY_FUZZ_TARGETS="netlink kubernetes" bash Tests/fuzz/run.sh 30   # some targets only
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
report=${CANARY_FUZZ_REPORT:-}
# The report's path as the caller gave it, from the caller's directory.
if [ -n "$report" ] && [[ $report != /* ]]; then report=$PWD/$report; fi
cd "$here"
seconds=${1:-60}
scratch=${CANARY_FUZZ_SCRATCH:-$here/.build-fuzz}

say() { printf 'fuzz: %s\n' "$*"; }

# libFuzzer must see a Swift trap (SIGILL) itself to save the input: the runtime's backtracer would
# take the signal first and the input would be lost.
export SWIFT_BACKTRACE=enable=no

product_of() {
    case $1 in
        netlink) echo FuzzNetlink ;;
        static-yaml) echo FuzzStaticYAML ;;
        kubernetes) echo FuzzKubernetes ;;
        *) say "unknown target '$1' (netlink, static-yaml, kubernetes)"; exit 2 ;;
    esac
}
targets=${CANARY_FUZZ_TARGETS:-netlink static-yaml kubernetes}
flags=(--scratch-path "$scratch" -c release -Xswiftc -sanitize=fuzzer -Xswiftc -enable-testing -Xswiftc -use-ld=lld)
# Only the chosen targets' products: the Kubernetes target alone needs async-http-client and BoringSSL,
# most of the build's time.
for target in $targets; do
    product=$(product_of "$target")
    say "building $product with -sanitize=fuzzer (scratch $scratch)"
    swift build "${flags[@]}" --product "$product" >/dev/null
done
bin=$(swift build "${flags[@]}" --show-bin-path)

status=0
rows=()
for target in $targets; do
    binary=$bin/$(product_of "$target")
    dictionary=()
    [ -f "$here/dictionaries/$target.dict" ] && dictionary=(-dict="$here/dictionaries/$target.dict")
    corpus=$(mktemp -d)
    regressions=$here/regressions/$target
    mkdir -p "$regressions"
    cp "$here/corpus/$target"/* "$corpus"/ 2>/dev/null || true
    # Every earlier failure first: replayed one by one, each must now pass.
    shopt -s nullglob
    for input in "$regressions"/*; do
        if ! "$binary" -timeout=1 -rss_limit_mb=2048 "$input" >/dev/null 2>&1; then
            say "FAILED: $target regression $(basename "$input") fails again"
            status=1
        fi
    done
    shopt -u nullglob
    artifacts=$(mktemp -d)
    log=$(mktemp)
    started=$(date +%s)
    if "$binary" -max_total_time="$seconds" -timeout=1 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 "${dictionary[@]}" "$corpus" >"$log" 2>&1; then
        result=ok
    else
        result="ok (stopped early by a load-induced timeout)"
        for artifact in "$artifacts"/*; do
            [ -e "$artifact" ] || continue
            # libFuzzer's timeout is wall-clock: on a loaded machine a quick input can be descheduled
            # past it. A timeout counts only if the input is slow again when replayed alone.
            if [[ $(basename "$artifact") == timeout-* ]] \
                && "$binary" -timeout=1 -rss_limit_mb=2048 -runs=3 "$artifact" >/dev/null 2>&1; then
                say "$target: $(basename "$artifact") timed out under load but replays within 1 s alone: not a hang"
                continue
            fi
            cp "$artifact" "$regressions/"
            say "$target: kept $(basename "$artifact") in regressions/$target (commit it with the fix)"
            result=FAILED
        done
        # A non-zero exit with no input to show for it is a failure too.
        compgen -G "$artifacts/*" >/dev/null || result=FAILED
        if [ "$result" = FAILED ]; then
            status=1
            tail -n 40 "$log" >&2
        fi
    fi
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
    coverage=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+' || echo "?")
    elapsed=$(( $(date +%s) - started ))
    say "$target: $result, $runs inputs in ${elapsed}s, coverage $coverage edges, corpus $(ls "$corpus" | wc -l) inputs"
    rows+=("| $target | $seconds | $runs | $coverage | $(ls "$corpus" | wc -l) | $([ "$result" = FAILED ] && echo "≥1" || echo 0) |")
    rm -rf "$corpus" "$artifacts" "$log"
done

if [ -n "$report" ]; then
    {
        echo "# Fuzzing: the agent's boundaries"
        echo
        echo "Command: \`${CANARY_FUZZ_TARGETS:+CANARY_FUZZ_TARGETS=\"$CANARY_FUZZ_TARGETS\" }CANARY_FUZZ_REPORT=${CANARY_FUZZ_REPORT} bash Tests/fuzz/run.sh $seconds\` on $(date -u +%Y-%m-%d), $(uname -m), release build with -sanitize=fuzzer (libFuzzer; Swift's own bounds and overflow checks trap on any out-of-bounds read). Per input: at most 1 s and 2 GB."
        echo
        echo "| target | seconds | inputs tried | coverage (edges) | corpus at end | crashes, hangs, blow-ups |"
        echo "|---|---|---|---|---|---|"
        printf '%s\n' "${rows[@]}"
    } >"$report"
    say "report: $report"
fi
exit $status
