"""The engine's event log: one JSON object a line in ``<root>/engine/events.jsonl``, appended by the
CLI (create, start, kill, pause, unpause, rename, destroy) and by monitors (die, health_status), each
line one O_APPEND write so that writers never interleave. ``pallet events`` reads it back.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def path(root: Path) -> Path:
    return Path(root) / "engine" / "events.jsonl"


def line(action: str, cid: str, attrs: dict[str, str]) -> bytes:
    rec: dict[str, Any] = {"Type": "container", "Action": action, "Actor": {"ID": cid, "Attributes": attrs}}
    rec |= {"time": int(time.time()), "timeNano": time.time_ns()}
    return json.dumps(rec, separators=(",", ":")).encode() + b"\n"


def emit(root: Path, action: str, cid: str, attrs: dict[str, str]) -> None:
    fd = os.open(path(root), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line(action, cid, attrs))
    finally:
        os.close(fd)


def read(root: Path) -> list[dict[str, Any]]:
    try:
        data = path(root).read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for raw in data.splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue  # a line cut by a crash mid-write
    return out
