#!/usr/bin/env python3
"""Judges a kernel-test run from the VM bench: counts passed, failed and skipped tests.

    python3 Tests/vm/summarize.py RESULTS_DIR

Reads RESULTS_DIR/events.jsonl (Swift Testing's event stream, version 0) and, as a cross-check,
RESULTS_DIR/test-output.txt (Swift Testing's console output). Prints the failed and skipped tests
and a closing line "vm: N passed, N failed, N skipped". Exits 0 only when at least one test ran,
none failed, none was skipped and the run reached its end.

Swift Testing 6.3's own closing line ("Test run with N tests in M suites passed") counts skipped
tests among the N and says "passed" when some were skipped, so it cannot tell a skip from a pass:
hence the event stream.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# "➜ Test foo() skipped: "reason"", "➜ Suite "Name" skipped: ..." (the symbol varies by terminal).
TEXT_SKIPPED = re.compile(r"^\S+ (Test|Suite) (?P<name>.+?) skipped(: (?P<reason>.*))?$")
# "✔ Test foo() passed after 0.001 seconds." / "✘ Test foo() failed after ... with 1 issue."
TEXT_ENDED = re.compile(r"^\S+ Test (?P<name>.+?) (?P<verdict>passed|failed) after ")


def message_text(payload: dict) -> str:
    return " ".join(m.get("text", "") for m in payload.get("messages", []))


class EventStreamSummary:
    """What the event stream says about each test function."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.functions: set[str] = set()
        self.started: set[str] = set()
        self.ended: set[str] = set()
        self.skipped: dict[str, str] = {}
        self.failed: dict[str, list[str]] = {}
        self.skipped_suites: dict[str, str] = {}
        self.unattributed_issues: list[str] = []
        self.run_ended = False
        self.malformed_lines = 0

    def read(self, path: Path) -> None:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self.add(record["kind"], record["payload"])
            except (ValueError, KeyError, TypeError):
                self.malformed_lines += 1

    def add(self, kind: str, payload: dict) -> None:
        if kind == "test":
            test_id = payload["id"]
            self.names[test_id] = payload.get("displayName") or payload.get("name") or test_id
            if payload.get("kind") == "function":
                self.functions.add(test_id)
            return
        if kind != "event":
            return
        event = payload.get("kind")
        test_id = payload.get("testID")
        if event == "runEnded":
            self.run_ended = True
        elif event == "testStarted" and test_id:
            self.started.add(test_id)
        elif event == "testEnded" and test_id:
            self.ended.add(test_id)
        elif event == "testSkipped" and test_id:
            reason = message_text(payload)
            if test_id in self.functions:
                self.skipped[test_id] = reason
            else:
                self.skipped_suites[test_id] = reason
        elif event == "issueRecorded":
            issue = payload.get("issue", {})
            if issue.get("isKnown"):
                return
            text = message_text(payload)
            if test_id in self.functions:
                self.failed.setdefault(test_id, []).append(text)
            else:
                self.unattributed_issues.append(text)

    @property
    def passed(self) -> set[str]:
        return (self.started & self.ended & self.functions) - set(self.failed)

    @property
    def never_finished(self) -> set[str]:
        return (self.started & self.functions) - self.ended

    @property
    def never_ran(self) -> set[str]:
        return self.functions - self.started - set(self.skipped)


def text_output_counts(path: Path) -> tuple[list[str], int, int]:
    """Skipped lines, passed and failed test counts, from Swift Testing's console output."""
    skipped: list[str] = []
    passed = failed = 0
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = ANSI_ESCAPE.sub("", raw).strip()
        skip = TEXT_SKIPPED.match(line)
        if skip:
            if skip[1] == "Test":
                skipped.append(line)
            continue
        ended = TEXT_ENDED.match(line)
        if ended and not ended["name"].startswith(("run with", "case ")):
            if ended["verdict"] == "passed":
                passed += 1
            else:
                failed += 1
    return skipped, passed, failed


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    results = Path(argv[1])
    problems: list[str] = []

    status_file = results / "status"
    status = status_file.read_text().strip() if status_file.exists() else None
    if status is None:
        problems.append("the guest wrote no exit status: the VM failed to boot, crashed or timed out")
    elif status != "0":
        problems.append(f"the guest run exited with status {status}")

    text_path = results / "test-output.txt"
    text_skipped, text_passed, text_failed = (
        text_output_counts(text_path) if text_path.exists() else ([], 0, 0)
    )

    events_path = results / "events.jsonl"
    if events_path.exists():
        summary = EventStreamSummary()
        summary.read(events_path)
        passed, failed, skipped = len(summary.passed), len(summary.failed), len(summary.skipped)
        for test_id, issues in sorted(summary.failed.items()):
            print(f"FAILED   {summary.names.get(test_id, test_id)}  [{test_id}]")
            for issue in issues:
                print(f"         {issue}")
        for test_id, reason in sorted(summary.skipped.items()):
            print(f"SKIPPED  {reason}  [{test_id}]")
        for test_id, reason in sorted(summary.skipped_suites.items()):
            print(f"SKIPPED  {reason}")
        for issue in summary.unattributed_issues:
            print(f"ISSUE    {issue}")
        if summary.unattributed_issues:
            problems.append(f"{len(summary.unattributed_issues)} issue(s) recorded outside any test")
        if summary.skipped_suites:
            problems.append(f"{len(summary.skipped_suites)} suite(s) skipped")
        if summary.never_finished:
            names = ", ".join(sorted(summary.names.get(t, t) for t in summary.never_finished))
            problems.append(f"tests started but never ended (crash?): {names}")
        elif summary.never_ran and status is not None:
            names = ", ".join(sorted(summary.names.get(t, t) for t in summary.never_ran))
            problems.append(f"tests that neither ran nor skipped: {names}")
        if not summary.run_ended:
            problems.append("the event stream has no end of run: the test binary died")
        if summary.malformed_lines:
            problems.append(f"{summary.malformed_lines} unreadable line(s) in events.jsonl")
    else:
        problems.append("no events.jsonl: counts below come from the console output only")
        passed, failed, skipped = text_passed, text_failed, len(text_skipped)

    # Cross-check with the console output, in case the event stream format ever changes under us.
    if len(text_skipped) > skipped:
        for line in text_skipped:
            print(f"SKIPPED  (console) {line}")
        skipped = len(text_skipped)

    if failed:
        problems.append(f"{failed} test(s) failed")
    if skipped:
        problems.append(f"{skipped} test(s) skipped inside the VM: every kernel test must run there")
    if passed + failed == 0:
        problems.append("no kernel test ran")

    for problem in problems:
        print(f"problem: {problem}")
    print(f"vm: {passed} passed, {failed} failed, {skipped} skipped")
    fatal = [p for p in problems if not p.startswith("no events.jsonl")]
    return 1 if fatal else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
