"""Image benchmarks, side by side with podman and umoci (root; never run by the tests).

1. ``load`` of one docker-archive (a layer made from host directories, ~150-200 MB): pallet
   against ``podman load`` and ``umoci unpack`` (of the same image as an OCI layout).
2. Preparing a container's rootfs (snapshot + mount + unmount) for a small and a large image: with
   overlay it must not grow with the image's size.

    sudo .venv/bin/python bench/bench_images.py [--dirs usr/lib/python3.11 usr/share/doc] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PALLET = [sys.executable, "-m", "pallet.cli.main"]


def timed(cmd: list[str], runs: int, setup: list[str] | None = None) -> float:
    """Median wall time of ``cmd``; ``setup`` runs (untimed) before each run."""
    samples = []
    for _ in range(runs):
        if setup:
            subprocess.run(setup, check=True, capture_output=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--dirs",
        nargs="+",
        default=["usr/lib/python3.11", "usr/share/doc"],
        help="host dirs in the big layer",
    )
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pallet-bench-"))
    try:
        big_tar, small_tar = base / "big-rootfs.tar", base / "small-rootfs.tar"
        subprocess.run(["tar", "-C", "/", "-cf", str(big_tar), *args.dirs], check=True)
        subprocess.run(["tar", "-C", "/", "-cf", str(small_tar), "etc/hostname"], check=True)
        seed = [*PALLET, "--root", str(base / "seed")]
        subprocess.run([*seed, "import", str(big_tar), "bench/big:1"], check=True, capture_output=True)
        subprocess.run([*seed, "import", str(small_tar), "bench/small:1"], check=True, capture_output=True)
        archive = base / "big.tar"
        subprocess.run([*seed, "save", "-o", str(archive), "bench/big:1"], check=True)
        subprocess.run(
            [*seed, "save", "--format", "oci-dir", "-o", str(base / "layout"), "bench/big:1"], check=True
        )
        size = archive.stat().st_size
        print(f"image: {size / 1e6:.0f} MB docker-archive, one layer; median of {args.runs} runs\n")

        root = base / "root"
        rows = [
            (
                "pallet load (overlay)",
                timed(
                    [*PALLET, "--root", str(root), "load", "-i", str(archive)],
                    args.runs,
                    ["rm", "-rf", str(root)],
                ),
            )
        ]
        if shutil.which("podman"):
            pod = [
                "podman",
                "--root",
                str(base / "pod"),
                "--runroot",
                str(base / "podrun"),
                "--storage-driver",
                "overlay",
            ]
            rows.append(
                (
                    "podman load (overlay)",
                    timed(
                        [*pod, "load", "-q", "-i", str(archive)], args.runs, ["rm", "-rf", str(base / "pod")]
                    ),
                )
            )
        if shutil.which("umoci"):
            bundle = base / "bundle"
            rows.append(
                (
                    "umoci unpack",
                    timed(
                        ["umoci", "unpack", "--image", f"{base / 'layout'}:1", str(bundle)],
                        args.runs,
                        ["rm", "-rf", str(bundle)],
                    ),
                )
            )
        for name, secs in rows:
            print(f"{name:28s} {secs:7.3f} s")

        print("\ncontainer rootfs (snapshot prepare + mount + unmount + remove):")
        cli = [*PALLET, "--root", str(root)]
        subprocess.run([*cli, "load", "-i", str(archive)], check=True, capture_output=True)
        subprocess.run([*cli, "import", str(small_tar), "bench/small:1"], check=True, capture_output=True)
        mnt = base / "mnt"
        mnt.mkdir()
        for image in ("bench/small:1", "bench/big:1"):
            samples = []
            for i in range(args.runs):
                t0 = time.perf_counter()
                subprocess.run([*cli, "snapshot", "prepare", f"c{i}", image], check=True, capture_output=True)
                subprocess.run([*cli, "snapshot", "mount", f"c{i}", str(mnt)], check=True)
                subprocess.run([*cli, "snapshot", "unmount", str(mnt)], check=True)
                subprocess.run([*cli, "snapshot", "rm", f"c{i}"], check=True)
                samples.append(time.perf_counter() - t0)
            print(f"{image:28s} {statistics.median(samples):7.3f} s")
    finally:
        subprocess.run(["umount", "-R", "-l", str(base / "mnt")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
