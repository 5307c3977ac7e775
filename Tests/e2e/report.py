#!/usr/bin/python3
"""Turns an e2e run's results.json into report.md and report.png (Debian's python3-matplotlib).

    python3 report.py RESULTS_DIR [--vm-seconds N]

report.md: per scenario the target, effective and observed share of each measurement, the failures,
every check and the verdict; the statistical tolerance and why. report.png: a bar chart of target,
effective and observed share per measurement with the tolerance, drawn by matplotlib (Agg, no
display: run it with Debian's /usr/bin/python3, which has python3-matplotlib). Exits 1 unless every
scenario in results.json passed; the last line printed is "e2e: N passed, N failed".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

TOLERANCE_TEXT = """\
**Statistical tolerance.** Each measurement counts which version answered N new connections. A
connection is a trial whose chance of reaching the canary is the share the kernel really gives, the
agent's *effective* share p (the solver reports it: the target rounded to what the scheduler can do,
e.g. sh's 256 buckets). If the trials were independent the observed share would be binomial with
standard deviation sqrt(p(1−p)/N); a measurement passes when |observed − effective| ≤ 4·sqrt(p(1−p)/N)
(never less than half a connection), which a correct agent misses by chance about once in 16,000
measurements, while a wrong weight (e.g. 25 % instead of 10 % over 2,000 connections: 22 σ) cannot
pass. The distance from the target to the effective share is the solver's own rounding and is shown,
not added to the tolerance, because the agent states it (`canary-agent explain`); where the solver can
hit the target exactly (rr, wrr) a scenario also checks that effective equals target. rr and wrr are
deterministic cycles, so their observed shares sit far inside the bound. For sh and mh the kernel
hashes the *source address*, so every connection from one address goes to the same place: the
independent trials are the distinct client addresses, not the connections, and N is the number of
addresses (≥ 500)."""

# ------------------------------------------------------------------------------------ chart

TARGET = "#a0a0a0"
EFFECTIVE = "#5a8cdc"
PASS = "#28a046"
FAIL = "#d23228"


def chart(measurements: list[dict], path: str, title: str) -> None:
    """Three bars per measurement (target, effective, observed share), the tolerance around the
    effective share as a bracket on the observed bar, the observed percentage above it."""
    # Debian's python3-matplotlib, drawn by Agg into a file: no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import PercentFormatter

    count = max(1, len(measurements))
    figure = Figure(figsize=(max(10.0, 1.2 + 0.8 * count), 5.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.26
    positions = range(len(measurements))
    percent_of = lambda value: 100 * max(0.0, min(1.0, value))  # noqa: E731
    # The outline in the bar's colour keeps a 0 % bar visible as a line.
    for offset, values, colors in (
            (-width, [m["target"] for m in measurements], TARGET),
            (0, [m["effective"] or 0 for m in measurements], EFFECTIVE),
            (width, [m["observed"] for m in measurements], [PASS if m["pass"] else FAIL for m in measurements])):
        axes.bar([x + offset for x in positions], [percent_of(v) for v in values], width, color=colors,
                 edgecolor=colors, linewidth=0.8)
    legend = [Patch(color=TARGET, label="target"), Patch(color=EFFECTIVE, label="effective"),
              Patch(color=PASS, label="observed, pass"), Patch(color=FAIL, label="observed, fail")]
    for x, m in zip(positions, measurements):
        label_at = percent_of(m["observed"])
        if m["effective"] is not None:
            low, high = (percent_of(m["effective"] - m["tolerance"]), percent_of(m["effective"] + m["tolerance"]))
            band = axes.errorbar(x + width, (low + high) / 2, yerr=(high - low) / 2, color="black", capsize=5,
                                 elinewidth=1, label="tolerance around effective")
            legend[4:] = [band]
            label_at = max(label_at, high)
        axes.annotate(f"{100 * m['observed']:.1f}", (x + width, label_at), xytext=(0, 2),
                      textcoords="offset points", ha="center", va="bottom", fontsize=7)
    axes.set_xticks(list(positions), [m["id"] for m in measurements])
    axes.set_xlim(-0.6, count - 0.4)
    axes.set_ylim(0, 108)
    axes.set_yticks(range(0, 101, 25))
    axes.yaxis.set_major_formatter(PercentFormatter())
    axes.yaxis.grid(True, color="#dcdcdc")
    axes.set_axisbelow(True)
    axes.set_title(title, loc="left", pad=26)
    axes.set_xlabel("measurement (id as in report.md)")
    axes.set_ylabel("share of the named version")
    axes.legend(handles=legend, ncol=len(legend), loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False,
                fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


# ------------------------------------------------------------------------------------ Markdown


def percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def render(results: dict, vm_seconds: float | None) -> tuple[str, list[dict]]:
    scenarios = results.get("scenarios", [])
    passed = sum(1 for s in scenarios if s["passed"])
    measurements = []
    lines = [
        "# canary-agent end to end on a real kernel",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(results.get('started', time.time())))} in a VM "
        f"with Linux {results.get('kernel', '?')} (emulated; IPVS, nginx backends in network namespaces, "
        f"clients with 600 source addresses). Scenarios took {results.get('seconds', 0):.0f} s"
        + (f", the whole VM run {vm_seconds:.0f} s" if vm_seconds else "") + ".",
        "",
        f"**{passed} of {len(scenarios)} scenarios passed.** New connections per measurement: "
        f"{results.get('connections_per_measurement', '?')}"
        + (" (a quick debugging run: a measurement wants at least 2,000)"
           if int(results.get('connections_per_measurement') or 0) < 2000 else "") + ".",
        "",
        "![target, effective and observed share per measurement](report.png)",
        "",
        "| id | scenario | measurement | scheduler | target | effective | observed | N | tolerance ± | failures | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scenarios:
        for index, m in enumerate(s["measurements"], 1):
            m = dict(m, id=f"{s['number']}.{index}")
            measurements.append(m)
            lines.append(
                f"| {m['id']} | {s['number']} {s['name']} | {m['label']} ({m['version']}) | {m['scheduler']} | "
                f"{percent(m['target'])} | {percent(m['effective'])} | {percent(m['observed'])} | "
                f"{m['n']} {m['trials']} | {100 * m['tolerance']:.2f} pp | {m['failures']} | "
                f"{'pass' if m['pass'] else '**FAIL**'} |")
    lines += ["", TOLERANCE_TEXT, "", "## Scenarios", ""]
    for s in scenarios:
        verdict = "passed" if s["passed"] else "**FAILED**"
        lines += [f"### {s['number']}. {s['title']} — {verdict} ({s['seconds']:.0f} s)", ""]
        for m in s["measurements"]:
            errors = ", ".join(f"{k} {v}" for k, v in m.get("errors", {}).items())
            lines.append(f"- measurement *{m['label']}*: {m['version']} target {percent(m['target'])}, effective "
                         f"{percent(m['effective'])}, observed {percent(m['observed'])} "
                         f"({m['ok']} answers of {m['connections']} connections: "
                         + ", ".join(f"{k} {v}" for k, v in sorted(m.get("by_version", {}).items()))
                         + f"), failures {m['failures']}" + (f" ({errors})" if errors else "")
                         + f" — {'pass' if m['pass'] else '**FAIL**'}")
        for c in s["checks"]:
            lines.append(f"- {'✔' if c['pass'] else '✘ **FAILED**:'} {c['what']}" + (f" — {c['detail']}" if c["detail"] else ""))
        for note in s.get("notes", []):
            if "\n" in note:
                lines += ["", "```text", note.rstrip(), "```", ""]
            else:
                lines.append(f"- note: {note}")
        if s.get("error"):
            lines += ["", "Error:", "", "```text", s["error"].rstrip(), "```"]
        lines.append("")
    lines.append(f"e2e: {passed} passed, {len(scenarios) - passed} failed")
    return "\n".join(lines) + "\n", measurements


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="e2e report")
    parser.add_argument("results")
    parser.add_argument("--vm-seconds", type=float)
    arguments = parser.parse_args(argv)
    path = os.path.join(arguments.results, "results.json")
    try:
        with open(path) as file:
            results = json.load(file)
    except (OSError, ValueError) as error:
        print(f"report: cannot read {path}: {error}", file=sys.stderr)
        print("e2e: 0 passed, 1 failed")
        return 1
    markdown, measurements = render(results, arguments.vm_seconds)
    with open(os.path.join(arguments.results, "report.md"), "w") as file:
        file.write(markdown)
    try:
        chart(measurements, os.path.join(arguments.results, "report.png"),
              "canary-agent end to end: share of the named version per measurement")
    except ImportError as error:
        print(f"report: no chart ({error}): install python3-matplotlib (Tests/vm/install-deps.sh)", file=sys.stderr)
    scenarios = results.get("scenarios", [])
    for s in scenarios:
        print(f"  {'PASS' if s['passed'] else 'FAIL'}  {s['number']:2} {s['name']:18} {s['title']}"
              + (f"  [{s['error'].splitlines()[0][:150]}]" if s.get("error") else ""))
        for c in s["checks"]:
            if not c["pass"]:
                print(f"          ✘ {c['what']}: {c['detail'][:200]}")
        for m in s["measurements"]:
            if not m["pass"]:
                print(f"          ✘ {m['label']}: observed {percent(m['observed'])} vs effective "
                      f"{percent(m['effective'])} ±{100 * m['tolerance']:.2f} pp, failures {m['failures']}")
    passed = sum(1 for s in scenarios if s["passed"])
    print(f"e2e: {passed} passed, {len(scenarios) - passed} failed")
    return 0 if scenarios and passed == len(scenarios) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
