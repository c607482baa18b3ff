"""Restart policies across a "reboot" (every monitor and container process SIGKILLed): ``pallet system
restore`` and ``pallet system service`` as it starts bring back what dockerd would as it restores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.engine.conftest import Pallet

pytestmark = pytest.mark.root


def _inspect(p: Pallet, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(p("inspect", name).stdout)[0]  # type: ignore[no-any-return]


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _reboot(p: Pallet, *names: str) -> None:
    """What a host going down does to a running container: its monitor and its process die at once
    (the monitor first: it must not see its child exit and apply the policy itself)."""
    for name in names:
        info = _inspect(p, name)
        cid, init = info["Id"], info["State"]["Pid"]
        mons = [pid for pid in os.listdir("/proc") if pid.isdigit() and b"monitor" in _cmdline(pid)
                and cid.encode() in _cmdline(pid)]  # fmt: skip
        assert len(mons) == 1 and init > 0
        os.kill(int(mons[0]), signal.SIGKILL)
        os.kill(init, signal.SIGKILL)
    for name in names:
        assert p("inspect", "-f", "{{.State.Status}}", name).stdout == "dead\n"


def test_restore_after_reboot(pallet: Pallet, workdir: Path) -> None:
    no, always, stopped, unless, always_stopped = (
        pallet.name(s) for s in ("no", "always", "stopped", "unless", "alwaysstopped")
    )
    pallet.run("-d", "--name", no, "busybox", "sleep", "60")
    pallet.run("-d", "--name", always, "--restart", "always", "busybox", "sleep", "60")
    pallet.run("-d", "--name", stopped, "--restart", "unless-stopped", "busybox", "sleep", "60")
    pallet.run("-d", "--name", unless, "--restart", "unless-stopped", "busybox", "sleep", "60")
    pallet.run("-d", "--name", always_stopped, "--restart", "always", "busybox", "sleep", "60")
    pallet("create", "--name", pallet.name("never"), "--restart", "always", "busybox", "true")
    pallet("stop", "-t", "0", stopped)
    pallet("kill", always_stopped)
    _reboot(pallet, no, always, unless)
    r = pallet("system", "restore")
    # always: even one the user stopped; unless-stopped: not one the user stopped; never started: not
    assert sorted(r.stdout.split()) == sorted([always, unless, always_stopped])
    status = {n: pallet("inspect", "-f", "{{.State.Status}}", n).stdout.strip()
              for n in (no, always, stopped, unless, always_stopped)}  # fmt: skip
    assert status == {no: "dead", always: "running", stopped: "exited", unless: "running",
                      always_stopped: "running"}  # fmt: skip
    assert pallet("exec", always, "echo", "back").stdout == "back\n"
    assert pallet("system", "restore").stdout == ""  # nothing more to do: those that run are left alone
    # a start clears "stopped by the user": the next reboot brings it back
    pallet("start", stopped)
    _reboot(pallet, stopped, always)
    # the API service restores as it starts (as dockerd does), then serves; -t 1: it exits when idle
    sock = workdir / "api.sock"
    p = subprocess.run(pallet.cmd("system", "service", "-H", f"unix://{sock}", "-t", "1"),
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert sorted(p.stderr.split("\n")[:2]) == sorted([always, stopped]), p.stderr
    for n in (stopped, always):
        assert pallet("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", n).stdout == "running 0\n"
