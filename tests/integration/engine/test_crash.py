"""Crash safety: a pallet process SIGKILLed at any moment of run or rm leaves a state that the next
command reports and repairs; after ``rm -f`` nothing is left (leakcheck: mounts, cgroups, processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.integration.engine.conftest import Pallet

pytestmark = pytest.mark.root

# spread over the whole of a `run -d` (about 0.3 s here): import, record, snapshot, mount, monitor, start
DELAYS = [0.01, 0.04, 0.07, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3]


def _killed(p: Pallet, delay: float, *args: str) -> None:
    proc = subprocess.Popen(p.cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)  # the point of the test: a kill at an arbitrary moment
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_run_and_rm_are_repaired(pallet: Pallet) -> None:
    for i, delay in enumerate(DELAYS):
        _killed(pallet, delay, "run", "-d", "--cgroup-parent", f"/{pallet.token}", "--name", pallet.name(f"k{i}"),
                "busybox", "sleep", "60")  # fmt: skip
    rows = pallet("ps", "-a", "--format", "{{.Names}} {{.State}}").stdout.splitlines()
    states = dict(r.split() for r in rows)
    assert set(states.values()) <= {"created", "running", "dead"}, states
    # whatever was left starts (if whole) or is reported (if not), and every one can be removed
    for name, state in states.items():
        if state == "created":
            pallet("start", name)
            assert pallet("inspect", "-f", "{{.State.Status}}", name).stdout == "running\n"
        elif state == "dead":
            r = pallet("start", name, check=False)
            assert r.returncode == 125 and "rm -f" in r.stderr
    running = pallet("ps", "--format", "{{.Names}}").stdout.split()
    for delay, name in zip(DELAYS, running, strict=False):
        _killed(pallet, delay / 2, "rm", "-f", name)
    left = pallet("ps", "-aq").stdout.split()
    if left:
        pallet("rm", "-f", *left)
    assert pallet("ps", "-aq").stdout == ""
    assert os.listdir(pallet.root / "containers") == []
    snapshots = pallet("snapshot", "ls", check=False).stdout
    assert "pallet.image" not in snapshots
