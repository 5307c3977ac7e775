#!/usr/bin/env python3
"""Writes the source revision into a linked canary-agent binary (see Sources/canary-agent/BuildInfo.swift).

    python3 deploy/stamp-revision.py BINARY REVISION

The binary carries the marker `canary-agent-revision=` followed by 64 NUL bytes, exactly once; this
overwrites the first bytes of that slot with REVISION (at most 63 bytes of [0-9A-Za-z._-], so the
slot stays NUL-terminated). A binary that was already stamped is refused: stamp a fresh build.
Exits 0 on success, 1 with one line on stderr otherwise.
"""
import re
import sys

MARKER = b"canary-agent-revision="
SLOT = 64


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 1
    path, revision = sys.argv[1], sys.argv[2].encode()
    if not re.fullmatch(rb"[0-9A-Za-z._-]{1,63}", revision):
        print(f"stamp-revision: '{sys.argv[2]}' is not a revision (1-63 of 0-9 A-Z a-z . _ -)", file=sys.stderr)
        return 1
    with open(path, "rb") as file:
        data = bytearray(file.read())
    empty = MARKER + b"\0" * SLOT
    count = data.count(empty)
    if count != 1:
        stamped = data.count(MARKER)
        why = "already stamped" if count == 0 and stamped == 1 else f"{count} empty slot(s), {stamped} marker(s)"
        print(f"stamp-revision: {path}: expected one empty revision slot, found {why}", file=sys.stderr)
        return 1
    start = data.find(empty) + len(MARKER)
    data[start:start + len(revision)] = revision
    with open(path, "r+b") as file:
        file.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
