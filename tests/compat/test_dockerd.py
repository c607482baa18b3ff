"""dockerd drives pallet-runtime: `dockerd --add-runtime pallet=PATH`, `docker run --runtime pallet`.

One containerd and one dockerd per module, each with its roots, state, pid file and socket under a
pallet-t dir; no bridge and no iptables, so the host's network is untouched. dockerd gives the shim
`<exec-root>/runtime-runc/<namespace>` as the runtime's --root.
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
    Daemon,
    assert_nothing_left,
    dockerd_argv,
    exec_pid,
    mounts_under,
    need,
    peer_dir,
    start_containerd,
    unique_id,
    wait_until,
)

# with `-n N --dist loadgroup`, one worker runs the module: one peer, started once
pytestmark = [pytest.mark.compat, pytest.mark.root, pytest.mark.xdist_group("dockerd")]

IMAGE = "pallet-busybox:latest"


@dataclass
class Docker:
    dir: Path
    daemon: Daemon
    env: dict[str, str]
    baseline_mounts: list[str]

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = ["docker", "-H", f"unix://{self.dir}/docker.sock", *args]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=self.env, stdin=subprocess.DEVNULL
        )

    def check(self, *args: str) -> str:
        p = self(*args)
        assert p.returncode == 0, self.explain(p)
        return p.stdout.strip()

    def explain(self, p: subprocess.CompletedProcess[str]) -> str:
        return f"{p.args}: rc={p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}\ndockerd:\n{self.daemon.log_tail(10)}"

    def runtime_root(self) -> Path:
        return self.dir / "exec" / "runtime-runc" / self.dir.name


@pytest.fixture(scope="module")
def docker(busybox_tar: Path) -> Iterator[Docker]:
    need("dockerd", "docker", "containerd", "containerd-shim-runc-v2")
    with peer_dir("dockerd") as d:
        containerd, ctd_sock = start_containerd(d)
        dockerd = None
        try:
            dockerd = Daemon(
                dockerd_argv(d, ctd_sock, "--add-runtime", f"pallet={PALLET_RUNTIME}"), d / "dockerd.log"
            )
            dockerd.wait_for_socket(d / "docker.sock", timeout=60)
            env = dict(os.environ, DOCKER_CONFIG=str(d / "cli"))
            dk = Docker(d, dockerd, env, [])
            dk.check("import", str(busybox_tar), IMAGE)
            dk.baseline_mounts = mounts_under(d)
            yield dk
            dk("container", "prune", "--force")
        finally:
            if dockerd is not None:
                dockerd.stop()
            containerd.stop()


def _gone(docker: Docker, cid: str) -> None:
    assert docker("container", "inspect", cid).returncode != 0
    assert_nothing_left(cid, docker.dir, docker.baseline_mounts)


def test_run_output_and_exit_code(docker: Docker) -> None:
    name = unique_id()
    p = docker("run", "--name", name, "--runtime", "pallet", "--network", "none", IMAGE,
               "sh", "-c", "echo hello-pallet from $$; exit 3")  # fmt: skip
    try:
        assert p.returncode == 3, docker.explain(p)
        assert p.stdout.strip() == "hello-pallet from 1"
        cid = docker.check("inspect", "--format", "{{.Id}}", name)
        assert docker.check("inspect", "--format", "{{.HostConfig.Runtime}}", name) == "pallet"
    finally:
        docker("rm", "--force", name)
    _gone(docker, cid)


def test_exec_then_stop(docker: Docker) -> None:
    name = unique_id()
    p = docker("run", "-d", "--name", name, "--runtime", "pallet", "--network", "none", IMAGE, *TRAP_TERM)
    try:
        assert p.returncode == 0, docker.explain(p)
        cid = p.stdout.strip()
        wait_until(lambda: "ready" in docker("logs", name).stdout, 30, f"{name} to start")
        state = subprocess.run(
            [str(PALLET_RUNTIME), "--root", str(docker.runtime_root()), "state", cid],
            capture_output=True,
            text=True,
        )
        assert state.returncode == 0, state.stderr
        assert json.loads(state.stdout)["status"] == "running"

        p = docker("exec", name, "sh", "-c", "echo exec-pid $$; ps -o pid,args; exit 4")
        assert p.returncode == 4, docker.explain(p)
        assert exec_pid(p.stdout) > 1  # a new process in the container, not its init
        assert "trap" in p.stdout  # sees the init: it joined the container's pid namespace
        p = docker(
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
        assert p.returncode == 0, docker.explain(p)
        assert p.stdout.split() == ["1000", "/tmp", "y"]

        docker.check("stop", "--time", "20", name)  # SIGTERM through `pallet-runtime kill`; 7 says it arrived
        assert docker.check("inspect", "--format", "{{.State.ExitCode}}", name) == "7"
    finally:
        docker("rm", "--force", name)
    _gone(docker, cid)
