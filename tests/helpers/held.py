"""Processes for the real-cgroup tests: each starts blocked on stdin, so that all it does happens
inside the cgroup a test places it in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


class Held:
    """A Python process that waits for a line on stdin before running ``code`` (argv[1] is the token,
    so that leakcheck finds it)."""

    def __init__(self, code: str, token: str) -> None:
        prelude = "import sys\nsys.stdin.readline()\n"
        self.p = subprocess.Popen(
            [sys.executable, "-c", prelude + code, token],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.p.pid

    def release(self) -> None:
        self.send("go")

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def line(self) -> str:
        assert self.p.stdout is not None
        return self.p.stdout.readline().strip()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
