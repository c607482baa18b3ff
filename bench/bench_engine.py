"""The engine, side by side: `pallet run --rm busybox true` against `podman run --rm` and `docker run --rm`
(a private containerd + dockerd), then the memory each keeps per idle container: PSS of pallet-monitor
against podman's conmon and docker's containerd-shim-runc-v2, with N containers running `sleep`.

pallet is timed three more ways: with a container running under another root (each run's monitor is
then forked from that container's, monitor/sibling.py, rather than exec'd), with pallet-runtime named
by its path (exec'd for every verb: the path before the in-process fast path) and with runc.

Rounds are interleaved (each round runs every engine once, in a rotating order), so a busy neighbour
hits all alike. Every engine gets the same busybox rootfs (imported), `--network none`, its own roots
under one /tmp/pallet-t<hex>-engine-bench directory, which is removed at the end.

    sudo .venv/bin/python bench/bench_engine.py [--rounds 15] [--idle 20] [--no-docker]

pallet's modules are byte-compiled first (`compileall`, into the ignored __pycache__): an installed
package has its .pyc files, and a checkout run with PYTHONDONTWRITEBYTECODE would otherwise compile
every module on every start.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.scratch import scratch, timed  # noqa: E402

PALLET = str(Path(sys.executable).parent / "pallet")


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def pids_matching(*needles: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in cmd for n in needles):
            out.append(int(p))
    return out


class Engine:
    def __init__(
        self,
        name: str,
        argv: list[str],
        image: str,
        monitor: tuple[str, ...],
        env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.argv, self.image, self.monitor, self.env = name, argv, image, monitor, env

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([*self.argv, *args], capture_output=True, text=True, timeout=600, env=self.env)
        if check and p.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(args)}: rc={p.returncode}: {p.stderr.strip()[-400:]}")
        return p

    def run_true(self, extra: tuple[str, ...] = ()) -> float:
        """One timed `run --rm … true` (bench.scratch.timed: a failed run is retried, not timed)."""
        return timed(lambda: self("run", *extra, "--rm", "--network", "none", self.image, "true"))


@contextlib.contextmanager
def docker_engine(d: Path, tar: Path) -> Iterator[Engine]:
    from tests.compat.conftest import Daemon, dockerd_argv, remove_cgroups_naming, start_containerd

    d.mkdir()
    containerd, ctd_sock = start_containerd(d)
    dockerd = None
    try:
        dockerd = Daemon(dockerd_argv(d, ctd_sock), d / "dockerd.log")
        dockerd.wait_for_socket(d / "docker.sock", timeout=60)
        e = Engine(
            "docker",
            ["docker", "--host", f"unix://{d}/docker.sock"],
            "bench-busybox",
            ("containerd-shim", d.name),
        )
        e("import", str(tar), "bench-busybox")
        yield e
        ids = e("ps", "-aq").stdout.split()
        if ids:
            e("rm", "-f", *ids, check=False)
    finally:
        if dockerd is not None:
            dockerd.stop()
        containerd.stop()
        remove_cgroups_naming(d.name)  # dockerd's --cgroup-parent, podman's libpod_parent


def timings(engines: list[Engine], rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {e.name: [] for e in engines}
    for e in engines:
        e.run_true()  # warm: page cache, first-use work
    for r in range(rounds):
        order = engines[r % len(engines) :] + engines[: r % len(engines)]
        for e in order:
            out[e.name].append(e.run_true())
    return out


def idle_memory(e: Engine, n: int) -> tuple[float, int]:
    """(PSS KiB per container of the engine's per-container process, how many such processes)."""
    before = set(pids_matching(*e.monitor))
    for _ in range(n):
        e("run", "-d", "--network", "none", e.image, "sleep", "3600")
    time.sleep(2)  # let the monitors settle into their idle loop before reading their memory
    pids = [p for p in pids_matching(*e.monitor) if p not in before]
    total = sum(pss_kib(p) for p in pids)
    ids = e("ps", "-q").stdout.split()
    if ids:
        e("rm", "-f", *(["-t", "0"] if e.name == "podman" else []), *ids, check=False)
    return total / n, len(pids)


def summary(name: str, xs: list[float]) -> str:
    return f"| {name} | {statistics.median(xs):.0f} | {min(xs):.0f} | {max(xs):.0f} |"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--idle", type=int, default=20)
    ap.add_argument("--no-docker", action="store_true")
    args = ap.parse_args()
    with scratch("engine-bench") as (d, tar):
        pallet = Engine("pallet", [PALLET, "--root", f"{d}/pallet", "--runroot", f"{d}/pallet-run"], "busybox",
                        ("pallet-monitor", str(d)))  # fmt: skip
        pallet("import", str(tar), "busybox")
        pallet_runc = Engine("pallet --runtime runc", [*pallet.argv], "busybox", pallet.monitor)
        pallet_runc.run_true = lambda extra=("--runtime", "runc"): Engine.run_true(pallet_runc, extra)  # type: ignore[method-assign]
        # pallet-runtime named by its path: exec'd for every verb, as before the in-process fast path
        binary = str(Path(sys.executable).parent / "pallet-runtime")
        pallet_exec = Engine(
            "pallet --runtime <pallet-runtime path>", [*pallet.argv], "busybox", pallet.monitor
        )
        pallet_exec.run_true = lambda extra=("--runtime", binary): Engine.run_true(pallet_exec, extra)  # type: ignore[method-assign]
        # a second pallet root with one container running all along: each run's monitor is then forked
        # from that container's (monitor/sibling.py) instead of exec'd
        warm = Engine("pallet, a container running", [PALLET, "--root", f"{d}/pallet-w", "--runroot",
                      f"{d}/pallet-w-run"], "busybox", ("pallet-monitor", f"{d}/pallet-w/"))  # fmt: skip
        warm("import", str(tar), "busybox")
        warm("run", "-d", "--network", "none", "busybox", "sleep", "3600")
        conf = d / "containers.conf"
        # this VM: podman's default RLIMIT_NOFILE cannot be set (see tests/compat/test_podman.py); no systemd
        conf.write_text(
            '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n'
        )
        podman = Engine("podman", ["podman", "--root", f"{d}/podman", "--runroot", f"{d}/podman-run",
                                   "--storage-driver", "overlay", "--runtime", "runc"], "localhost/busybox",
                        ("conmon", str(d)), dict(os.environ, CONTAINERS_CONF=str(conf)))  # fmt: skip
        podman("import", str(tar), "busybox")
        engines = [pallet, warm, pallet_exec, pallet_runc, podman]
        with (
            docker_engine(d / f"dk{uuid.uuid4().hex[:8]}", tar)
            if not args.no_docker and shutil.which("dockerd")
            else _none() as dk
        ):
            if dk is not None:
                engines.append(dk)
            times = timings(engines, args.rounds)
            print(f"## `run --rm busybox true` ({args.rounds} interleaved rounds, ms)\n")
            print("| engine | median | min | max |\n|---|---:|---:|---:|")
            for name, xs in times.items():
                print(summary(name, xs))
            base = statistics.median(times["pallet"])
            print()
            for name, xs in times.items():
                if name != "pallet":
                    print(f"- {name} / pallet: **{statistics.median(xs) / base:.2f}**")
            print(f"\n## memory per idle container ({args.idle} containers running `sleep`)\n")
            print("| engine | process per container | PSS KiB per container | processes found |")
            print("|---|---|---:|---:|", flush=True)
            warm("rm", "-f", *warm("ps", "-aq").stdout.split())
            for e in engines:
                if e in (pallet_runc, pallet_exec, warm):
                    continue
                kib, count = idle_memory(e, args.idle)
                proc = {"pallet": "pallet-monitor", "podman": "conmon", "docker": "containerd-shim-runc-v2"}[
                    e.name
                ]
                print(f"| {e.name} | {proc} | {kib:.0f} | {count} |", flush=True)
    return 0


@contextlib.contextmanager
def _none() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    fn: Callable[[], int] = main
    sys.exit(fn())
