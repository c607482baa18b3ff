"""An engine of its own for each test: --root/--runroot under the test's workdir, a busybox image
imported from a rootfs tar, and a teardown that force-removes every container (then leakcheck looks)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.hostquirks import hugetlb_off_cgroup2

VENV_BIN = Path(sys.executable).parent
PALLET = (
    [str(VENV_BIN / "pallet")]
    if (VENV_BIN / "pallet").exists()
    else [sys.executable, "-m", "pallet.cli.main"]
)
RUNTIMES = ["pallet-runtime", "runc"]


@pytest.fixture(scope="session")
def busybox_tar(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("image") / "busybox.tar"
    with tarfile.open(out, "w") as tar:
        tar.add(busybox_rootfs, arcname=".")
    return out


class Pallet:
    def __init__(self, workdir: Path, token: str, runtime: str = "pallet-runtime") -> None:
        self.root = workdir / "root"
        self.runroot = workdir / "run"
        self.token = token
        self.runtime = runtime

    def cmd(self, *args: str) -> list[str]:
        return [*PALLET, "--root", str(self.root), "--runroot", str(self.runroot), *args]

    def __call__(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(self.cmd(*args), capture_output=True, text=True, input=input, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"pallet {' '.join(args)}: rc={p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def run(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """``run`` with the test's runtime and cgroup parent (so leakcheck sees its cgroups)."""
        extra = ["--cgroup-parent", f"/{self.token}"]
        if self.runtime != "pallet-runtime":
            extra += ["--runtime", self.runtime]
        return self("run", *extra, *args, **kw)  # type: ignore[arg-type]

    def name(self, suffix: str) -> str:
        return f"{self.token}-{suffix}"

    def cleanup(self) -> None:
        ids = self("ps", "-aq", "--no-trunc", check=False).stdout.split()
        if ids:
            self("rm", "-f", "-v", *ids, check=False)
        # the runtime removes each container's cgroup; the parent named by --cgroup-parent is ours
        for hier in Path("/sys/fs/cgroup").iterdir():
            parent = hier / self.token
            if parent.is_dir():
                parent.rmdir()


def make_pallet(workdir: Path, token: str, busybox_tar: Path, runtime: str) -> Iterator[Pallet]:
    if runtime != "pallet-runtime" and shutil.which(runtime) is None:
        pytest.skip(f"{runtime} is not installed")
    p = Pallet(workdir, token, runtime)
    p("import", str(busybox_tar), "busybox")
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture
def pallet(workdir: Path, token: str, busybox_tar: Path, leakcheck: None) -> Iterator[Pallet]:
    yield from make_pallet(workdir, token, busybox_tar, "pallet-runtime")


# crun needs a host-wide change (hugetlb_off_cgroup2) that other runtimes, runc included, trip over:
# scripts/test.sh runs `hostwide` tests on their own after the parallel run
@pytest.fixture(params=[*RUNTIMES, pytest.param("crun", marks=pytest.mark.hostwide)])
def any_runtime(
    request: pytest.FixtureRequest, workdir: Path, token: str, busybox_tar: Path, leakcheck: None
) -> Iterator[Pallet]:
    if request.param == "crun" and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        pytest.skip("crun moves hugetlb between cgroup hierarchies: only in a run of its own (-m hostwide)")
    with hugetlb_off_cgroup2(workdir) if request.param == "crun" else contextlib.nullcontext():
        yield from make_pallet(workdir, token, busybox_tar, request.param)
