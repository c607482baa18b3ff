"""Run a command (pytest, a benchmark) inside a user-mode Linux kernel that has a pure cgroup v2 hierarchy.

This VM's own cgroups are v1 (hybrid), while most users run pure v2. Debian's `user-mode-linux`
package is a Linux kernel that runs as an ordinary process (no KVM): it boots in about two seconds
with the host's filesystem as its root (hostfs), and there cgroup2 is mounted at /sys/fs/cgroup with
the memory, cpu, io and pids controllers (no cpuset, hugetlb or PSI in Debian's build). The tests run
inside it with this checkout and this virtualenv, so the v2 driver meets a real kernel on every run.

What the VM does to the host: it writes through hostfs, as root, only where its tests write (their
/tmp/<token> dirs and the result files named here); its mounts, cgroups and processes are the guest
kernel's own and vanish with it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

UML = "linux.uml"
MODULES = Path("/usr/lib/uml/modules")

# the guest's PID 1: a world for the runtime (proc, sys, cgroup2, devpts, shm, /run, loop devices),
# then the command, then power off (returning from init would panic the guest kernel)
INIT = """#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
export PALLET_IN_UML=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# as systemd mounts it: a cgroup namespace is a delegation boundary (moves must stay in view of it)
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t mqueue mqueue /dev/mqueue
mount -t tmpfs -o mode=755 run /run
# Debian ships the guest's modules outside /lib/modules: the kernel's modprobe helper points there
mkdir -p /run/modroot/lib/modules && ln -s {modules}/$(uname -r) /run/modroot/lib/modules/
printf '#!/bin/sh\nexec /sbin/modprobe -d /run/modroot "$@"\n' > /run/modprobe && chmod 755 /run/modprobe
echo /run/modprobe > /proc/sys/kernel/modprobe
for m in loop overlay veth bridge; do /run/modprobe $m 2>/dev/null; done
# Debian's guest kernel has no nf_tables for ip: the guest (only) runs the legacy iptables instead
mount --bind /usr/sbin/xtables-legacy-multi /usr/sbin/xtables-nft-multi
ip link set lo up 2>/dev/null
# /tmp on tmpfs (overlayfs cannot use hostfs as its upper layer), with the checkout and the result
# dir bound back in where they live under the host's /tmp
mkdir -p /run/host-tmp && mount --bind /tmp /run/host-tmp && mount -t tmpfs -o mode=1777 tmp /tmp
for d in {keep}; do mkdir -p "$d" && mount --bind "/run/host-tmp/${{d#/tmp/}}" "$d"; done
cd {repo}
{{ echo "cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"; uname -r; }} > {out}/guest.txt
{command} > {out}/{log} 2>&1
echo $? > {out}/rc
sync
echo o > /proc/sysrq-trigger
sleep 30
"""


def available() -> bool:
    return shutil.which(UML) is not None


@dataclass
class GuestRun:
    rc: int | None
    log: str
    guest: str
    console: str
    outcomes: dict[str, str] = field(default_factory=dict)  # test id → passed / failed / skipped / error

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for o in self.outcomes.values():
            counts[o] = counts.get(o, 0) + 1
        return f"rc={self.rc} {counts} guest: {self.guest.strip()!r}"


def _outcomes(junit: Path) -> dict[str, str]:
    if not junit.exists():
        return {}
    out: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}.{case.get('name')}"
        tags = {child.tag for child in case}
        out[name] = next((t for t in ("failure", "error", "skipped") if t in tags), "passed")
        out[name] = {"failure": "failed"}.get(out[name], out[name])
    return out


@dataclass
class GuestCommand:
    rc: int | None  # None: the guest did not get to write the command's exit status
    log: str  # the command's stdout and stderr
    guest: str  # the guest's cgroup2 controllers and kernel release
    console: str


def run_command(
    repo: Path,
    argv: list[str],
    out: Path,
    *,
    log: str = "output.log",
    mem: str = "1536M",
    timeout: float = 900,
) -> GuestCommand:
    """Boot the guest, run ``argv`` in ``repo`` there (stdout and stderr into ``out/log``), power off."""
    out.mkdir(parents=True, exist_ok=True)
    init = out / "init.sh"
    init.write_text(
        INIT.format(
            modules=shlex.quote(str(MODULES)),
            keep=" ".join(shlex.quote(str(d)) for d in (repo, out) if d.is_relative_to("/tmp")),
            repo=shlex.quote(str(repo)),
            out=shlex.quote(str(out)),
            command=shlex.join(argv),
            log=shlex.quote(log),
        )
    )
    init.chmod(0o755)
    kernel_argv = [UML, f"mem={mem}", "rootfstype=hostfs", "rootflags=/", "rw", f"init={init}",
                   "con=null", "con0=null,fd:1", "quiet"]  # fmt: skip
    # the guest's memory is a file in TMPDIR; its console goes to a file, not a pipe we must drain.
    # UML runs each guest address space as a host process: a session of its own lets a timeout kill all
    with open(out / "console.txt", "wb") as console:
        kernel = subprocess.Popen(kernel_argv, stdin=subprocess.DEVNULL, stdout=console,
                                  stderr=subprocess.STDOUT, cwd=out, start_new_session=True)  # fmt: skip
        try:
            kernel.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass  # what the guest wrote so far still tells the story
        finally:
            try:
                os.killpg(kernel.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            kernel.wait()
    rc_file = out / "rc"
    return GuestCommand(
        rc=int(rc_file.read_text()) if rc_file.exists() else None,
        log=(out / log).read_text(errors="replace") if (out / log).exists() else "",
        guest=(out / "guest.txt").read_text() if (out / "guest.txt").exists() else "",
        console=(out / "console.txt").read_text(errors="replace"),
    )


def run_pytest(
    repo: Path, python: str, args: list[str], out: Path, *, mem: str = "1536M", timeout: float = 900
) -> GuestRun:
    """Boot the guest, run ``python -m pytest ARGS`` in ``repo`` there, results into ``out``."""
    junit = out / "junit.xml"
    pytest = [python, "-m", "pytest", "-p", "no:cacheprovider", "--basetemp", str(out / "basetemp"),
              "--junitxml", str(junit), *args]  # fmt: skip
    run = run_command(repo, pytest, out, log="pytest.log", mem=mem, timeout=timeout)
    return GuestRun(rc=run.rc, log=run.log, guest=run.guest, console=run.console, outcomes=_outcomes(junit))
