"""Docker's default seccomp profile and capabilities against ours: the same probes, the same answers.

The oracle is a private dockerd (the module fixture of test_dockerd.py: its own containerd, data root and
socket, no bridge, no iptables) running busybox with docker's defaults under runc. The subject is
pallet-runtime running the same busybox with `pallet.oci.defaults`: DOCKER_DEFAULT_CAPABILITIES and
docker_seccomp_profile(). Each probe is a busybox applet that ends in a distinctive syscall; its exit
status and its error text must match. busybox has no compiler, so every probe is an applet.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pallet.oci.defaults import DOCKER_DEFAULT_CAPABILITIES, docker_seccomp_profile
from tests.compat.conftest import PALLET_RUNTIME, unique_id
from tests.compat.test_dockerd import IMAGE, Docker, docker  # noqa: F401 - the module's private dockerd
from tests.helpers.runtime import RuntimeCLI

pytestmark = [pytest.mark.compat, pytest.mark.root, pytest.mark.xdist_group("dockerd-seccomp")]

# name -> shell command; the syscall each one ends in, and why docker's profile decides it, in comments
PROBES = {
    "unshare-user": "unshare -U true",  # unshare: CAP_SYS_ADMIN-only block (a user ns needs no capability)
    "unshare-net": "unshare -n true",
    "mount-tmpfs": "mount -t tmpfs none /mnt",  # mount: CAP_SYS_ADMIN-only block
    "umount-proc": "umount /proc",  # umount2
    "pivot-root": "mkdir -p /tmp/old && pivot_root / /tmp/old",  # pivot_root: in no block at all
    "swapon": "dd if=/dev/zero of=/tmp/swap bs=4096 count=16 2>/dev/null && mkswap /tmp/swap >/dev/null && swapon /tmp/swap",
    "date-set": "date -s 2001-01-01",  # clock_settime/settimeofday: CAP_SYS_TIME block
    "insmod": "echo x > /tmp/x.ko && insmod /tmp/x.ko",  # finit_module/init_module: CAP_SYS_MODULE block
    "dmesg": "dmesg",  # syslog: CAP_SYSLOG block
    "nsenter": "nsenter -t 1 -u true",  # setns: CAP_SYS_ADMIN block
    "linux32": "linux32 true",  # personality(PER_LINUX32): allowed by argument
    "linux64": "linux64 true",  # personality(PER_LINUX): allowed by argument
    "chroot": "chroot / true",  # chroot: CAP_SYS_CHROOT is one of docker's caps
    "mknod": "mknod /tmp/nul c 1 3",  # mknod: allowed, CAP_MKNOD held
    "renice-up": "renice -n 5 -p $$",  # setpriority: allowed
    "renice-down": "renice -n -5 -p $$",  # setpriority: allowed by seccomp, refused without CAP_SYS_NICE
    "fsfreeze": "fsfreeze --freeze /tmp",  # ioctl(FIFREEZE): allowed by seccomp, needs CAP_SYS_ADMIN
    "taskset": "taskset -p 1",  # sched_getaffinity: allowed
    "ionice-rt": "ionice -c 1 true",  # ioprio_set: allowed by seccomp, realtime needs CAP_SYS_ADMIN
    "ionice-idle": "ionice -c 3 true",  # ioprio_set, idle class: allowed, no capability needed
    "adjtimex": "adjtimex",  # adjtimex (read): allowed
    "hostname": "hostname pwned",  # sethostname: CAP_SYS_ADMIN block
    "chown": "touch /tmp/o && chown 1:1 /tmp/o",  # fchownat: allowed, CAP_CHOWN held
    "fork-thread": "sh -c 'sleep 0 & wait'",  # clone without namespace flags: allowed by argument
    "sync": "sync",
}


def _script() -> str:
    lines = [
        f'({cmd}) >/dev/null 2>/tmp/err; echo "{name} rc=$? $(head -c 200 /tmp/err)"'
        for name, cmd in PROBES.items()
    ]
    return "\n".join(lines)


def _parse(out: str) -> dict[str, str]:
    res = {}
    for line in out.splitlines():
        name, _, rest = line.partition(" ")
        if name in PROBES:
            res[name] = rest.strip()
    return res


def test_docker_default_profile_probes_match(docker: Docker, busybox_rootfs: Path, tmp_path: Path) -> None:  # noqa: F811
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed (Debian: runc)")
    script = _script()
    name = unique_id()
    p = docker("run", "--rm", "--name", name, "--network", "none", IMAGE, "sh", "-c", script, timeout=120)
    assert p.returncode == 0, docker.explain(p)
    theirs = _parse(p.stdout)
    assert set(theirs) == set(PROBES), p.stdout

    bundle = docker.dir / f"bundle-{name}"
    bundle.mkdir()
    shutil.copytree(busybox_rootfs, bundle / "rootfs", symlinks=True)
    rt = RuntimeCLI([str(PALLET_RUNTIME)], docker.dir / "pallet-state")
    rt("spec", "--bundle", str(bundle))
    cfg = json.loads((bundle / "config.json").read_text())
    caps = list(DOCKER_DEFAULT_CAPABILITIES)
    cfg["process"].update(terminal=False, args=["sh", "-c", script], noNewPrivileges=False,
                          capabilities={k: caps for k in ("bounding", "effective", "permitted")})  # fmt: skip
    cfg["root"]["readonly"] = False
    cfg["linux"]["seccomp"] = docker_seccomp_profile(caps)
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "cgroup"]
    (bundle / "config.json").write_text(json.dumps(cfg))
    cid = f"seccomp-{name}"
    try:
        r = rt("run", "--bundle", str(bundle), cid, timeout=120)
    finally:
        rt("delete", "--force", cid, check=False)
    ours = _parse(r.stdout)
    diff = {k: (theirs[k], ours.get(k)) for k in PROBES if theirs[k] != ours.get(k)}
    assert diff == {}, "probe: (docker+runc, pallet-runtime)\n" + "\n".join(
        f"{k}: {v}" for k, v in diff.items()
    )
    # and docker's own profile, as dockerd writes it into config.json, enforced by pallet-runtime
    p = docker(
        "run", "--rm", "--runtime", "pallet", "--network", "none", IMAGE, "sh", "-c", script, timeout=120
    )
    assert p.returncode == 0, docker.explain(p)
    via = _parse(p.stdout)
    diff = {k: (theirs[k], via.get(k)) for k in PROBES if theirs[k] != via.get(k)}
    assert diff == {}, "probe: (docker+runc, docker+pallet-runtime)\n" + "\n".join(
        f"{k}: {v}" for k, v in diff.items()
    )
    # the probes are not vacuous: docker's profile refuses some and allows others
    refused = {k for k, v in theirs.items() if "Operation not permitted" in v}
    assert {"unshare-user", "swapon", "date-set", "pivot-root"} <= refused, theirs
    assert {k for k, v in theirs.items() if v.startswith("rc=0")} >= {
        "linux32",
        "chroot",
        "mknod",
        "renice-up",
    }
