"""dockerd as the oracle, on its own private data root: docker loads what pallet saves (same image
ID, same files) and pallet loads what docker saves."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.image.cliutil import CLI, exported_tree
from tests.unit.image.tarutil import tree

pytestmark = [
    pytest.mark.root,
    pytest.mark.compat,
    pytest.mark.skipif(not (shutil.which("dockerd") and shutil.which("docker")), reason="no docker"),
]


@pytest.fixture
def docker(workdir: Path, leakcheck: None) -> Iterator[list[str]]:
    """A private dockerd (vfs, no networking) that dies with the test."""
    base = workdir / "docker"
    base.mkdir()
    sock = base / "sock"
    log = open(base / "log", "wb")
    proc = subprocess.Popen(
        ["dockerd", "--data-root", str(base / "data"), "--exec-root", str(base / "exec"), "--pidfile", str(base / "pid"),
         "-H", f"unix://{sock}", "--bridge", "none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
         "--storage-driver", "vfs"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    cli = ["docker", "-H", f"unix://{sock}"]
    try:
        deadline = time.monotonic() + 60  # a daemon's readiness has no event to wait on: ask it
        while subprocess.run([*cli, "version"], capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip("dockerd did not start: " + (base / "log").read_text()[-300:])
            time.sleep(0.2)
        yield cli
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        log.close()
        subprocess.run(["umount", "-R", "-l", str(base)], capture_output=True)
        # dockerd stops its containerd; make sure, since its command line names our directory
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if str(base).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass


def test_docker_loads_pallet_saves_and_back(docker: list[str], busybox_rootfs: Path, workdir: Path) -> None:
    cli = CLI(workdir / "root")
    try:
        rootfs_tar = workdir / "rootfs.tar"
        subprocess.run(["tar", "-C", str(busybox_rootfs), "-cf", str(rootfs_tar), "."], check=True)
        image_id = cli("import", "-c", 'CMD ["/bin/sh"]', str(rootfs_tar), "bb:pallet").stdout.strip()
        cli("save", "-o", str(workdir / "p.tar"), "bb:pallet")
        out = subprocess.run(
            [*docker, "load", "-i", str(workdir / "p.tar")], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "Loaded image: bb:pallet"
        inspect = subprocess.run(
            [*docker, "image", "inspect", "-f", "{{.Id}} {{json .Config.Cmd}}", "bb:pallet"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert inspect.stdout.strip() == f'{image_id} ["/bin/sh"]'
        cid = subprocess.run(
            [*docker, "create", "bb:pallet"], capture_output=True, text=True, check=True
        ).stdout.strip()
        subprocess.run([*docker, "export", "-o", str(workdir / "d-export.tar"), cid], check=True)
        (workdir / "d-root").mkdir()
        subprocess.run(
            ["tar", "-C", str(workdir / "d-root"), "-xf", str(workdir / "d-export.tar")], check=True
        )
        docker_view = tree(workdir / "d-root")
        # docker adds its own mount points and files (/.dockerenv, /etc/hosts, ...); the rest must match
        ours = tree(busybox_rootfs)
        assert {k: v for k, v in docker_view.items() if k in ours} == ours
        subprocess.run([*docker, "save", "-o", str(workdir / "d.tar"), "bb:pallet"], check=True)
        back = CLI(workdir / "back")
        assert back("load", "-i", str(workdir / "d.tar")).stdout == "Loaded image: bb:pallet\n"
        assert back("images", "-q", "--no-trunc").stdout.strip() == image_id
        back.mounts = cli.mounts
        assert exported_tree(back, "bb:pallet", "x", workdir / "back-tree") == ours
    finally:
        cli.unmount_all()
