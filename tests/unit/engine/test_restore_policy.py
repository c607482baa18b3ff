"""Which containers ``pallet system restore`` starts: dockerd's restore rules, from the record alone."""

from __future__ import annotations

from typing import Any

import pytest

from pallet.engine.restore import wanted
from pallet.engine.store import Record


def _rec(policy: str, retries: int = 0, **state: Any) -> Record:
    host = {"RestartPolicy": {"Name": policy, "MaximumRetryCount": retries}}
    return Record("c" * 64, "c", 0.0, {"HostConfig": host}, {"StartedAt": "2026-01-01T00:00:00Z"} | state)


@pytest.mark.parametrize(
    ("rec", "lost", "expected"),
    [
        (_rec("no"), True, False),
        (_rec(""), True, False),
        (_rec("always"), True, True),
        (_rec("always", HasBeenManuallyStopped=True), False, True),  # docker: even one stopped by hand
        (_rec("unless-stopped"), True, True),
        (_rec("unless-stopped", HasBeenManuallyStopped=True), False, False),
        (_rec("on-failure"), True, True),
        (_rec("on-failure"), False, False),  # exited on its own: its monitor already applied the policy
        (_rec("on-failure", 3, RestartCount=3), True, False),
        (_rec("on-failure", 3, RestartCount=2), True, True),
        (_rec("always", StartedAt=""), False, False),  # never started: created only
    ],
)
def test_wanted(rec: Record, lost: bool, expected: bool) -> None:
    assert wanted(rec, lost) is expected
