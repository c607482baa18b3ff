"""A container's monitor forked from another container's (pallet/engine/monitor/sibling.py): it is
its own process, named by its own container, and lives on when the monitor it came from dies."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.engine.conftest import Pallet

pytestmark = pytest.mark.root


def _state(p: Pallet, name: str) -> dict[str, object]:
    state: dict[str, object] = json.loads(p("inspect", name).stdout)[0]["State"]
    return state


def _processes_naming(cid: str, also: bytes = b"") -> list[int]:
    """Every process whose command line names ``cid`` (and ``also``): its monitor, and the create
    child forked from that while it lives."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if also in cmd and cid.encode() in cmd:
            found.append(int(pid))
    return found


def _monitor(cid: str) -> int:
    """The pallet-monitor whose command line names ``cid`` (as the engine finds it)."""
    found = _processes_naming(cid, b"pallet-monitor")
    assert len(found) == 1, found
    return found[0]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_sibling_monitor_outlives_the_monitor_it_was_forked_from(pallet: Pallet) -> None:
    p = pallet
    first, second = p.name("first"), p.name("second")
    cid1 = p.run("-d", "--name", first, "busybox", "sleep", "60").stdout.strip()
    cid = p.run("-d", "--name", second, "busybox", "sh", "-c", "echo up; sleep 60").stdout.strip()
    m1, m2 = _monitor(cid1), _monitor(cid)  # each names its own container (m2's argv rewritten)
    assert _parent(m2) == m1  # forked by the first monitor, its subreaper
    # none of the first container's files (its log, its pipes) stay open in the second monitor
    assert not any(cid1 in os.readlink(f"/proc/{m2}/fd/{fd}") for fd in os.listdir(f"/proc/{m2}/fd"))
    os.kill(m1, signal.SIGKILL)
    for _ in range(100):
        if _state(p, first)["Status"] != "running":
            break
        time.sleep(0.05)  # the kill is asynchronous; the record is reconciled on read
    assert _state(p, first)["Status"] == "dead"
    assert _state(p, second)["Status"] == "running"
    assert _parent(m2) != m1
    p("exec", second, "true")
    p("stop", "-t", "1", second)
    st = _state(p, second)
    assert st["Status"] == "exited" and st["ExitCode"] == 137
    assert p("logs", second).stdout == "up\n"
    p("rm", "-f", first, second)


def test_sibling_asked_before_the_bundle_runs_and_gives_up_cleanly(pallet: Pallet) -> None:
    # with a monitor running, a start asks it for the new monitor before the engine writes the bundle:
    # the new one forks its create child (which spawns the init) at once, then waits for the engine
    p = pallet
    first = p.name("first")
    cid1 = p.run("-d", "--name", first, "busybox", "sleep", "60").stdout.strip()
    m1 = _monitor(cid1)
    r = p.run("--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    cid = p.run("-d", "busybox", "sh", "-c", "echo up; sleep 60").stdout.strip()
    assert _parent(_monitor(cid)) == m1
    for _ in range(100):
        if p("logs", cid).stdout == "up\n":
            break
        time.sleep(0.05)
    assert p("logs", cid).stdout == "up\n"
    assert _state(p, cid)["Status"] == "running"
    # a start that fails after the ask (an unknown user, found while the spec is written): the new
    # monitor and its create child (which kills its init first) go; the first container is untouched
    name = p.name("nouser")
    r = p.run("--name", name, "-u", "nosuchuser", "busybox", "true", check=False)
    assert r.returncode == 125 and "unable to find user nosuchuser" in r.stderr
    bad = p("inspect", "-f", "{{.Id}}", name).stdout.strip()
    for _ in range(100):
        if not _processes_naming(bad):
            break
        time.sleep(0.05)
    assert _processes_naming(bad) == []
    assert _state(p, first)["Status"] == "running" and _monitor(cid1) == m1
    p("rm", "-f", cid, cid1, name)
