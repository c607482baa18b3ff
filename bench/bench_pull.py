"""Pull of a large image from a local plain-HTTP registry: pallet against skopeo, podman and docker
side by side (root; never run by the tests).

The image is made here: ``--layers`` layers of random bytes (``--mb`` MB in all, so nothing
compresses and no tool gets a head start from a cache), written as an OCI layout and pushed by
skopeo to Debian's docker-registry on 127.0.0.1. Each run pulls into an empty store:

- pallet: ``pallet --root <new> pull`` (download, verify, unpack into overlay snapshots)
- podman: ``podman --root <new> pull`` (download, unpack into containers/storage overlay)
- docker: a private dockerd (temporary roots); ``docker rmi`` before each run (untimed)
- skopeo: ``skopeo copy docker://… oci:<new>`` (download and verify only, no unpack)

Every run starts after a ``sync``: without it, each run is slowed by the writeback of the last.

    sudo .venv/bin/python bench/bench_pull.py [--mb 160] [--layers 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.compat.conftest import Daemon, dockerd_argv, start_containerd  # noqa: E402
from tests.compat.registry_fixtures import oci_layout, start_registry  # noqa: E402

PALLET = str(Path(sys.executable).parent / "pallet")


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{cmd}: {p.stderr.strip()}")


def timed(runs: int, setup: Callable[[int], list[str]], env: dict[str, str] | None = None) -> list[float]:
    """Wall times of the command ``setup(i)`` returns (setup itself untimed). Dirty pages of the
    run before are written back first (``sync``), so no run pays for another's writeback."""
    out = []
    for i in range(runs):
        cmd = setup(i)
        os.sync()
        t0 = time.perf_counter()
        run(cmd, env)
        out.append(time.perf_counter() - t0)
    return out


def start_dockerd(d: Path) -> tuple[Daemon, Daemon, dict[str, str]]:
    containerd, sock = start_containerd(d)
    dockerd = Daemon(dockerd_argv(d, sock), d / "dockerd.log")
    dockerd.wait_for_socket(d / "docker.sock", timeout=60)
    env = dict(os.environ, DOCKER_CONFIG=str(d / "cli"), DOCKER_HOST=f"unix://{d}/docker.sock")
    return containerd, dockerd, env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=160, help="image size in MB (random, incompressible)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], help="tools to leave out: docker podman skopeo")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pallet-t-bench-pull-"))
    results: dict[str, list[float]] = {}
    try:
        per = args.mb * 1_000_000 // args.layers
        layers = [{f"data/blob{i}.bin": os.urandom(per)} for i in range(args.layers)]
        layout = oci_layout(base / "layout", "big", layers)
        size = sum((layout.path / "blobs/sha256" / d[7:]).stat().st_size for d in layout.layer_digests)
        with start_registry("plain") as reg:
            ref = f"{reg.host}/bench/big:1"
            run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout.path}:big", f"docker://{ref}"])
            print(f"image: {args.layers} layers, {size / 1e6:.1f} MB compressed, registry {reg.host}")

            def fresh(name: str, i: int) -> Path:
                d = base / f"{name}{i}"
                shutil.rmtree(d, ignore_errors=True)
                return d

            results["pallet"] = timed(
                args.runs, lambda i: [PALLET, "--root", str(fresh("pallet", i)), "pull", "-q", ref]
            )
            if "skopeo" not in args.skip:
                results["skopeo"] = timed(
                    args.runs,
                    lambda i: [
                        "skopeo",
                        "copy",
                        "--src-tls-verify=false",
                        f"docker://{ref}",
                        f"oci:{fresh('sk', i)}:x",
                    ],
                )
            if "podman" not in args.skip and shutil.which("podman"):
                results["podman"] = timed(
                    args.runs,
                    lambda i: [
                        "podman",
                        "--root",
                        str(fresh("podman", i)),
                        "--runroot",
                        str(base / f"podman-run{i}"),
                        "--storage-driver",
                        "overlay",
                        "pull",
                        "-q",
                        "--tls-verify=false",
                        ref,
                    ],  # fmt: skip
                )
            if "docker" not in args.skip and shutil.which("dockerd"):
                d = base / "dockerd"
                d.mkdir()
                containerd, dockerd, env = start_dockerd(d)
                try:

                    def docker_setup(i: int) -> list[str]:
                        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True, env=env)
                        return ["docker", "pull", "-q", ref]

                    results["docker"] = timed(args.runs, docker_setup, env)
                finally:
                    dockerd.stop()
                    containerd.stop()
        pallet = statistics.median(results["pallet"])
        print(
            f"\npull of {size / 1e6:.0f} MB in {args.layers} layers, median of {args.runs} (fresh store each run)"
        )
        print(f"{'tool':8} {'median s':>9} {'MB/s':>7} {'vs pallet':>10}   runs")
        for tool, samples in results.items():
            m = statistics.median(samples)
            runs = " ".join(f"{s:.2f}" for s in samples)
            print(f"{tool:8} {m:9.2f} {size / 1e6 / m:7.0f} {m / pallet:9.2f}x   {runs}")
    finally:
        for mnt in sorted(
            (line.split()[1] for line in open("/proc/self/mounts") if line.split()[1].startswith(str(base))),
            key=len,
            reverse=True,
        ):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
