"""Work-arounds for this kind of host that tests and benchmarks share, each undone on exit."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

UNIFIED_CONTROLLERS = Path("/sys/fs/cgroup/unified/cgroup.controllers")


@contextlib.contextmanager
def hugetlb_off_cgroup2(workdir: Path) -> Iterator[None]:
    """crun refuses a hybrid host whose cgroup2 mount carries a controller (here: hugetlb). Mounting that
    controller as a v1 hierarchy moves it off cgroup2; unmounting the emptied hierarchy moves it back.
    Host-wide: callers keep anything that needs hugetlb on cgroup2 from running meanwhile."""
    on_cgroup2 = UNIFIED_CONTROLLERS.exists() and "hugetlb" in UNIFIED_CONTROLLERS.read_text().split()
    # named for the controller: runc takes a v1 mount's base name for the subsystem it mounts in containers
    mnt = workdir / "hugetlb-v1" / "hugetlb"
    if on_cgroup2:
        mnt.mkdir(parents=True)
        subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(mnt)], check=True)
    try:
        yield
    finally:
        if on_cgroup2:
            _move_hugetlb_back(mnt)


def _move_hugetlb_back(mnt: Path) -> None:
    """Unmount the v1 hierarchy once it is empty. The kernel keeps a v1 hierarchy alive past its last
    umount while a child cgroup is still dying (a container's, just removed); it lets go only at a
    later umount: mount it again and retry until hugetlb is back on cgroup2."""
    deadline = time.monotonic() + 20
    while True:
        for sub in sorted((p for p in mnt.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _remove_cgroup(sub, deadline)
        subprocess.run(["umount", str(mnt)], check=True)
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            if "hugetlb" in UNIFIED_CONTROLLERS.read_text().split():
                return
            time.sleep(0.05)
        if time.monotonic() > deadline:
            raise RuntimeError("hugetlb did not return to cgroup2 after its v1 hierarchy was unmounted")
        subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(mnt)], check=True)


def _remove_cgroup(d: Path, deadline: float) -> None:
    """rmdir a child of the hugetlb hierarchy; a container that a failed test left in it is killed
    first (else the hierarchy, and hugetlb with it, would stay off cgroup2 for the whole host)."""
    while True:
        try:
            d.rmdir()
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        for pid in (d / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
