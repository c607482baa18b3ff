from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import runtime_cmd
from tests.helpers.leaks import find_leaks
from tests.helpers.runtime import RuntimeCLI


@pytest.fixture
def rt(workdir: Path, token: str, leakcheck: None) -> Iterator[RuntimeCLI]:
    """pallet-runtime with a private --root; every container the test made is force-deleted after it."""
    cli = RuntimeCLI(runtime_cmd(), workdir / "state")
    yield cli
    r = cli("list", "-q", check=False)
    for cid in r.stdout.split():
        cli("delete", "--force", cid, check=False)


@pytest.fixture
def cid(token: str) -> str:
    return token


def assert_clean(token: str, rt: RuntimeCLI) -> None:
    assert find_leaks(token) == []
    assert not (rt.root / token).exists()
