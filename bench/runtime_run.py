"""`run` of a busybox bundle executing `true`: pallet-runtime against runc and crun, side by side.

Rounds are interleaved (each round runs every runtime once, in an order that rotates) so that a
noisy neighbour or a warming page cache hits all runtimes alike. Each run is timed from spawn to
reap; the peak RSS comes from wait4's rusage, which Linux reports as the largest of the runtime
process and every descendant it reaped (its init helper, the container's `true`).

Then `python -X importtime` of `pallet-runtime --version` and of `import pallet.runtime.init`:
the ten modules that cost the most, which is where a Python runtime's start-up goes.

    sudo .venv/bin/python bench/runtime_run.py [--rounds 20] [--runtimes pallet,runc,crun] [--seccomp]

--seccomp runs the same bundle a second time with Docker's defaults, as the engine will use them:
DOCKER_DEFAULT_CAPABILITIES and docker_seccomp_profile() from pallet.oci.defaults (no no_new_privs,
as docker), so the cost of compiling and loading the filter shows up next to the plain run.

Needs root (namespaces, cgroups). Writes nothing outside a /tmp/pallet-t<hex>-bench directory,
which it removes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pallet.oci.defaults import DOCKER_DEFAULT_CAPABILITIES, docker_seccomp_profile  # noqa: E402
from pallet.oci.runtime_spec import default_spec  # noqa: E402
from tests.helpers.hostquirks import hugetlb_off_cgroup2  # noqa: E402
from tests.helpers.rootfs import busybox_available, make_busybox_rootfs  # noqa: E402

PALLET = Path(sys.executable).parent / "pallet-runtime"


def runtime_paths(names: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    found, missing = {}, {}
    for name in names:
        path = str(PALLET) if name == "pallet" else shutil.which(name)
        if path and os.path.exists(path):
            found[name] = path
        else:
            missing[name] = "not installed"
    return found, missing


def make_bundle(d: Path, seccomp: bool = False) -> Path:
    bundle = d / ("bundle-seccomp" if seccomp else "bundle")
    make_busybox_rootfs(bundle / "rootfs")
    spec = default_spec()
    spec["ociVersion"] = "1.0.2"  # crun 1.8 refuses 1.2.0; all three accept 1.0.2
    spec["root"]["path"] = str(bundle / "rootfs")
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    if seccomp:
        caps = list(DOCKER_DEFAULT_CAPABILITIES)
        spec["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
        spec["process"]["noNewPrivileges"] = False
        spec["linux"]["seccomp"] = docker_seccomp_profile(caps)
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    return bundle


def run_once(exe: str, root: Path, bundle: Path, cid: str, err: Path) -> tuple[int, float, int]:
    """(exit status, seconds, peak RSS in KiB) of `exe --root ROOT run --bundle B ID`."""
    argv = [exe, "--root", str(root), "run", "--bundle", str(bundle), cid]
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, str(err), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
    ]
    t0 = time.perf_counter()
    pid = os.posix_spawn(exe, argv, os.environ, file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - t0
    return os.waitstatus_to_exitcode(status), elapsed, usage.ru_maxrss


def bench_run(
    found: dict[str, str], rounds: int, d: Path, seccomp: bool = False
) -> tuple[dict[str, list[tuple[float, int]]], dict[str, str]]:
    found = dict(found)
    bundle = make_bundle(d, seccomp)
    samples: dict[str, list[tuple[float, int]]] = {n: [] for n in found}
    skipped: dict[str, str] = {}
    err = d / "stderr"
    for name, exe in list(found.items()):  # one warm-up run each; a runtime that cannot run is skipped
        code, _, _ = run_once(exe, d / f"{name}-root", bundle, f"pallet-tbench-{name}-warm", err)
        if code != 0:
            skipped[name] = f"exit {code}: {err.read_text().strip()[:200]}"
            del found[name], samples[name]
    order = list(found)
    for i in range(rounds):
        for name in order[i % len(order) :] + order[: i % len(order)] if order else []:
            code, secs, rss = run_once(
                found[name], d / f"{name}-root", bundle, f"pallet-tbench-{name}-{i}", err
            )
            if code != 0:
                raise SystemExit(f"{name} run failed in round {i}: exit {code}: {err.read_text().strip()}")
            samples[name].append((secs, rss))
    return samples, skipped


def report_run(
    samples: dict[str, list[tuple[float, int]]], skipped: dict[str, str], rounds: int, title: str = ""
) -> list[str]:
    lines = [f"## `run` of a busybox bundle executing `true`{title} ({rounds} interleaved rounds)", ""]
    lines.append("| runtime | median ms | min ms | max ms | peak RSS MiB (median) |")
    lines.append("|---|---:|---:|---:|---:|")
    med = {}
    for name, s in samples.items():
        times = [t * 1000 for t, _ in s]
        med[name] = statistics.median(times)
        rss = statistics.median(r for _, r in s) / 1024
        lines.append(f"| {name} | {med[name]:.1f} | {min(times):.1f} | {max(times):.1f} | {rss:.1f} |")
    lines.append("")
    for other in ("runc", "crun"):
        if "pallet" in med and other in med:
            lines.append(f"- ratio pallet/{other}: **{med['pallet'] / med[other]:.2f}** (median over median)")
    for name, why in skipped.items():
        lines.append(f"- {name} skipped: {why}")
    return lines


def importtime(argv: list[str], top: int = 10) -> tuple[list[str], float]:
    """The `top` modules by self import time, and the total, from PYTHONPROFILEIMPORTTIME's report."""
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    p = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    rows = []
    for line in p.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = (f.strip() for f in line[len("import time:") :].split("|"))
        rows.append((int(self_us), int(cumulative_us), name))
    total_ms = sum(r[0] for r in rows) / 1000
    rows.sort(reverse=True)
    out = ["| module | self ms | cumulative ms |", "|---|---:|---:|"]
    out += [f"| `{name.strip()}` | {s / 1000:.2f} | {c / 1000:.2f} |" for s, c, name in rows[:top]]
    return out, total_ms


def wall_ms(argv: list[str], n: int = 10, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, env=env)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def report_imports() -> list[str]:
    lines = ["## Where pallet-runtime's start-up goes (`python -X importtime`)", ""]
    base = wall_ms([sys.executable, "-c", "pass"])
    version = wall_ms([str(PALLET), "--version"])
    # the init is a second interpreter, started as launcher.spawn_init does: -S -s -B, PYTHONPATH set
    init_env = dict(os.environ, PYTHONPATH=str(REPO))
    init = wall_ms([sys.executable, "-S", "-s", "-B", "-c", "import pallet.runtime.init"], env=init_env)
    exe_mib = os.path.getsize(os.path.realpath(sys.executable)) / (1 << 20)
    from pallet.runtime import launcher

    def seal_ms(make: Callable[[], int]) -> float:
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            os.close(make())
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    with tempfile.TemporaryDirectory(prefix="pallet-bench-lower-") as lower:
        overlay = seal_ms(lambda: launcher._overlay_view(lower))
    copy = seal_ms(launcher._memfd_copy)
    lines.append(f"- `python -c pass`: {base:.1f} ms; `pallet-runtime --version`: {version:.1f} ms")
    lines.append(
        f"- the init's interpreter (`python -S -s -B -c 'import pallet.runtime.init'`): {init:.1f} ms;"
        f" sealing the {exe_mib:.1f} MiB interpreter: {overlay:.2f} ms as a read-only overlayfs view (root),"
        f" {copy:.1f} ms as a sealed memfd copy (rootless) (medians of 10)"
    )
    for title, argv in (
        ("`pallet-runtime --version`", [str(PALLET), "--version"]),
        ("`import pallet.runtime.init`", [sys.executable, "-c", "import pallet.runtime.init"]),
    ):
        table, total = importtime(argv)
        lines += ["", f"### {title}: {total:.1f} ms of imports in all, top 10 by self time", "", *table]
    return lines


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cpus, Linux {platform.release()}, Python {platform.python_version()}"


def versions(found: dict[str, str]) -> list[str]:
    out = []
    for name, exe in found.items():
        p = subprocess.run([exe, "--version"], capture_output=True, text=True)
        out.append(f"{name}: {p.stdout.splitlines()[0] if p.stdout else '?'}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    ap.add_argument("--runtimes", default="pallet,runc,crun", help="comma-separated: pallet,runc,crun")
    ap.add_argument("--no-imports", action="store_true", help="skip the importtime report")
    ap.add_argument("--seccomp", action="store_true", help="also run with Docker's seccomp profile and caps")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: the runtimes create namespaces and cgroups")
    if not busybox_available():
        raise SystemExit("needs Debian's busybox-static for the bundle")
    found, skipped = runtime_paths(args.runtimes.split(","))
    d = Path("/tmp") / f"pallet-t{uuid.uuid4().hex[:10]}-bench"
    d.mkdir()
    try:
        print(f"# pallet-runtime bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
        print(f"- machine: {machine()}")
        for v in versions(found):
            print(f"- {v}")
        print()
        # crun refuses this hybrid host while hugetlb sits on cgroup2: move it for the run, then back
        with hugetlb_off_cgroup2(d) if "crun" in found else contextlib.nullcontext():
            samples, failed = bench_run(found, args.rounds, d)
            print("\n".join(report_run(samples, {**skipped, **failed}, args.rounds)))
            if args.seccomp:
                plain = samples
                samples, failed = bench_run(found, args.rounds, d, seccomp=True)
                title = " with Docker's default seccomp profile and capabilities"
                print()
                print("\n".join(report_run(samples, {**skipped, **failed}, args.rounds, title)))
                for name in samples:
                    if name in plain:
                        extra = statistics.median(t for t, _ in samples[name]) - statistics.median(
                            t for t, _ in plain[name]
                        )
                        print(f"- {name}: the profile adds {extra * 1000:+.1f} ms (median over median)")
        if not args.no_imports:
            print()
            print("\n".join(report_imports()))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
