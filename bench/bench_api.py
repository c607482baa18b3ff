"""The Docker Engine API, side by side: the same docker CLI commands against `pallet system service` and
against dockerd (a private containerd + dockerd, as tests/compat/test_dockerd.py starts them).

Commands: `run --rm --network none busybox true`, `ps -a`, `images`, `inspect <container>`. Rounds are
interleaved (each round runs every command on both servers, in an order that alternates), so a busy
neighbour hits both alike. Both get the same busybox rootfs through `docker import`; everything lives
under one /tmp/pallet-t<hex>-api-bench directory, removed at the end.

    sudo .venv/bin/python bench/bench_api.py [--rounds 15] [--docker /usr/bin/docker]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_engine import Engine, docker_engine  # noqa: E402
from bench.scratch import scratch  # noqa: E402
from tests.compat.conftest import Daemon  # noqa: E402

PALLET = str(Path(sys.executable).parent / "pallet")
IMAGE = "bench-busybox"
COMMANDS: list[tuple[str, tuple[str, ...]]] = [
    ("run --rm busybox true", ("run", "--rm", "--network", "none", IMAGE, "true")),
    ("ps -a", ("ps", "-a")),
    ("images", ("images",)),
    ("inspect", ("inspect", "bench-inspect")),
]


def timed(e: Engine, args: tuple[str, ...]) -> float:
    t0 = time.perf_counter()
    e(*args)
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument(
        "--docker", default=shutil.which("docker") or "docker", help="the docker CLI to drive both"
    )
    args = ap.parse_args()
    with scratch("api-bench") as (d, tar):
        service = None
        try:
            sock = d / "pallet.sock"
            service = Daemon(
                [PALLET, "--root", f"{d}/pallet", "--runroot", f"{d}/pallet-run", "system", "service",
                 "--host", f"unix://{sock}"],
                d / "service.log",
            )  # fmt: skip
            service.wait_for_socket(sock)
            pallet = Engine(
                "pallet", [args.docker, "--host", f"unix://{sock}"], IMAGE, ("pallet-monitor", str(d))
            )
            pallet("import", str(tar), IMAGE)
            with docker_engine(d / f"dk{uuid.uuid4().hex[:8]}", tar) as dk:
                dk.argv[0] = args.docker
                servers = [pallet, dk]
                for e in servers:
                    e("create", "--name", "bench-inspect", "--network", "none", IMAGE, "true")
                    for _, cmd in COMMANDS:
                        e(*cmd)  # warm: page cache, first-use work
                times: dict[tuple[str, str], list[float]] = {}
                for r in range(args.rounds):
                    for label, cmd in COMMANDS:
                        for e in servers if r % 2 == 0 else servers[::-1]:
                            times.setdefault((label, e.name), []).append(timed(e, cmd))
                version = subprocess.run(
                    [args.docker, "--version"], capture_output=True, text=True
                ).stdout.strip()
                print(
                    f"## docker CLI against each server ({args.rounds} interleaved rounds, ms; {version})\n"
                )
                print(
                    "| command | pallet median | dockerd median | pallet min–max | dockerd min–max | pallet / dockerd |"
                )
                print("|---|---:|---:|---:|---:|---:|")
                for label, _ in COMMANDS:
                    p, k = times[(label, "pallet")], times[(label, "docker")]
                    mp, mk = statistics.median(p), statistics.median(k)
                    print(
                        f"| `{label}` | {mp:.0f} | {mk:.0f} | {min(p):.0f}–{max(p):.0f} | {min(k):.0f}–{max(k):.0f} "
                        f"| **{mp / mk:.2f}** |"
                    )
                ids = pallet("ps", "-aq").stdout.split()
                if ids:
                    pallet("rm", "-f", *ids, check=False)
        finally:
            if service is not None:
                service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
