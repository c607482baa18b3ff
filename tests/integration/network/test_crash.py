"""A pallet killed at any moment of a `run` on a network, or of its `rm`, leaves nothing that `rm -f`
does not undo: no namespace file, veth, lease, rule or bridge (the default one goes with its last user)."""

from __future__ import annotations

import signal
import subprocess
import time

from tests.integration.network.conftest import NetPallet, free_port

DELAYS = [0.02, 0.06, 0.1, 0.14, 0.18, 0.22, 0.26, 0.3, 0.36]


def _killed(p: NetPallet, delay: float, *args: str) -> None:
    proc = subprocess.Popen(p.cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)  # the point of the test: a kill at an arbitrary moment
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_run_and_rm_on_networks_leave_nothing(net: NetPallet) -> None:
    user, _ = net.network("crash")
    for i, delay in enumerate(DELAYS):
        where = (
            ["--network", user] if i % 2 else ["-p", f"{free_port()}:80"]
        )  # a user network, or the default
        _killed(net, delay, "run", "-d", "--cgroup-parent", f"/{net.token}", "--name", net.name(f"k{i}"),
                *where, "busybox", "sleep", "60")  # fmt: skip
    running = net("ps", "--format", "{{.Names}}").stdout.split()
    for delay, name in zip(DELAYS, running, strict=False):
        _killed(net, delay / 2, "rm", "-f", name)
    left = net("ps", "-aq").stdout.split()
    if left:
        net("rm", "-f", *left)
    state = net.host_state()  # the user network stays until it is removed; nothing of any container
    assert all(s.startswith(("link", "rules of network")) for s in state), state
    net("network", "rm", user)
    assert net.host_state() == []
    assert net("network", "inspect", "-f", "{{json .IPAM.Config}}", "bridge").stdout.strip() == "[]"
