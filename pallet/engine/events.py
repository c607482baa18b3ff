"""The engine's event log: one JSON object a line in ``<root>/engine/events.jsonl``, appended by the
CLI (create, start, kill, pause, unpause, rename, destroy) and by monitors (die, health_status), each
line one O_APPEND write so that writers never interleave. ``pallet events`` reads it back and then
follows it as docker's does: an inotify watch on the log's directory wakes it on each append (no
polling), and it stops only at ``--until`` (or when killed).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
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


def _parse(lines: list[bytes]) -> Iterator[dict[str, Any]]:
    for raw in lines:
        try:
            yield json.loads(raw)
        except ValueError:
            continue  # a line cut by a crash mid-write


def follow(root: Path, until: float = float("inf")) -> Iterator[dict[str, Any]]:
    """Every event in the log, then each one appended after, until the clock passes ``until``."""
    import select

    from pallet.linux import syscalls as s

    log = path(root)
    log.parent.mkdir(parents=True, exist_ok=True)
    sysc = s.default()
    ino = sysc.inotify_init1(s.IN_NONBLOCK | s.IN_CLOEXEC)
    try:
        # watch before the first read: an append between the read and the watch would be missed
        sysc.inotify_add_watch(ino, str(log.parent), s.IN_MODIFY | s.IN_CREATE | s.IN_MOVED_TO)
        offset, partial = 0, b""
        while True:
            try:
                with open(log, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            offset += len(data)
            *lines, partial = (partial + data).split(b"\n")  # a line still being written waits
            yield from _parse(lines)
            left = until - time.time()
            if left <= 0:
                return
            ready, _, _ = select.select([ino], [], [], None if left == float("inf") else left)
            while ready:
                try:
                    os.read(ino, 65536)  # the directory's events only say "look again"
                except BlockingIOError:
                    break
    finally:
        os.close(ino)


def read(root: Path) -> list[dict[str, Any]]:
    try:
        data = path(root).read_bytes()
    except FileNotFoundError:
        return []
    return list(_parse(data.splitlines()))
