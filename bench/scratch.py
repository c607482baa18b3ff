"""What the engine benches share: pallet byte-compiled, a scratch dir with a busybox layer tar, and
everything under it undone afterwards (mounts, files, the peers' cgroup parents); timed runs."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.compat.conftest import remove_cgroups_naming  # noqa: E402
from tests.compat.images import layer_tar  # noqa: E402
from tests.helpers.rootfs import make_busybox_rootfs  # noqa: E402


@contextlib.contextmanager
def scratch(label: str) -> Iterator[tuple[Path, Path]]:
    """(/tmp/pallet-t<id>-<label>, its busybox.tar). pallet's modules are byte-compiled first (into
    the ignored __pycache__), as an installed package's are, so that no run pays for compiling; with
    -f: compileall trusts a .pyc whose source changed within the same second (it compares mtimes
    only), while import, which compares sizes too, then compiles that module in every process."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-f", str(REPO / "pallet")], check=True, capture_output=True
    )
    d = Path("/tmp") / f"pallet-t{uuid.uuid4().hex[:10]}-{label}"
    d.mkdir()
    try:
        yield d, layer_tar(make_busybox_rootfs(d / "rootfs"), d / "busybox.tar")
    finally:
        with open("/proc/self/mounts") as f:
            under = [line.split()[1] for line in f if line.split()[1].startswith(str(d) + "/")]
        for target in sorted(under, reverse=True):  # the peers' and pallet's own mounts, deepest first
            subprocess.run(["umount", "-l", target], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
        remove_cgroups_naming(d.name)  # podman's libpod_parent


def timed(run: Callable[[], object]) -> float:
    """ms of one ``run()``; one that fails (raises RuntimeError) is retried, twice at most, and not
    timed: other sessions on this host briefly mount a v1 hugetlb hierarchy that runc trips on."""
    for attempt in range(3):
        t0 = time.perf_counter()
        try:
            run()
        except RuntimeError as e:
            if attempt == 2:
                raise
            print(f"retrying after: {str(e)[-160:]}", file=sys.stderr)
            continue
        return (time.perf_counter() - t0) * 1000
    raise AssertionError("unreachable")
