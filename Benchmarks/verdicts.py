#!/usr/bin/env python3
"""The goal / actual / verdict table of issue 17's host benchmarks, from the p99 files that
`swift package benchmark baseline read NAME --format jsonSmallerIsBetter` writes (one per size).
Run by run.sh; prints Markdown."""
import json
import re
import sys

TIME = {"ns": 1e-9, "μs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
COUNT = {"#": 1, "": 1, "K": 1e3, "M": 1e6, "G": 1e9}
# Issue 17's kernel-side goal, 64 MiB resident at 10,000 × 10, spread over its 100,000 destinations.
MEMORY_BUDGET = 64 * 1024 * 1024 / 100_000


def load(path):
    values = {}
    for item in json.load(open(path)):
        benchmark, _, metric = item["name"].rpartition(" - ")
        unit = item.get("unit", "")
        scale = TIME.get(unit) or COUNT.get(unit, 1)
        values[(benchmark, metric)] = item["value"] * scale
    return values


def find(values, prefix, metric):
    for (benchmark, name), value in values.items():
        if benchmark.startswith(prefix) and name.startswith(metric):
            return value
    return None


def ms(seconds):
    if seconds is None:
        return "–"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.3g} µs"


def verdict(actual, goal):
    if actual is None:
        return "not measured"
    if actual <= goal:
        return f"met ({actual / goal:.2g}× the goal)"
    return f"**missed**: {actual / goal:.2g}× the goal, {ms(actual - goal)} over"


def main(paths):
    print("| size | row | goal | actual (p99) | verdict |")
    print("| --- | --- | --- | --- | --- |")
    for path in paths:
        values = load(path)
        size = re.search(r"(\d+x\d+)", path)
        size = size.group(1).replace("x", " × ") if size else path

        event = find(values, "Watch event to operations", "Time")
        mallocs = find(values, "Watch event to operations", "Malloc (total)")
        operations = find(values, "Watch event to operations", "Operations per event")
        print(f"| {size} | one watch event, JSON bytes → operations | p99 < 1 ms; allocations in proportion to the change "
              f"| {ms(event)}; {mallocs:.0f} allocations, {operations:.0f} operations per event "
              f"| {verdict(event, 1e-3)} |" if event is not None and mallocs is not None and operations is not None
              else f"| {size} | one watch event, JSON bytes → operations | p99 < 1 ms | – | not measured: "
              f"KubernetesBenchmarks was not run (opt-in, see the notes) |")

        full = find(values, "Full sync's planning", "Time")
        drift = find(values, "Drift check's planning", "Time")
        solver = find(values, "Weight solver alone", "Time")
        shapes = find(values, "Weight solver alone", "Distinct service shapes")
        print(f"| {size} | weights of every service + the full plan | < 100 ms together "
              f"| from empty {ms(full)}; against an equal table {ms(drift)} (the solver alone: {ms(solver)}; "
              f"{shapes:.0f} distinct shape(s)) | from empty: {verdict(full, 0.1)}; equal: {verdict(drift, 0.1)} |"
              if shapes is not None else f"| {size} | weights + full plan | < 100 ms | – | not measured |")

        static = find(values, "Static file", "Time")
        kib = find(values, "Static file", "File size")
        print(f"| {size} | the static file parsed and checked | < 1 s (3 MB at 10,000 × 10) "
              f"| {ms(static)} for {kib / 1024:.2f} MiB | {verdict(static, 1.0)} |" if kib is not None
              else f"| {size} | static file | < 1 s | – | not measured |")

        static_bytes = find(values, "Memory held, static mode", "Retained bytes per destination")
        kube_bytes = find(values, "Memory held, Kubernetes mode", "Retained bytes per destination")
        if static_bytes is not None:
            held = kube_bytes if kube_bytes is not None else static_bytes
            mode = "Kubernetes mode" if kube_bytes is not None else "static mode"
            budget = "within" if held <= MEMORY_BUDGET else "**over**"
            kube = f"; Kubernetes mode {kube_bytes:.0f} B" if kube_bytes is not None else "; Kubernetes mode not measured"
            print(f"| {size} | memory held per destination (malloc'd bytes retained) | no host goal; 64 MiB at "
                  f"10,000 × 10 is {MEMORY_BUDGET:.0f} B per destination for the whole process "
                  f"| static mode {static_bytes:.0f} B{kube} "
                  f"| {mode} {budget} that budget ({held / MEMORY_BUDGET:.2g}×), before the runtime, "
                  f"stacks and the allocator's own overhead |")
        else:
            print(f"| {size} | memory per destination | – | – | not measured |")


if __name__ == "__main__":
    main(sys.argv[1:])
