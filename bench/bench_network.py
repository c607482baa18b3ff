"""Network setup per container: `run --rm busybox true` on the default bridge network against
`--network none`, for pallet and a private docker (containerd + dockerd), side by side.

The difference of medians is what a container's network costs its `run`: a namespace, a veth pair into
the bridge, an address lease, masquerade and teardown. pallet's default bridge exists only while a
container uses it, so pallet is measured twice on it: "cold" (every run makes and removes the bridge
and its rules) and "warm" (a detached container keeps the bridge up, as docker's default bridge always
is). dockerd runs on a bridge made here (`--bridge`, its own subnet), with `--iptables=false` so that
it leaves no chains on this shared host; its per-container work on the default network (veth, address,
no published port) involves no iptables anyway.

Rounds are interleaved (each round runs every case once, in rotating order).

    sudo .venv/bin/python bench/bench_network.py [--rounds 15] [--no-docker]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.scratch import scratch, timed  # noqa: E402
from tests.helpers.net import free_subnet  # noqa: E402

PALLET = str(Path(sys.executable).parent / "pallet")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:1] + argv[-6:])}: rc={p.returncode}: {p.stderr.strip()[-300:]}")
    return p


def timed_run(argv: list[str]) -> float:
    return timed(lambda: _run(argv))


@contextlib.contextmanager
def docker(d: Path, tar: Path) -> Iterator[list[str]]:
    from tests.compat.conftest import Daemon, dockerd_argv, remove_cgroups_naming, start_containerd

    d.mkdir()
    br = "pl-dk" + uuid.uuid4().hex[:6]
    net = free_subnet("10.87").removesuffix(".0/24")
    subprocess.run(["ip", "link", "add", br, "type", "bridge"], check=True)
    containerd = dockerd = None
    try:
        subprocess.run(["ip", "addr", "add", f"{net}.1/24", "dev", br], check=True)
        subprocess.run(["ip", "link", "set", br, "up"], check=True)
        containerd, ctd_sock = start_containerd(d)
        dockerd = Daemon(dockerd_argv(d, ctd_sock, "--ip-masq=false", bridge=br), d / "dockerd.log")
        dockerd.wait_for_socket(d / "docker.sock", timeout=60)
        cli = ["docker", "--host", f"unix://{d}/docker.sock"]
        _run([*cli, "import", str(tar), "bench-busybox"])
        yield cli
        ids = subprocess.run([*cli, "ps", "-aq"], capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run([*cli, "rm", "-f", *ids], capture_output=True)
    finally:
        if dockerd is not None:
            dockerd.stop()
        if containerd is not None:
            containerd.stop()
        subprocess.run(["ip", "link", "del", br], capture_output=True)
        remove_cgroups_naming(d.name)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-docker", action="store_true")
    args = ap.parse_args()
    with scratch("net-bench") as (d, tar):
        pallet = [PALLET, "--root", f"{d}/pallet", "--runroot", f"{d}/pallet-run"]
        keeper = None
        try:
            _run([*pallet, "import", str(tar), "busybox"])
            cases: dict[str, Callable[[], float]] = {
                "pallet --network none": lambda: timed_run(
                    [*pallet, "run", "--rm", "--network", "none", "busybox", "true"]
                ),
                "pallet bridge, cold": lambda: timed_run([*pallet, "run", "--rm", "busybox", "true"]),
            }

            def warm() -> float:
                return timed_run([*pallet, "--root", f"{d}/pallet-warm", "run", "--rm", "busybox", "true"])

            _run([*pallet, "--root", f"{d}/pallet-warm", "import", str(tar), "busybox"])
            keeper = _run(
                [*pallet, "--root", f"{d}/pallet-warm", "run", "-d", "busybox", "sleep", "3600"]
            ).stdout.strip()
            cases["pallet bridge, warm"] = warm
            with (
                docker(d / f"dk{uuid.uuid4().hex[:8]}", tar)
                if not args.no_docker and shutil.which("dockerd")
                else _none() as dk
            ):
                if dk is not None:
                    cases["docker --network none"] = lambda: timed_run(
                        [*dk, "run", "--rm", "--network", "none", "bench-busybox", "true"]
                    )
                    cases["docker bridge"] = lambda: timed_run([*dk, "run", "--rm", "bench-busybox", "true"])
                names = list(cases)
                times: dict[str, list[float]] = {n: [] for n in names}
                for n in names:
                    cases[n]()  # warm the page cache and first-use work
                for r in range(args.rounds):
                    for n in names[r % len(names) :] + names[: r % len(names)]:
                        times[n].append(cases[n]())
            print(
                f"## `run --rm busybox true`, default bridge against --network none ({args.rounds} rounds, ms)\n"
            )
            print("| case | median | min | max |\n|---|---:|---:|---:|")
            for n, xs in times.items():
                print(f"| {n} | {statistics.median(xs):.0f} | {min(xs):.0f} | {max(xs):.0f} |")
            med = {n: statistics.median(xs) for n, xs in times.items()}
            print()
            for eng in ("pallet", "docker"):
                none = med.get(f"{eng} --network none")
                for n, v in med.items():
                    if none is not None and n.startswith(eng) and "none" not in n:
                        print(f"- network cost, {n}: **{v - none:.0f} ms** per container")
        finally:
            if keeper:
                subprocess.run(
                    [*pallet, "--root", f"{d}/pallet-warm", "rm", "-f", keeper], capture_output=True
                )
    return 0


@contextlib.contextmanager
def _none() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    sys.exit(main())
