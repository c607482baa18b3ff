"""pallet-runtime run by an unprivileged user, end to end.

Each test makes its own user (useradd) with its own /etc/subuid and /etc/subgid range and removes all of
it afterwards, even on failure. The runtime is the repository's own venv: /work/main and the venv are
world-readable and the interpreter is /usr/bin/python3, so the user runs it in place; nothing is copied.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pallet.oci.defaults import DOCKER_DEFAULT_CAPABILITIES, docker_seccomp_profile
from tests.conftest import runtime_cmd
from tests.helpers.leaks import find_leaks

pytestmark = pytest.mark.root

SUB_SIZE = 65536


@dataclass
class User:
    name: str
    uid: int
    gid: int
    sub_uid: int  # first subordinate uid and gid, from /etc/subuid and /etc/subgid
    sub_gid: int
    home: Path
    root: Path  # the runtime's --root

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "XDG_RUNTIME_DIR": str(self.home / "xdg"),
               "HOME": str(self.home)}  # fmt: skip
        argv = ["runuser", "-u", self.name, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items())]
        # files, not pipes: a detached container keeps its stdout open
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run(
                [*argv, *runtime_cmd(), "--root", str(self.root), *args],
                stdout=out, stderr=err, timeout=timeout, cwd=self.home, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            out.seek(0)
            err.seek(0)
            r = subprocess.CompletedProcess(p.args, p.returncode, out.read().decode(), err.read().decode())
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
        return r


def _sub_range(path: str, name: str) -> tuple[int, int] | None:
    for x in Path(path).read_text().splitlines() if os.path.exists(path) else []:
        parts = x.split(":")
        if len(parts) == 3 and parts[0] == name:
            return int(parts[1]), int(parts[2])
    return None


@pytest.fixture
def user(token: str, workdir: Path, leakcheck: None) -> Iterator[User]:
    for tool in ("useradd", "userdel", "runuser", "newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: passwd, util-linux, uidmap)")
    name = "pu" + token.removeprefix("pallet-t")  # 12 characters, unique, carries the token's hex
    home = workdir / "home"
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", "--user-group",
                    name], check=True, capture_output=True)  # fmt: skip
    try:
        pw = pwd.getpwnam(name)
        # useradd allocates subordinate ranges itself (SUB_UID_COUNT in login.defs); ask usermod where it
        # did not. Both lock /etc/subuid the shadow way, so parallel tests do not lose each other's lines.
        if _sub_range("/etc/subuid", name) is None or _sub_range("/etc/subgid", name) is None:
            subprocess.run(["usermod", "--add-subuids", "3000000000-3000065535", "--add-subgids",
                            "3000000000-3000065535", name], check=True, capture_output=True)  # fmt: skip
        sub_uid, ucount = _sub_range("/etc/subuid", name) or (0, 0)
        sub_gid, gcount = _sub_range("/etc/subgid", name) or (0, 0)
        assert min(ucount, gcount) >= SUB_SIZE
        home.mkdir()
        (home / "xdg").mkdir(mode=0o700)
        for p in (home, home / "xdg"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        yield User(name, pw.pw_uid, pw.pw_gid, sub_uid, sub_gid, home, home / "state")
    finally:
        # whatever the user still runs goes first, then the user and its ranges
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", "--force", name], capture_output=True)
    assert name not in Path("/etc/passwd").read_text()
    assert _sub_range("/etc/subuid", name) is None  # userdel removed the subordinate ranges with the user


def _bundle(u: User, busybox_rootfs: Path, *, multi: bool) -> Path:
    """`pallet-runtime spec --rootless` made by the user; with multi, ranges from /etc/subuid on top."""
    b = u.home / "bundle"
    b.mkdir()
    shutil.copytree(busybox_rootfs, b / "rootfs", symlinks=True)
    subprocess.run(["chown", "-R", f"{u.uid}:{u.gid}", str(b)], check=True)
    u.run("spec", "--rootless", "--bundle", str(b))
    cfg = json.loads((b / "config.json").read_text())
    linux = cfg["linux"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": u.uid, "size": 1}]
    cfg["process"]["terminal"] = False
    cfg["root"]["readonly"] = False
    if multi:
        linux["uidMappings"].append({"containerID": 1, "hostID": u.sub_uid, "size": SUB_SIZE})
        linux["gidMappings"].append({"containerID": 1, "hostID": u.sub_gid, "size": SUB_SIZE})
    (b / "config.json").write_text(json.dumps(cfg))
    os.chown(b / "config.json", u.uid, u.gid)
    return b


def _set(b: Path, **process: object) -> dict[str, object]:
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"].update(process)
    (b / "config.json").write_text(json.dumps(cfg))
    return cfg  # type: ignore[no-any-return]


def test_rootless_run_single_mapping(user: User, busybox_rootfs: Path, token: str) -> None:
    b = _bundle(user, busybox_rootfs, multi=False)
    _set(
        b,
        args=[
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map; hostname; echo made > /tmp/f; grep ^CapEff: /proc/self/status",
        ],
    )
    r = user.run("run", "--bundle", str(b), token)
    lines = r.stdout.split("\n")
    assert lines[0] == "0", r.stdout
    assert lines[1].split() == ["0", str(user.uid), "1"]
    assert lines[2] == "pallet"
    assert (b / "rootfs" / "tmp" / "f").stat().st_uid == user.uid  # container root is the user on the host
    assert not (user.root / token).exists()
    assert find_leaks(token) == []


def test_rootless_multi_range_mapping_from_subuid(user: User, busybox_rootfs: Path, token: str) -> None:
    b = _bundle(user, busybox_rootfs, multi=True)
    caps = ["CAP_CHOWN", "CAP_KILL"]
    _set(b, capabilities={k: caps for k in ("bounding", "effective", "permitted")})
    _set(b, args=["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; touch /tmp/g; chown 1000:1000 /tmp/g; "
                              "su -s /bin/sh nobody -c 'id -u' 2>/dev/null || true"])  # fmt: skip
    r = user.run("run", "--bundle", str(b), token)
    maps = [line.split() for line in r.stdout.splitlines()[:4]]
    assert maps == [["0", str(user.uid), "1"], ["1", str(user.sub_uid), str(SUB_SIZE)],
                    ["0", str(user.gid), "1"], ["1", str(user.sub_gid), str(SUB_SIZE)]], r.stdout  # fmt: skip
    st = (b / "rootfs" / "tmp" / "g").stat()
    # container 1000 is subordinate id start + 999 on the host: newuidmap/newgidmap wrote both ranges
    assert (st.st_uid, st.st_gid) == (user.sub_uid + 999, user.sub_gid + 999)


def test_rootless_with_dockers_seccomp_profile(user: User, busybox_rootfs: Path, token: str) -> None:
    # without no_new_privs the filter needs CAP_SYS_ADMIN: the init has it in its own user namespace
    b = _bundle(user, busybox_rootfs, multi=True)
    cfg = json.loads((b / "config.json").read_text())
    caps = list(DOCKER_DEFAULT_CAPABILITIES)
    cfg["process"].update(noNewPrivileges=False, args=["sh", "-c", "grep ^Seccomp: /proc/self/status; unshare -U true"],
                          capabilities={k: caps for k in ("bounding", "effective", "permitted")})  # fmt: skip
    cfg["linux"]["seccomp"] = docker_seccomp_profile(caps)
    (b / "config.json").write_text(json.dumps(cfg))
    r = user.run("run", "--bundle", str(b), token, check=False)
    assert r.stdout.split() == ["Seccomp:", "2"], (r.stdout, r.stderr)
    assert r.returncode == 1 and "Operation not permitted" in r.stderr


def test_rootless_detached_lifecycle(user: User, busybox_rootfs: Path, token: str) -> None:
    b = _bundle(user, busybox_rootfs, multi=True)
    _set(b, args=["sleep", "300"])
    user.run("run", "-d", "--bundle", str(b), token)
    try:
        st = json.loads(user.run("state", token).stdout)
        assert st["status"] == "running" and st["pid"] > 0
        assert Path(f"/proc/{st['pid']}").stat().st_uid == user.uid
        assert user.run("list", "-q").stdout.split() == [token]
        r = user.run("exec", token, "sh", "-c", "id -u; cat /proc/1/cmdline | tr '\\0' ' '")
        assert r.stdout.split() == ["0", "sleep", "300"]
        user.run("kill", token, "KILL")
    finally:
        user.run("delete", "--force", token, check=False)
    assert user.run("list", "-q").stdout.split() == []
    assert find_leaks(token) == []


def test_rootless_no_privileged_operation_errors(user: User, busybox_rootfs: Path, token: str) -> None:
    # a config that asks for more than a user may have: one clear line, nothing left behind
    b = _bundle(user, busybox_rootfs, multi=False)
    cfg = json.loads((b / "config.json").read_text())
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1}]  # the host's root: not ours
    (b / "config.json").write_text(json.dumps(cfg))
    r = user.run("run", "--bundle", str(b), token, check=False)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "uidMappings" in r.stderr, r.stderr
    assert not (user.root / token).exists()
    assert find_leaks(token) == []


@pytest.mark.parametrize("cgroup_mount", [False, True])
def test_rootless_cgroup_hierarchy_is_read_only_cve_2023_25809(
    user: User, busybox_rootfs: Path, token: str, cgroup_mount: bool
) -> None:
    # runc < 1.1.5 left the host's /sys/fs/cgroup writable in a rootless container without a cgroup
    # namespace: under the `rbind,ro` /sys of `spec --rootless`, or through a cgroup mount without "ro".
    # Every cgroup mount a container does not own must be read-only, however it got there.
    b = _bundle(user, busybox_rootfs, multi=False)
    cfg = json.loads((b / "config.json").read_text())
    if cgroup_mount:
        cfg["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                              "options": ["nosuid", "noexec", "nodev"]})  # fmt: skip
    cfg["process"]["args"] = ["sh", "-c", "grep ' /sys/fs/cgroup' /proc/self/mountinfo >&2; grep ' /sys/fs/cgroup' /proc/self/mountinfo | cut -d' ' -f5,6; "
                              "for d in /sys/fs/cgroup/*/; do mkdir ${d}escape 2>/dev/null; done; true"]  # fmt: skip
    (b / "config.json").write_text(json.dumps(cfg))
    r = user.run("run", "--bundle", str(b), token)
    mounts = [line.split() for line in r.stdout.splitlines()]
    assert len(mounts) > 1, r.stdout
    for mp, opts in mounts:
        assert "ro" in opts.split(","), (mp, opts, r.stderr)
    for d in Path("/sys/fs/cgroup").iterdir():
        assert not (d / "escape").exists(), d


def test_rootless_idmapped_mount_is_a_clear_error(user: User, busybox_rootfs: Path, token: str) -> None:
    # mount_setattr(MOUNT_ATTR_IDMAP) wants privilege over the source's filesystem, which a user lacks
    b = _bundle(user, busybox_rootfs, multi=False)
    src = user.home / "src"
    src.mkdir()
    os.chown(src, user.uid, user.gid)
    cfg = json.loads((b / "config.json").read_text())
    own = [{"containerID": 0, "hostID": user.uid, "size": 1}]
    cfg["mounts"].append({"destination": "/idm", "type": "bind", "source": str(src), "options": ["bind"],
                          "uidMappings": own, "gidMappings": [{"containerID": 0, "hostID": user.gid, "size": 1}]})  # fmt: skip
    (b / "config.json").write_text(json.dumps(cfg))
    r = user.run("run", "--bundle", str(b), token, check=False)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "needs a runtime run as root" in r.stderr, r.stderr
    assert not (user.root / token).exists()
    assert find_leaks(token) == []
