"""The engine reads the monitor's sync pipe line by line, leaving the next line in the pipe."""

from __future__ import annotations

import os

from pallet.engine.containers import _readline


def test_two_lines_written_at_once_are_read_one_by_one() -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"created 42\nstarted\n")
        os.close(w)
        assert _readline(r) == "created 42"
        assert _readline(r) == "started"
        assert _readline(r) == ""  # EOF: the monitor is gone
    finally:
        os.close(r)
