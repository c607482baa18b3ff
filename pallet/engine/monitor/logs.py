"""json-file logs as docker writes them: one JSON object a line, ``{"log", "stream", "time"}``, with the
time in RFC 3339 nanoseconds (UTC). Bounded: when the file passes ``max_size`` it is renamed to
``.1`` (``.1`` to ``.2``, …) and the oldest past ``max_file`` is dropped, as docker's rotation does.
"""

from __future__ import annotations

import os
import time
from _json import encode_basestring  # the C encoder: json itself would import re into the monitor

LINE_MAX = 16 * 1024  # docker splits a line that has no newline after 16 KiB


def timestamp(now: float | None = None) -> str:
    ns = time.time_ns() if now is None else int(now * 1e9)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"
    )


class JsonLog:
    def __init__(self, path: str, max_size: int, max_file: int) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self.fd).st_size
        self.partial = {"stdout": b"", "stderr": b""}

    def write(self, stream: str, data: bytes) -> list[bytes]:
        """Log ``data``; returns the JSON lines written (for followers)."""
        buf = self.partial[stream] + data
        lines = []
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) >= LINE_MAX:
                    lines.append(buf[:LINE_MAX])
                    buf = buf[LINE_MAX:]
                    continue
                break
            lines.append(buf[: nl + 1])
            buf = buf[nl + 1 :]
        self.partial[stream] = buf
        return self._emit(stream, lines)

    def flush(self) -> list[bytes]:
        out = []
        for stream, buf in self.partial.items():
            if buf:
                out += self._emit(stream, [buf])
                self.partial[stream] = b""
        return out

    def _emit(self, stream: str, lines: list[bytes]) -> list[bytes]:
        out = []
        t = timestamp()
        tail = f',"stream":"{stream}","time":"{t}"}}\n'
        for line in lines:
            out.append(('{"log":' + encode_basestring(line.decode("utf-8", "replace")) + tail).encode())
        batch: list[bytes] = []
        for record in out:  # rotate between records, never inside one (as docker's json-file does)
            if self.max_size > 0 and self.size + len(record) > self.max_size and self.size > 0:
                self._write(batch)
                batch = []
                self._rotate()
            batch.append(record)
            self.size += len(record)
        self._write(batch)
        return out

    def _write(self, batch: list[bytes]) -> None:
        data = b"".join(batch)
        while data:
            data = data[os.write(self.fd, data) :]

    def _rotate(self) -> None:
        os.close(self.fd)
        if self.max_file == 1:
            os.truncate(self.path, 0)
        else:
            for i in range(self.max_file - 1, 0, -1):
                src = self.path if i == 1 else f"{self.path}.{i - 1}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i}")
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = 0  # the caller counts the record that comes next
