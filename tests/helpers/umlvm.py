"""Run pytest inside a user-mode Linux kernel that has a pure cgroup v2 hierarchy.

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
# then pytest, then power off (returning from init would panic the guest kernel)
INIT = """#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
export PALLET_IN_UML=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t mqueue mqueue /dev/mqueue
mount -t tmpfs -o mode=755 run /run
for m in {modules}; do insmod "$m" 2>/dev/null; done
ip link set lo up 2>/dev/null
cd {repo}
{{ echo "cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"; uname -r; }} > {out}/guest.txt
{pytest} > {out}/pytest.log 2>&1
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


def run_pytest(
    repo: Path, python: str, args: list[str], out: Path, *, mem: str = "1536M", timeout: float = 900
) -> GuestRun:
    """Boot the guest, run ``python -m pytest ARGS`` in ``repo`` there, results into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    junit = out / "junit.xml"
    pytest = [python, "-m", "pytest", "-p", "no:cacheprovider", "--basetemp", str(out / "basetemp"),
              "--junitxml", str(junit), *args]  # fmt: skip
    modules = sorted(
        str(p)
        for name in ("drivers/block/loop.ko", "fs/overlayfs/overlay.ko")
        for p in MODULES.glob(f"*/kernel/{name}")
    )
    init = out / "init.sh"
    init.write_text(
        INIT.format(
            modules=" ".join(shlex.quote(m) for m in modules),
            repo=shlex.quote(str(repo)),
            out=shlex.quote(str(out)),
            pytest=shlex.join(pytest),
        )
    )
    init.chmod(0o755)
    argv = [UML, f"mem={mem}", "rootfstype=hostfs", "rootflags=/", "rw", f"init={init}",
            "con=null", "con0=null,fd:1", "quiet"]  # fmt: skip
    # the guest's memory is a file in TMPDIR; its console goes to a file, not a pipe we must drain
    # the guest's memory is a file in TMPDIR; its console goes to a file, not a pipe we must drain.
    # UML runs each guest address space as a host process: a session of its own lets a timeout kill all
    with open(out / "console.txt", "wb") as console:
        kernel = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                  cwd=out, start_new_session=True)  # fmt: skip
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
    return GuestRun(
        rc=int(rc_file.read_text()) if rc_file.exists() else None,
        log=(out / "pytest.log").read_text(errors="replace") if (out / "pytest.log").exists() else "",
        guest=(out / "guest.txt").read_text() if (out / "guest.txt").exists() else "",
        console=(out / "console.txt").read_text(errors="replace"),
        outcomes=_outcomes(junit),
    )
