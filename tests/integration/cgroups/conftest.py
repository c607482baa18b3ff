"""Fixtures of the real-cgroup tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.helpers.held import Held


@pytest.fixture
def held(token: str) -> Iterator[Callable[[str], Held]]:
    procs: list[Held] = []

    def start(code: str) -> Held:
        h = Held(code, token)
        procs.append(h)
        return h

    try:
        yield start
    finally:
        for h in procs:
            h.stop()
