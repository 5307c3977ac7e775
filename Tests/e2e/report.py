#!/usr/bin/env python3
"""Turns an e2e run's results.json into report.md and report.png (standard library only).

    python3 report.py RESULTS_DIR [--vm-seconds N]

report.md: per scenario the target, effective and observed share of each measurement, the failures,
every check and the verdict; the statistical tolerance and why. report.png: a bar chart of target,
effective and observed share per measurement (drawn here: a tiny PNG writer and a 5×7 pixel font, so
the bench needs no plotting package). Exits 1 unless every scenario in results.json passed; the last
line printed is "e2e: N passed, N failed".
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
import zlib

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

# ------------------------------------------------------------------------------------ PNG


def png_bytes(width: int, height: int, pixels: bytearray) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    stride = width * 3
    raw = b"".join(b"\x00" + bytes(pixels[y * stride:(y + 1) * stride]) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


# 5×7 glyphs, one string of 7 rows of 5 bits each ("." off, "#" on).
FONT_ROWS = {
    "0": ".###.#...##..###.#.###..##...#.###.", "1": "..#...##....#....#....#....#...###.",
    "2": ".###.#...#....#...#...#...#...#####", "3": "#####...#...#.....#.....##...#.###.",
    "4": "...#...##..#.#.#..#.#####...#....#.", "5": "######....####.....#....##...#.###.",
    "6": "..##..#...#....####.#...##...#.###.", "7": "#####....#...#...#...#....#....#...",
    "8": ".###.#...##...#.###.#...##...#.###.", "9": ".###.#...##...#.####....#...#..##..",
    "A": ".###.#...##...#######...##...##...#", "B": "####.#...##...#####.#...##...#####.",
    "C": ".###.#...##....#....#....#...#.###.", "D": "###..#..#.#...##...##...##..#.###..",
    "E": "######....#....####.#....#....#####", "F": "######....#....####.#....#....#....",
    "G": ".###.#...##....#.####...##...#.####", "H": "#...##...##...#######...##...##...#",
    "I": ".###...#....#....#....#....#...###.", "J": "..###...#....#....#....#.#..#..##..",
    "K": "#...##..#.#.#..##...#.#..#..#.#...#", "L": "#....#....#....#....#....#....#####",
    "M": "#...###.###.#.##...##...##...##...#", "N": "#...##...###..##.#.##..###...##...#",
    "O": ".###.#...##...##...##...##...#.###.", "P": "####.#...##...#####.#....#....#....",
    "Q": ".###.#...##...##...##.#.##..#..##.#", "R": "####.#...##...#####.#.#..#..#.#...#",
    "S": ".####.....#.....###.....#....#####.", "T": "#####..#....#....#....#....#....#..",
    "U": "#...##...##...##...##...##...#.###.", "V": "#...##...##...##...##...#.#.#...#..",
    "W": "#...##...##...##.#.##.#.##.#.#.#.#.", "X": "#...##...#.#.#...#...#.#.#...##...#",
    "Y": "#...##...#.#.#...#....#....#....#..", "Z": "#####....#...#...#...#...#....#####",
    " ": "...................................", ".": "...........................##...##.",
    ":": "......##...##........##...##.......", "%": "##...##..#...#...#...#...#..##...##",
    "-": "...............#####...............", "/": ".........#...#...#...#...#.........",
    "+": ".......#....#..#####..#....#.......", "(": "...#...#...#....#....#.....#.....#.",
    ")": ".#.....#.....#....#....#...#...#...", "=": "..........#####.....#####..........",
    ",": "......................##...#...#...", "_": "..............................#####",
    "#": ".#.#.#####.#.#..#.#.#####.#.#......", "?": ".###.#...#....#...#...#.........#..",
}


class Canvas:
    def __init__(self, width: int, height: int, background=(255, 255, 255)):
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def rect(self, x0: int, y0: int, x1: int, y1: int, color) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.width, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height, max(y0, y1))
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            start = (y * self.width + x0) * 3
            self.pixels[start:start + len(row)] = row

    def text(self, x: int, y: int, text: str, color=(0, 0, 0), scale: int = 2) -> int:
        for character in text.upper():
            glyph = FONT_ROWS.get(character, FONT_ROWS["?"])
            for row in range(7):
                for column in range(5):
                    if glyph[row * 5 + column] == "#":
                        self.rect(x + column * scale, y + row * scale, x + (column + 1) * scale,
                                  y + (row + 1) * scale, color)
            x += 6 * scale
        return x

    @staticmethod
    def text_width(text: str, scale: int = 2) -> int:
        return len(text) * 6 * scale

    def save(self, path: str) -> None:
        with open(path, "wb") as file:
            file.write(png_bytes(self.width, self.height, self.pixels))


TARGET = (160, 160, 160)
EFFECTIVE = (90, 140, 220)
PASS = (40, 160, 70)
FAIL = (210, 50, 40)


def chart(measurements: list[dict], path: str, title: str) -> None:
    group, bar, left, top, plot_height = 78, 18, 70, 80, 360
    width = max(1000, left + 20 + group * max(1, len(measurements)))
    height = top + plot_height + 70
    canvas = Canvas(width, height)
    canvas.text(left, 12, title, scale=2)
    x = left
    for label, color in (("TARGET", TARGET), ("EFFECTIVE", EFFECTIVE), ("OBSERVED PASS", PASS), ("OBSERVED FAIL", FAIL)):
        canvas.rect(x, 44, x + 14, 58, color)
        x = canvas.text(x + 20, 45, label, scale=2) + 24
    bottom = top + plot_height
    for percent in range(0, 101, 25):
        y = bottom - plot_height * percent // 100
        canvas.rect(left - 4, y, width - 10, y + 1, (220, 220, 220) if percent else (0, 0, 0))
        label = f"{percent}%"
        canvas.text(left - 10 - Canvas.text_width(label), y - 7, label)
    canvas.rect(left - 1, top, left, bottom, (0, 0, 0))
    for index, m in enumerate(measurements):
        x0 = left + 8 + index * group
        values = [(m["target"], TARGET), (m["effective"] if m["effective"] is not None else 0, EFFECTIVE),
                  (m["observed"], PASS if m["pass"] else FAIL)]
        for offset, (value, color) in enumerate(values):
            h = int(round(plot_height * max(0.0, min(1.0, value))))
            canvas.rect(x0 + offset * (bar + 2), bottom - max(h, 1), x0 + offset * (bar + 2) + bar, bottom, color)
        # The tolerance band around the effective share, as a bracket over the observed bar.
        if m["effective"] is not None:
            for edge in (m["effective"] - m["tolerance"], m["effective"] + m["tolerance"]):
                y = bottom - int(round(plot_height * max(0.0, min(1.0, edge))))
                canvas.rect(x0 + 2 * (bar + 2) - 3, y, x0 + 3 * (bar + 2) + 1, y + 1, (0, 0, 0))
        value_text = f"{100 * m['observed']:.1f}"
        observed_top = bottom - int(round(plot_height * max(0.0, min(1.0, m["observed"]))))
        canvas.text(x0 + 2 * (bar + 2) + (bar - Canvas.text_width(value_text, 1)) // 2, observed_top - 18,
                    value_text, scale=1)
        label = m["id"]
        canvas.text(x0 + (3 * (bar + 2) - Canvas.text_width(label)) // 2, bottom + 10, label)
    canvas.text(left, bottom + 40, "BARS PER MEASUREMENT (ID AS IN REPORT.MD): TARGET, EFFECTIVE, OBSERVED SHARE OF THE NAMED VERSION", scale=1)
    canvas.save(path)


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
        + (" (a quick debugging run: issue 6 asks for at least 2,000)"
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
    chart(measurements, os.path.join(arguments.results, "report.png"),
          "CANARY-AGENT E2E: SHARE OF THE NAMED VERSION PER MEASUREMENT")
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
