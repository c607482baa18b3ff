"""docker cp sees the container's whole mount view: a running container's volumes, binds and tmpfs
mounts (its own mount namespace), a stopped one's volumes and binds; links resolve in the container."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.engine.conftest import Pallet

pytestmark = pytest.mark.root


def test_cp_running_sees_volumes_binds_and_tmpfs(any_runtime: Pallet, workdir: Path) -> None:
    pallet = any_runtime
    name, vol = pallet.name("cpm"), pallet.name("vol")
    bind = workdir / "bind"
    bind.mkdir()
    (bind / "host.txt").write_text("on the host\n")
    (workdir / "in.txt").write_text("from host\n")
    pallet.run("-d", "--name", name, "-v", f"{vol}:/vol", "-v", f"{bind}:/bind", "--tmpfs", "/scratch",
               "busybox", "sleep", "60")  # fmt: skip
    pallet("exec", name, "sh", "-c", "echo v > /vol/v; echo t > /scratch/t")
    out = workdir / "out"
    out.mkdir()
    for path in ("/vol/v", "/bind/host.txt", "/scratch/t"):
        pallet("cp", f"{name}:{path}", str(out))
    assert [(out / f).read_text() for f in ("v", "host.txt", "t")] == ["v\n", "on the host\n", "t\n"]
    for d in ("/vol/", "/bind/", "/scratch/"):
        pallet("cp", str(workdir / "in.txt"), f"{name}:{d}")
    r = pallet("exec", name, "cat", "/vol/in.txt", "/bind/in.txt", "/scratch/in.txt")
    assert r.stdout == "from host\n" * 3
    assert (bind / "in.txt").read_text() == "from host\n"  # through the bind, onto the host's directory
    r = pallet("cp", f"{name}:/scratch/nope", str(out), check=False)
    assert r.returncode == 125 and f"Could not find the file /scratch/nope in container {name}" in r.stderr
    # a paused container is copied from the same way
    pallet("pause", name)
    pallet("cp", f"{name}:/scratch/t", str(workdir / "paused-t"))
    pallet("unpause", name)
    assert (workdir / "paused-t").read_text() == "t\n"
    # stopped: the volume and the bind are still there (the tmpfs is gone with the container, as docker's)
    pallet("stop", "-t", "0", name)
    pallet("cp", f"{name}:/vol/in.txt", str(workdir / "stopped-vol.txt"))
    pallet("cp", f"{name}:/bind/host.txt", str(workdir / "stopped-bind.txt"))
    assert (workdir / "stopped-vol.txt").read_text() == "from host\n"
    assert (workdir / "stopped-bind.txt").read_text() == "on the host\n"
    (workdir / "late.txt").write_text("late\n")
    pallet("cp", str(workdir / "late.txt"), f"{name}:/vol/")
    pallet("start", name)
    assert pallet("exec", name, "cat", "/vol/late.txt").stdout == "late\n"
    pallet("stop", "-t", "0", name)
    # the binds of a stopped container's copy were in a namespace of its own: none left on the host
    assert name not in Path("/proc/self/mountinfo").read_text()
    assert pallet.root.as_posix() + "/containers" not in Path("/proc/self/mountinfo").read_text()


def test_cp_links_in_mounts_stay_inside(pallet: Pallet, workdir: Path) -> None:
    name, vol = pallet.name("cpl"), pallet.name("vol")
    (workdir / "in.txt").write_text("from host\n")
    pallet.run("-d", "--name", name, "-v", f"{vol}:/vol", "--tmpfs", "/scratch", "busybox", "sleep", "60")
    # relative links that climb out of the volume's host directory would reach the host's /etc if they
    # were followed on the host; in the container they end at its own /etc
    pallet("exec", name, "sh", "-c", "ln -s ../../../../../../../../etc /vol/up; ln -s /etc /scratch/etc")
    pallet("cp", f"{name}:/vol/up/passwd", str(workdir / "pw"))
    assert (workdir / "pw").read_text().endswith("app:x:1000:1000:app:/home/app:/bin/sh\n")  # the image's
    pallet("cp", str(workdir / "in.txt"), f"{name}:/scratch/etc/{pallet.token}.txt")
    pallet("cp", str(workdir / "in.txt"), f"{name}:/vol/up/{pallet.token}-2.txt")
    assert not Path(f"/etc/{pallet.token}.txt").exists() and not Path(f"/etc/{pallet.token}-2.txt").exists()
    r = pallet("exec", name, "cat", f"/etc/{pallet.token}.txt", f"/etc/{pallet.token}-2.txt")
    assert r.stdout == "from host\n" * 2
    # the link itself is copied out, not what it points at (docker cp without -L)
    pallet("cp", f"{name}:/scratch/etc", str(workdir / "link"))
    assert os.readlink(workdir / "link") == "/etc"
    r = pallet("cp", str(workdir / "in.txt"), f"{name}:/vol/nodir/x.txt", check=False)
    assert r.returncode == 125 and f"Could not find the file /vol/nodir in container {name}" in r.stderr
    # stopped: the snapshot with the volume bound in; its links still resolve inside
    pallet("stop", "-t", "0", name)
    pallet("cp", f"{name}:/vol/up/passwd", str(workdir / "pw2"))
    assert (workdir / "pw2").read_text() == (workdir / "pw").read_text()
    pallet("cp", str(workdir / "in.txt"), f"{name}:/vol/up/{pallet.token}-3.txt")
    assert not Path(f"/etc/{pallet.token}-3.txt").exists()
