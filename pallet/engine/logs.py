"""Reading a container's json-file logs (with its rotated files), and following them through the
monitor: it answers a follower with the log's size at that moment and then sends every new line,
so what is read from the files and what comes from the socket neither overlap nor leave a gap.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pallet.engine import attach


def _files(path: Path) -> list[Path]:
    rotated = sorted(
        (p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: int(p.suffix[1:]),
        reverse=True,
    )
    return [*rotated, path]


def read(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Every record in the logs, oldest first; ``limit`` bytes of the current file at most."""
    for f in _files(path):
        try:
            with open(f, "rb") as fh:
                data = fh.read(limit) if f == path and limit is not None else fh.read()
        except FileNotFoundError:
            continue
        for line in data.splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                continue


def follow(
    path: Path, sock_path: str, running: bool
) -> tuple[list[dict[str, Any]], Iterator[dict[str, Any]]]:
    """(the logs so far, new records until the container exits)."""
    if running:
        try:
            s = attach.connect(sock_path, b"l")
        except Exception:  # noqa: BLE001 - the monitor is gone: what is on disk is all there is
            running = False
    if not running:
        return list(read(path)), iter(())
    first = s.recv(65536)
    if first[:1] != b"O":
        s.close()
        return list(read(path)), iter(())
    return list(read(path, int(first[1:]))), _stream(s)


def _stream(s: attach.Conn) -> Iterator[dict[str, Any]]:
    with s:
        while True:
            msg = s.recv(65536)
            if not msg or msg[:1] == b"x":
                return
            if msg[:1] == b"L":
                yield json.loads(msg[1:])


def tail(records: list[dict[str, Any]], n: str) -> list[dict[str, Any]]:
    if n in ("all", ""):
        return records
    k = int(n)
    return records[-k:] if k > 0 else []
