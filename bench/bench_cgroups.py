"""Cost of creating, configuring and removing a cgroup with a typical resource set: pallet-runtime
against runc and crun, side by side in the same run.

Each runtime `run`s a busybox bundle executing `true` twice a round: once with no linux.resources
and once with a Docker-like set (memory limit, swap and reservation; cpu shares, quota and period;
pids limit; blkio weight; Docker's default device allow list). Rounds are interleaved (the order of
the runtimes rotates, the two bundles alternate) so that load from elsewhere falls on all alike. The
difference of the two medians is what configuring and removing those settings costs a runtime; the
report gives it next to the absolute medians and the pallet/runc, pallet/crun ratios of both.

Then pallet's cgroup manager in-process (open_manager → apply(pid) → set(resources) → destroy(),
with a sleeping child in the cgroup): the driver's own cost, without any interpreter start-up.

On this hybrid (v1) host it measures v1, crun with hugetlb moved off cgroup2 for the run (see
tests/helpers/hostquirks.py). `--pure-v2` runs the same bench inside a pure cgroup v2 kernel, Debian's
user-mode Linux (tests/helpers/umlvm.py), where runc and crun both work as on any v2 host. Absolute
times there are inflated (every syscall traps into the UML kernel): compare the ratios.

    sudo .venv/bin/python bench/bench_cgroups.py [--rounds 15] [--runtimes pallet,runc,crun] [--pure-v2]

Needs root. Writes nothing outside a /tmp/pallet-t<hex>-bench directory, which it removes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.runtime_run import machine, make_bundle, run_once, runtime_paths, versions  # noqa: E402
from pallet.engine.spec import DEVICE_RULES  # noqa: E402
from pallet.runtime.cgroups import is_v2, open_manager  # noqa: E402
from tests.helpers.hostquirks import hugetlb_off_cgroup2  # noqa: E402
from tests.helpers.rootfs import busybox_available  # noqa: E402

MiB = 1 << 20
# what `docker run -m 256m --memory-swap 512m --memory-reservation 128m --cpu-shares 512 --cpus 1.5
# --pids-limit 100 --blkio-weight 300` puts in linux.resources, with docker's default device rules
TYPICAL: dict[str, Any] = {
    "memory": {"limit": 256 * MiB, "swap": 512 * MiB, "reservation": 128 * MiB},
    "cpu": {"shares": 512, "quota": 150000, "period": 100000},
    "pids": {"limit": 100},
    "blockIO": {"weight": 300},
    "devices": DEVICE_RULES,
}
KINDS = ("plain", "resources")


def blkio_weight_file() -> str | None:
    """The weight file runc and crun both write (v1 blkio.weight, v2 io.weight) if a new cgroup has it.

    Kernels whose only weight-aware I/O scheduler is BFQ have blkio.bfq.weight (io.bfq.weight) only:
    pallet and runc fall back to it, crun 1.8 does not, so a weight there is left out of the set."""
    if is_v2():
        parent, name = Path("/sys/fs/cgroup"), "io.weight"
        if "io" not in (parent / "cgroup.controllers").read_text().split():
            return None
        if "io" not in (parent / "cgroup.subtree_control").read_text().split():
            (parent / "cgroup.subtree_control").write_text(
                "+io"
            )  # as every runtime does for its first container
    else:
        parent, name = Path("/sys/fs/cgroup/blkio"), "blkio.weight"
    probe = parent / f"pallet-t{uuid.uuid4().hex[:10]}-probe"
    probe.mkdir()
    try:
        return name if (probe / name).exists() else None
    finally:
        probe.rmdir()


def typical() -> tuple[dict[str, Any], str]:
    """TYPICAL, less the blkio weight where this kernel cannot take it from every runtime; and a note."""
    weight = blkio_weight_file()
    if weight:
        return TYPICAL, f"blkio weight written to {weight}"
    rest = {k: v for k, v in TYPICAL.items() if k != "blockIO"}
    return rest, "blkio weight left out: this kernel has no blkio.weight / io.weight in a new cgroup"


def make_bundles(d: Path, resources: dict[str, Any]) -> dict[str, Path]:
    """The busybox bundle twice: without linux.resources, and with ``resources``."""
    bundles = {}
    for kind in KINDS:
        bundle = make_bundle(d / kind)
        cfg = bundle / "config.json"
        spec = json.loads(cfg.read_text())
        spec["linux"].pop("resources", None)
        if kind == "resources":
            spec["linux"]["resources"] = resources
        cfg.write_text(json.dumps(spec, indent=1))
        bundles[kind] = bundle
    return bundles


Samples = dict[str, dict[str, list[float]]]  # runtime → kind → seconds


def bench_runs(
    found: dict[str, str], rounds: int, d: Path, resources: dict[str, Any]
) -> tuple[Samples, dict[str, str]]:
    bundles = make_bundles(d, resources)
    err = d / "stderr"
    skipped: dict[str, str] = {}
    for name, exe in list(found.items()):  # one warm-up run of each bundle; a runtime that fails is skipped
        for kind in KINDS:
            code, _, _ = run_once(
                exe, d / f"{name}-root", bundles[kind], f"pallet-tbench-{name}-{kind}-w", err
            )
            if code != 0 and name not in skipped:
                skipped[name] = f"{kind}: exit {code}: {err.read_text().strip()[:200]}"
    order = [n for n in found if n not in skipped]
    samples: Samples = {n: {k: [] for k in KINDS} for n in order}
    for i in range(rounds):
        kinds = KINDS if i % 2 == 0 else KINDS[::-1]
        for name in order[i % len(order) :] + order[: i % len(order)] if order else []:
            for kind in kinds:
                cid = f"pallet-tbench-{name}-{kind}-{i}"
                code, secs, _ = run_once(found[name], d / f"{name}-root", bundles[kind], cid, err)
                if code != 0:
                    raise SystemExit(
                        f"{name} run ({kind}) failed in round {i}: exit {code}: {err.read_text()}"
                    )
                samples[name][kind].append(secs)
    return samples, skipped


def report_runs(samples: Samples, skipped: dict[str, str], rounds: int) -> list[str]:
    med = {n: {k: statistics.median(s[k]) * 1000 for k in KINDS} for n, s in samples.items()}
    lines = [
        f"## `run` of busybox `true`, without and with the resource set ({rounds} interleaved rounds)",
        "",
    ]
    lines.append(
        "| runtime | plain median ms | with resources median ms | delta ms | paired delta ms"
        " | plain min–max | resources min–max |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for name, s in samples.items():
        p, r = (sorted(x * 1000 for x in s[k]) for k in KINDS)
        delta = med[name]["resources"] - med[name]["plain"]
        paired = statistics.median(b - a for a, b in zip(s["plain"], s["resources"], strict=True)) * 1000
        lines.append(
            f"| {name} | {med[name]['plain']:.1f} | {med[name]['resources']:.1f} | {delta:+.1f} |"
            f" {paired:+.1f} | {p[0]:.1f}–{p[-1]:.1f} | {r[0]:.1f}–{r[-1]:.1f} |"
        )
    others = [o for o in ("runc", "crun") if o in med and "pallet" in med]
    if others:
        lines += [
            "",
            "| ratio | plain run | run with resources | delta (resources − plain) |",
            "|---|---:|---:|---:|",
        ]
    for o in others:
        dp = med["pallet"]["resources"] - med["pallet"]["plain"]
        do = med[o]["resources"] - med[o]["plain"]
        dratio = f"{dp / do:.2f}" if dp > 0 and do > 0 else "n/a (a delta ≤ 0: within the noise)"
        lines.append(
            f"| pallet/{o} | {med['pallet']['plain'] / med[o]['plain']:.2f} |"
            f" {med['pallet']['resources'] / med[o]['resources']:.2f} | **{dratio}** |"
        )
    lines.append("")
    lines.append(
        "- delta: median with resources minus median without (both of the same rounds); paired delta:"
    )
    lines.append("  median over rounds of (with − without), the two runs of a round being back to back")
    for name, why in skipped.items():
        lines.append(f"- {name} skipped: {why}")
    return lines


def manager_sets(resource_set: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the in-process bench sets: a run without linux.resources sets ``{"devices": []}`` (the
    default device rules only); the set without docker's device rules separates their share."""
    return {
        "none (default device rules)": {"devices": []},
        "the set, without docker's device rules": {**resource_set, "devices": []},
        "the set": resource_set,
    }


STEPS = ("open + apply(pid)", "set(resources)", "destroy()", "total")


def bench_manager(rounds: int, sets: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """pallet's cgroup driver in-process: apply, set, destroy, each timed, around a sleeping child."""
    out: dict[str, dict[str, list[float]]] = {k: {s: [] for s in STEPS} for k in sets}
    tag = uuid.uuid4().hex[:8]
    names = list(sets)
    for i in range(rounds + 1):  # round 0 warms up
        for n, name in enumerate(names[i % len(names) :] + names[: i % len(names)]):
            child = subprocess.Popen(["sleep", "60"])
            try:
                t0 = time.perf_counter()
                mgr = open_manager(None, f"pallet-tbench-mgr-{tag}-{i}-{n}")
                mgr.apply(child.pid)
                t1 = time.perf_counter()
                mgr.set(sets[name])
                t2 = time.perf_counter()
            finally:
                child.kill()
                child.wait()
            t3 = time.perf_counter()  # the cgroup is empty now, as after the container's exit
            mgr.destroy()
            t4 = time.perf_counter()
            if i:
                times = (t1 - t0, t2 - t1, t4 - t3, t4 - t3 + t2 - t0)
                for step, secs in zip(STEPS, times, strict=True):
                    out[name][step].append(secs)
    return out


def report_manager(m: dict[str, dict[str, list[float]]], rounds: int) -> list[str]:
    v = 2 if is_v2() else 1
    lines = [f"## pallet's cgroup v{v} driver in-process (median of {rounds} rotating rounds, ms)", ""]
    lines.append(f"| resources | {' | '.join(STEPS)} |")
    lines.append("|---|---:|---:|---:|---:|")
    med = {k: {s: statistics.median(x) * 1000 for s, x in m[k].items()} for k in m}
    for name in m:
        lines.append(f"| {name} | {' | '.join(f'{med[name][s]:.2f}' for s in STEPS)} |")
    none, full = med[next(iter(m))]["total"], med[list(m)[-1]]["total"]
    lines += [
        "",
        f"- the resource set adds {full - none:+.2f} ms in-process (total: median of each round's sum)",
    ]
    return lines


def cgroup_mode() -> str:
    if is_v2():
        controllers = Path("/sys/fs/cgroup/cgroup.controllers").read_text().strip()
        return f"pure cgroup v2 ({controllers})"
    return "cgroup v1 (hybrid: cgroup2 at /sys/fs/cgroup/unified)"


def bench_here(args: argparse.Namespace) -> None:
    found, skipped = runtime_paths(args.runtimes.split(","))
    d = Path("/tmp") / f"pallet-t{uuid.uuid4().hex[:10]}-bench"
    d.mkdir()
    try:
        print(f"# cgroup bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
        print(f"- machine: {machine()}")
        print(f"- cgroups: {cgroup_mode()}")
        print(f"- load average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        for v in versions(found):
            print(f"- {v}")
        resources, note = typical()
        print(f"- resource set: {', '.join(resources)} ({note})")
        print()
        # crun refuses a hybrid host while hugetlb sits on cgroup2: move it for the run, then back
        quirk = "crun" in found and not is_v2()
        with hugetlb_off_cgroup2(d) if quirk else contextlib.nullcontext():
            samples, failed = bench_runs(found, args.rounds, d, resources)
        print("\n".join(report_runs(samples, {**skipped, **failed}, args.rounds)))
        print()
        print("\n".join(report_manager(bench_manager(args.rounds, manager_sets(resources)), args.rounds)))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_in_guest(args: argparse.Namespace) -> int:
    from tests.helpers import umlvm  # noqa: PLC0415 - only --pure-v2 boots a guest

    if not umlvm.available():
        raise SystemExit("--pure-v2 needs Debian's user-mode-linux (linux.uml)")
    out = Path("/tmp") / f"pallet-t{uuid.uuid4().hex[:10]}-bench-uml"
    try:
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--rounds",
            str(args.rounds),
            "--runtimes",
            args.runtimes,
        ]
        run = umlvm.run_command(REPO, argv, out, timeout=args.timeout)
        print(run.log, end="")
        if run.rc != 0:
            print(f"guest: rc={run.rc} {run.guest.strip()!r}\n{run.console[-3000:]}", file=sys.stderr)
            return 1
        print(
            "\n- measured inside user-mode Linux (guest kernel " + run.guest.strip().splitlines()[-1] + "):"
        )
        print("  absolute times are inflated, every syscall traps into the guest kernel; compare the ratios")
        print(
            f"- the host's load average after the guest: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
        )
        return 0
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--runtimes", default="pallet,runc,crun", help="comma-separated: pallet,runc,crun")
    ap.add_argument(
        "--pure-v2", action="store_true", help="run the bench inside a pure cgroup v2 kernel (UML)"
    )
    ap.add_argument("--timeout", type=float, default=1200, help="--pure-v2: seconds the guest may take")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: the runtimes create namespaces and cgroups")
    if not busybox_available():
        raise SystemExit("needs Debian's busybox-static for the bundle")
    if args.pure_v2:
        return bench_in_guest(args)
    bench_here(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
