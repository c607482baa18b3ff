"""containerd drives pallet-runtime: `ctr run --runc-binary`, through the io.containerd.runc.v2 shim.

One containerd per module, with its root, state and sockets under a pallet-t dir; the shim calls
pallet-runtime with `--root <dir>/runtime/<namespace> --log <bundle>/log.json --log-format json`.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.compat.conftest import (
    IMAGE_NAME,
    PALLET_RUNTIME,
    TRAP_TERM,
    Daemon,
    assert_nothing_left,
    exec_pid,
    mounts_under,
    need,
    peer_dir,
    start_containerd,
    unique_id,
    wait_until,
)

# with `-n N --dist loadgroup`, one worker runs the module: one peer, started once
pytestmark = [pytest.mark.compat, pytest.mark.root, pytest.mark.xdist_group("containerd")]


@dataclass
class Ctr:
    dir: Path
    sock: Path
    daemon: Daemon
    baseline_mounts: list[str]

    @property
    def namespace(self) -> str:
        return self.dir.name

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "-a", str(self.sock), "-n", self.namespace, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def run_flags(self) -> list[str]:
        return [
            "--runc-binary", str(PALLET_RUNTIME), "--runc-root", str(self.dir / "runtime"),
            "--fifo-dir", str(self.dir / "fifo"),
        ]  # fmt: skip

    def task_status(self, cid: str) -> str | None:
        out = self("task", "ls").stdout.splitlines()[1:]
        for line in out:
            fields = line.split()
            if fields and fields[0] == cid:
                return fields[-1]
        return None

    def explain(self, p: subprocess.CompletedProcess[str]) -> str:
        return f"rc={p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}\ncontainerd:\n{self.daemon.log_tail(15)}"


@pytest.fixture(scope="module")
def ctr(busybox_oci_archive: Path) -> Iterator[Ctr]:
    need("containerd", "ctr", "containerd-shim-runc-v2")
    with peer_dir("containerd") as d:
        daemon, sock = start_containerd(d)
        try:
            c = Ctr(d, sock, daemon, [])
            p = c("images", "import", str(busybox_oci_archive))
            assert p.returncode == 0, c.explain(p)
            c.baseline_mounts = mounts_under(d)
            yield c
        finally:
            daemon.stop()
            # containerd puts tasks under /<namespace>/<id>; the runtime removes the leaf (as runc
            # does) and the namespace level is containerd's to remove, which it never does
            for ns_cgroup in Path("/sys/fs/cgroup").glob(f"*/{c.namespace}"):
                ns_cgroup.rmdir()


@pytest.mark.parametrize(
    ("script", "code", "output"), [("echo hello-pallet from $$", 0, "hello-pallet from 1"), ("exit 3", 3, "")]
)
def test_run_image(ctr: Ctr, script: str, code: int, output: str) -> None:
    cid = unique_id()
    p = ctr("run", "--rm", *ctr.run_flags(), IMAGE_NAME, cid, "sh", "-c", script)
    assert p.returncode == code, ctr.explain(p)
    assert p.stdout.strip() == output
    assert_nothing_left(cid, ctr.dir, ctr.baseline_mounts)


def test_run_rootfs_dir(ctr: Ctr, busybox_rootfs: Path) -> None:
    """`ctr run --rootfs DIR`: no snapshotter, the bundle's root is the caller's directory."""
    cid = unique_id()
    p = ctr("run", "--rm", *ctr.run_flags(), "--rootfs", str(busybox_rootfs), cid, "cat", "/etc/group")
    assert p.returncode == 0, ctr.explain(p)
    assert "root:x:0:" in p.stdout
    assert_nothing_left(cid, ctr.dir, ctr.baseline_mounts)


def test_exec_then_stop(ctr: Ctr) -> None:
    cid = unique_id()
    out = ctr.dir / f"fg-{uuid.uuid4().hex[:8]}.out"  # not named for cid: the leak check looks
    with out.open("w") as f:
        fg = subprocess.Popen(
            [
                "ctr",
                "-a",
                str(ctr.sock),
                "-n",
                ctr.namespace,
                "run",
                "--rm",
                *ctr.run_flags(),
                IMAGE_NAME,
                cid,
            ]
            + TRAP_TERM,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "ready" in out.read_text() or fg.poll() is not None, 30, f"{cid} to start")
        assert fg.poll() is None, out.read_text()
        assert ctr.task_status(cid) == "RUNNING"
        # the shim really drives pallet-runtime: the container is in its state directory
        state = subprocess.run(
            [str(PALLET_RUNTIME), "--root", str(ctr.dir / "runtime" / ctr.namespace), "state", cid],
            capture_output=True, text=True,
        )  # fmt: skip
        assert state.returncode == 0, state.stderr
        assert json.loads(state.stdout)["status"] == "running"

        p = ctr("task", "exec", "--fifo-dir", str(ctr.dir / "fifo"), "--exec-id", "e1", cid,
                "sh", "-c", "echo exec-pid $$; ps -o pid,args; exit 4")  # fmt: skip
        assert p.returncode == 4, ctr.explain(p)
        assert exec_pid(p.stdout) > 1  # a new process in the container, not its init
        assert "trap" in p.stdout  # sees the init: it joined the container's pid namespace

        p = ctr("task", "kill", cid)  # SIGTERM, through `pallet-runtime kill`
        assert p.returncode == 0, ctr.explain(p)
        assert fg.wait(timeout=30) == 7, out.read_text()
    finally:
        if fg.poll() is None:
            ctr("task", "kill", "-s", "SIGKILL", cid)
            fg.wait(timeout=30)
    assert_nothing_left(cid, ctr.dir, ctr.baseline_mounts)


def test_ps_pause_resume_kill_all(ctr: Ctr) -> None:
    """`ps --format json`, `pause`, `resume`, then `kill --all` and `delete` as the shim calls them."""
    cid = unique_id()
    p = ctr("run", "-d", *ctr.run_flags(), IMAGE_NAME, cid, "sh", "-c", "sleep 1000 & exec sleep 1001")
    assert p.returncode == 0, ctr.explain(p)
    try:
        assert ctr.task_status(cid) == "RUNNING"

        def pids() -> list[str]:
            return [line.split()[0] for line in ctr("task", "ps", cid).stdout.splitlines()[1:]]

        wait_until(lambda: len(pids()) == 2, 10, "both sleeps to show in `ctr task ps`")
        for verb, status in (("pause", "PAUSED"), ("resume", "RUNNING")):
            p = ctr("task", verb, cid)
            assert p.returncode == 0, ctr.explain(p)
            assert ctr.task_status(cid) == status
        p = ctr("task", "kill", "--all", "-s", "SIGKILL", cid)
        assert p.returncode == 0, ctr.explain(p)
        wait_until(lambda: ctr.task_status(cid) == "STOPPED", 20, f"{cid} to stop")
        p = ctr("task", "rm", cid)
        assert p.returncode == 0, ctr.explain(p)
    finally:
        ctr("task", "rm", "-f", cid)
        ctr("container", "rm", cid)
    assert ctr.task_status(cid) is None
    assert_nothing_left(cid, ctr.dir, ctr.baseline_mounts)
