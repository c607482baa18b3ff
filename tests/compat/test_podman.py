"""podman drives pallet-runtime: `podman --runtime PATH`, through conmon.

One podman store per module (root, runroot, tmpdir, network config, events log and containers.conf
under a pallet-t dir). The runtime's state goes there too, through a two-line wrapper that adds
`--root DIR`, the way a packaged runtime is configured: podman 4.3 neither passes `--runtime-flag`s on
to conmon's exit command (`podman container cleanup`) nor gives the runtime podman's environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.compat.conftest import (
    PALLET_RUNTIME,
    TRAP_TERM,
    assert_nothing_left,
    exec_pid,
    mounts_under,
    need,
    peer_dir,
    remove_cgroups_naming,
    unique_id,
    wait_until,
)

# with `-n N --dist loadgroup`, one worker runs the module: one peer, started once
pytestmark = [pytest.mark.compat, pytest.mark.root, pytest.mark.xdist_group("podman")]

IMAGE = "localhost/pallet-busybox:latest"


@dataclass
class Podman:
    dir: Path
    env: dict[str, str]
    baseline_mounts: list[str]
    runtime: Path

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        d = self.dir
        argv = [
            "podman", "--root", f"{d}/root", "--runroot", f"{d}/runroot", "--tmpdir", f"{d}/tmp",
            "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--network-config-dir", f"{d}/net", "--volumepath", f"{d}/volumes",
            "--runtime", str(self.runtime), *args,
        ]  # fmt: skip
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=self.env, stdin=subprocess.DEVNULL
        )

    def check(self, *args: str) -> str:
        p = self(*args)
        assert p.returncode == 0, explain(p)
        return p.stdout.strip()


def explain(p: subprocess.CompletedProcess[str]) -> str:
    return f"{p.args}: rc={p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"


@pytest.fixture(scope="module")
def podman(busybox_tar: Path) -> Iterator[Podman]:
    need("podman", "conmon")
    with peer_dir("podman") as d:
        conf = d / "containers.conf"
        # this VM: setrlimit(RLIMIT_NOFILE) fails without CAP_SYS_RESOURCE in the bounding set, and no systemd
        conf.write_text(
            "[containers]\ndefault_ulimits = []\n"
            f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nevents_logfile_path = "{d}/events.log"\n'
        )
        env = dict(os.environ, CONTAINERS_CONF=str(conf), CONTAINERS_CONF_OVERRIDE=str(conf))
        wrapper = d / "pallet-runtime"
        wrapper.write_text(f'#!/bin/sh\nexec {PALLET_RUNTIME} --root {d}/runtime "$@"\n')
        wrapper.chmod(0o755)
        pm = Podman(d, env, [], wrapper)
        try:
            pm.check("import", str(busybox_tar), IMAGE)
            pm.baseline_mounts = mounts_under(d)
            yield pm
        finally:
            pm("rm", "--all", "--force", "--time", "0")
            pm("rmi", "--all", "--force")
            remove_cgroups_naming(d.name)


def _gone(podman: Podman, cid: str, name: str) -> None:
    assert podman("container", "exists", name).returncode == 1
    for ident in (cid, name):
        assert_nothing_left(ident, podman.dir, podman.baseline_mounts)


def test_run_output_and_exit_code(podman: Podman) -> None:
    """With a terminal: pallet-runtime hands the pty master to conmon over --console-socket."""
    name = unique_id()
    p = podman("run", "-t", "--name", name, "--network", "none", IMAGE,
               "sh", "-c", "tty; echo hello-pallet from $$; exit 3")  # fmt: skip
    try:
        assert p.returncode == 3, explain(p)
        assert p.stdout.replace("\r", "").split("\n")[:2] == ["/dev/pts/0", "hello-pallet from 1"]
        cid = podman.check("inspect", "--format", "{{.Id}}", name)
        assert podman.check("inspect", "--format", "{{.OCIRuntime}}", name) == str(podman.runtime)
    finally:
        podman("rm", "--force", name)
    _gone(podman, cid, name)


def test_exec_then_stop(podman: Podman) -> None:
    name = unique_id()
    cid = podman.check("run", "-d", "--name", name, "--network", "none", IMAGE, *TRAP_TERM)
    try:
        wait_until(lambda: "ready" in podman("logs", name).stdout, 30, f"{name} to start")
        state = subprocess.run(
            [str(PALLET_RUNTIME), "--root", str(podman.dir / "runtime"), "state", cid],
            capture_output=True,
            text=True,
        )
        assert state.returncode == 0, state.stderr
        assert json.loads(state.stdout)["status"] == "running"

        p = podman("exec", name, "sh", "-c", "echo exec-pid $$; ps -o pid,args; exit 4")
        assert p.returncode == 4, explain(p)
        assert exec_pid(p.stdout) > 1  # a new process in the container, not its init
        assert "trap" in p.stdout  # sees the init: it joined the container's pid namespace
        p = podman(
            "exec",
            "--user",
            "1000:1000",
            "--workdir",
            "/tmp",
            "-e",
            "X=y",
            name,
            "sh",
            "-c",
            "id -u; pwd; echo $X",
        )
        assert p.returncode == 0, explain(p)
        assert p.stdout.split() == ["1000", "/tmp", "y"]

        podman.check("stop", "--time", "20", name)  # SIGTERM through `pallet-runtime kill`; 7 says it arrived
        assert podman.check("inspect", "--format", "{{.State.ExitCode}}", name) == "7"
    finally:
        podman("rm", "--force", "--time", "0", name)
    _gone(podman, cid, name)
