"""The runtime's log: pallet-runtime, runc and crun run with ``--log FILE --log-format json`` write one
JSON object a line; the last error of it is why a verb failed (their stderr may hold nothing)."""

from __future__ import annotations

import os


def last_error(path: str | os.PathLike[str]) -> str:
    """The message of the last ``error`` or ``fatal`` line, "" if none (or no log)."""
    import json  # at a failure only: the monitor keeps json (and re) out of its idle memory

    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("level") in ("error", "fatal"):
            return str(rec.get("msg", "")).strip()
    return ""
