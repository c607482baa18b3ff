"""The published runc escapes, each tried for real against pallet-runtime.

Each test names its CVE and would fail on a naive runtime (one that forks the host's python as the init,
leaks its fds, follows symlinks out of the rootfs, or mounts wherever a config says).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.leaks import find_leaks
from tests.helpers.runtime import RuntimeCLI, edit_config, set_config

pytestmark = pytest.mark.root


def sh(bundle: Path, script: str, **cfg: object) -> None:
    set_config(bundle, process__args=["sh", "-c", script], root__readonly=False, **cfg)


def add_mounts(bundle: Path, *mounts: dict[str, object]) -> None:
    c, save = edit_config(bundle)
    c["mounts"] += list(mounts)
    save()


def refused(rt: RuntimeCLI, bundle: Path, cid: str, *want: str) -> str:
    r = rt("run", "--bundle", str(bundle), cid, check=False)
    assert r.returncode != 0, r.stdout
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in want), err
    assert not (rt.root / cid).exists()
    assert rt("list", "-q").stdout.split() == []
    return err


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- CVE-2019-5736: overwriting the runtime through /proc/self/exe -----------------------------------


def test_created_init_exe_is_sealed_not_the_host_python(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    host_python = os.path.realpath(sys.executable)
    before = digest(host_python)
    sh(bundle, "true")
    rt("create", "--bundle", str(bundle), cid)
    pid = rt.state(cid)["pid"]
    exe = f"/proc/{pid}/exe"
    # as root: the interpreter seen through a private read-only overlayfs (a memfd copy elsewhere)
    assert os.statvfs(exe).f_flag & os.ST_RDONLY, os.readlink(exe)
    st, host = os.stat(exe), os.stat(host_python)
    assert (st.st_dev, st.st_ino) != (host.st_dev, host.st_ino)
    # not even root on the host can write through it: sealed against writes (or busy as a running text)
    with pytest.raises(OSError):
        with open(exe, "r+b") as f:
            f.write(b"\x7fELF-overwritten")
    # and from inside the container, the init's exe is out of reach as well
    r = rt("exec", cid, "sh", "-c", "echo pwned > /proc/1/exe && echo WROTE", check=False)
    assert "WROTE" not in r.stdout
    rt("delete", "--force", cid)
    assert digest(host_python) == before


@pytest.mark.parametrize("how", ["overlay", "memfd"])
def test_both_sealed_interpreters_run_and_refuse_writes(how: str, tmp_path: Path) -> None:
    from pallet.runtime import launcher

    host_python = os.path.realpath(sys.executable)
    before = digest(host_python)
    fd = launcher._overlay_view(str(tmp_path / "lower")) if how == "overlay" else launcher._memfd_copy()
    try:
        path = f"/proc/self/fd/{fd}"
        assert digest(path) == before
        with pytest.raises(OSError):  # EROFS through the overlay; EPERM from the memfd's write seal
            with open(path, "r+b") as f:
                f.write(b"\x7fELF-overwritten")
                f.flush()
        r = subprocess.run([path, "-S", "-c", "print(6 * 7)"], capture_output=True, text=True, pass_fds=(fd,))
        assert r.stdout == "42\n", r.stderr
    finally:
        os.close(fd)
    assert digest(host_python) == before


def test_shebang_proc_self_exe_runs_the_sealed_copy(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    # the CVE's trigger: a container binary whose interpreter is /proc/self/exe, i.e. the runtime itself
    host_python = os.path.realpath(sys.executable)
    before = digest(host_python)
    evil = bundle / "rootfs" / "evil"
    evil.write_text("#!/proc/self/exe\n")
    evil.chmod(0o755)
    set_config(bundle, process__args=["/evil"], root__readonly=False)
    r = rt("run", "--bundle", str(bundle), cid, check=False)
    # the interpreter that ran was the sealed view, which finds no library in the container and stops
    assert r.returncode != 0
    assert host_python not in r.stderr, r.stderr
    assert digest(host_python) == before


# -- CVE-2024-21626: leaked fds and a cwd through /proc/self/fd ---------------------------------------


def test_only_stdio_and_preserved_fds_reach_the_container(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    # the shell's own open fds, probed one by one (a pipeline or `ls` would show fds of their own)
    sh(bundle, "for n in $(seq 0 64); do [ -e /proc/$$/fd/$n ] && echo $n; done; true")
    assert rt("run", "--bundle", str(bundle), cid).stdout.split() == ["0", "1", "2"]
    # fd 3 opened by a shell in between: this process's own fd 3 belongs to the test runner
    argv = [
        *rt.argv0,
        "--root",
        str(rt.root),
        "run",
        "--preserve-fds",
        "1",
        "--bundle",
        str(bundle),
        cid + "p",
    ]
    r = subprocess.run(
        ["sh", "-c", 'exec 3</dev/null; exec "$@"', "sh", *argv], capture_output=True, text=True
    )
    assert r.stdout.split() == ["0", "1", "2", "3"]


@pytest.mark.parametrize("n", range(3, 11))
def test_cwd_through_proc_self_fd_fails_cleanly(rt: RuntimeCLI, bundle: Path, cid: str, n: int) -> None:
    sh(bundle, "pwd; ls ..", process__cwd=f"/proc/self/fd/{n}")
    err = refused(rt, bundle, cid, "cwd")
    assert find_leaks(cid) == [], err


# -- CVE-2021-30465: mount targets that are symlinks or climb with .. ---------------------------------


def test_symlinked_mount_targets_land_inside_the_rootfs(
    rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path
) -> None:
    host_dir = workdir / "host-dir"
    host_dir.mkdir()
    (host_dir / "precious").write_text("host data\n")
    src = workdir / "src"
    src.mkdir()
    (src / "marker").write_text("from-bind\n")
    rootfs = bundle / "rootfs"
    (rootfs / "evil-tmpfs").symlink_to(str(host_dir))  # absolute: resolved in the container's root
    (rootfs / "evil-bind").symlink_to("../../../../../.." + str(host_dir))
    add_mounts(
        bundle,
        {"destination": "/evil-tmpfs", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/evil-bind", "type": "bind", "source": str(src), "options": ["rbind"]},
        {"destination": "/../../../" + str(workdir / "climb"), "type": "tmpfs", "source": "tmpfs"},
    )
    sh(bundle, f"touch /evil-tmpfs/new; cat /evil-bind/marker; grep -c ' {host_dir} ' /proc/self/mountinfo; "
               f"ls {workdir}/climb && echo climb-inside")  # fmt: skip
    out = rt("run", "--bundle", str(bundle), cid).stdout.split()
    # both mounts show up at the symlinks' targets inside the container's root
    assert out == ["from-bind", "2", "climb-inside"], out
    assert sorted(os.listdir(host_dir)) == ["precious"]  # the host's dir never saw the tmpfs or the bind
    assert not (workdir / "climb").exists()  # `..` clamped at the container's root
    assert (rootfs / workdir.relative_to("/") / "climb").is_dir()


# -- CVE-2019-16884, CVE-2023-27561, CVE-2023-28642: /proc through symlinks and covering mounts ------


def test_proc_on_a_symlink_is_refused(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    rootfs = bundle / "rootfs"
    os.rmdir(rootfs / "proc")
    (rootfs / "fakeproc").mkdir()
    (rootfs / "proc").symlink_to("fakeproc")
    sh(bundle, "true")
    refused(rt, bundle, cid, "/proc", "proc mount must be a directory")


def test_proc_on_a_file_is_refused(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    rootfs = bundle / "rootfs"
    os.rmdir(rootfs / "proc")
    (rootfs / "proc").write_text("not a dir\n")
    sh(bundle, "true")
    refused(rt, bundle, cid, "/proc", "must be a directory")


def test_sysfs_on_a_symlink_into_proc_is_refused(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    rootfs = bundle / "rootfs"
    (rootfs / "sys").rmdir()
    (rootfs / "sys").symlink_to("/proc/self")
    sh(bundle, "true")
    refused(rt, bundle, cid, "/sys", "sysfs mount must be a directory")


@pytest.mark.parametrize(
    ("mount", "want"),
    [
        ({"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}, "only a proc filesystem"),
        ({"destination": "/proc/self/attr", "type": "tmpfs", "source": "tmpfs"}, "inside /proc"),
        ({"destination": "/proc/sysrq-trigger", "type": "bind", "source": "/dev/null", "options": ["bind"]},
         "inside /proc"),
    ],
)  # fmt: skip
def test_mounts_covering_proc_are_refused(
    rt: RuntimeCLI, bundle: Path, cid: str, mount: dict[str, object], want: str
) -> None:
    add_mounts(bundle, mount)
    sh(bundle, "true")
    refused(rt, bundle, cid, str(mount["destination"]), want)


def test_mount_through_a_symlink_into_proc_is_refused(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    (bundle / "rootfs" / "attr").symlink_to("/proc/self/attr")
    add_mounts(bundle, {"destination": "/attr", "type": "tmpfs", "source": "tmpfs"})
    sh(bundle, "true")
    refused(rt, bundle, cid, "/attr", "inside /proc")


def test_lxcfs_style_proc_files_may_be_covered(rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path) -> None:
    fake = workdir / "uptime"
    fake.write_text("42.00 42.00\n")
    add_mounts(
        bundle, {"destination": "/proc/uptime", "type": "bind", "source": str(fake), "options": ["bind"]}
    )
    sh(bundle, "cat /proc/uptime")
    assert rt("run", "--bundle", str(bundle), cid).stdout.strip() == "42.00 42.00"


def test_masked_and_readonly_symlinks_in_proc_are_not_followed(
    rt: RuntimeCLI, bundle: Path, cid: str
) -> None:
    # /proc/self is a symlink to the init's own /proc/PID: masking or remounting through it would hide or
    # freeze the process's own entries; it is skipped, the real paths still work
    c, save = edit_config(bundle)
    c["linux"]["maskedPaths"] += ["/proc/self", "/proc/thread-self"]
    c["linux"]["readonlyPaths"] += ["/proc/self"]
    save()
    sh(bundle, "grep ^Name: /proc/self/status; echo 5 > /proc/self/oom_score_adj && cat /proc/self/oom_score_adj; "
               "cat /proc/kcore | wc -c")  # fmt: skip
    out = rt("run", "--bundle", str(bundle), cid).stdout.split()
    assert out == ["Name:", "grep", "5", "0"], out  # /proc/kcore (a default masked path) still masked


# -- CVE-2023-25809 (a host cgroup hierarchy writable from a rootless container): see test_rootless.py,
# which runs it as a real unprivileged user.


# -- bad input: a clear error and nothing left behind ------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "want"),
    [
        ({"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 0}]}, "linux.uidMappings[0].size"),
        ({"uidMappings": [{"containerID": -1, "hostID": 1000, "size": 1}]}, "linux.uidMappings[0].containerID"),
        ({"gidMappings": [{"containerID": 0, "hostID": "x", "size": 1}]}, "linux.gidMappings[0].hostID"),
        ({"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 1000},
                          {"containerID": 500, "hostID": 300000, "size": 10}]}, "linux.uidMappings[1]: overlaps"),
        ({"gidMappings": [{"containerID": 0, "hostID": 100000, "size": 1000},
                          {"containerID": 2000, "hostID": 100999, "size": 10}]}, "linux.gidMappings[1]: overlaps"),
        ({"seccomp": {"defaultAction": "SCMP_ACT_BOOM"}}, "linux.seccomp.defaultAction"),
        ({"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}},
         "linux.seccomp.architectures[0]"),
    ],
)  # fmt: skip
def test_bad_linux_input_is_refused_and_leaves_nothing(
    rt: RuntimeCLI, bundle: Path, cid: str, edit: dict[str, object], want: str
) -> None:
    c, save = edit_config(bundle)
    c["linux"]["namespaces"].append({"type": "user"})
    c["linux"].setdefault("uidMappings", [{"containerID": 0, "hostID": 0, "size": 65536}])
    c["linux"].setdefault("gidMappings", [{"containerID": 0, "hostID": 0, "size": 65536}])
    c["linux"].update(edit)
    save()
    refused(rt, bundle, cid, want)
    assert find_leaks(cid) == []


def test_idmapped_mount_needs_both_maps(rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path) -> None:
    add_mounts(bundle, {"destination": "/idm", "type": "bind", "source": str(workdir), "options": ["bind"],
                        "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]})  # fmt: skip
    refused(rt, bundle, cid, "mounts[", "both uidMappings and gidMappings")


# -- mount hardening: recursive flags and idmapped mounts --------------------------------------------


@pytest.fixture
def tree_with_submount(workdir: Path, leakcheck: None) -> Iterator[Path]:
    """A host dir with a tmpfs below it, unmounted before the leak check runs."""
    src = workdir / "tree"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "sub")], check=True)
    yield src
    subprocess.run(["umount", str(src / "sub")], check=True)


@pytest.mark.parametrize("opts", [["rbind", "rro", "rnosuid"], ["rbind", "ro"]])
def test_recursive_read_only_reaches_submounts(
    tree_with_submount: Path, rt: RuntimeCLI, bundle: Path, cid: str, opts: list[str]
) -> None:
    # mount(2) with MS_RDONLY on an rbind changes the top mount only; a host mount below stayed writable
    src = tree_with_submount
    add_mounts(bundle, {"destination": "/m", "type": "bind", "source": str(src), "options": opts})
    sh(bundle, "touch /m/top 2>&1; touch /m/sub/x 2>&1; grep ' /m' /proc/self/mountinfo | cut -d' ' -f5,6")
    out = rt("run", "--bundle", str(bundle), cid).stdout
    assert out.count("Read-only file system") == 2, out
    mounts = dict(line.split() for line in out.splitlines() if line.startswith("/m"))
    assert set(mounts) == {"/m", "/m/sub"}
    for opts_seen in mounts.values():
        assert "ro" in opts_seen.split(","), mounts
        if "rnosuid" in opts:
            assert "nosuid" in opts_seen.split(","), mounts
    assert os.listdir(src / "sub") == []


def test_idmapped_bind_mount_shifts_owners(rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path) -> None:
    src = workdir / "idsrc"
    src.mkdir()
    (src / "f").write_text("x")
    os.chown(src / "f", 0, 0)
    maps = [{"containerID": 0, "hostID": 4242, "size": 1}]
    add_mounts(bundle, {"destination": "/idm", "type": "bind", "source": str(src), "options": ["bind"],
                        "uidMappings": maps, "gidMappings": maps})  # fmt: skip
    sh(bundle, "stat -c '%u %g' /idm/f /idm")
    out = rt("run", "--bundle", str(bundle), cid).stdout.split("\n")
    # on-disk 0 shows as host 4242; the dir (owned by 0 too) likewise; the host's file is unchanged
    assert out[:2] == ["4242 4242", "4242 4242"], out
    st = (src / "f").stat()
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_idmapped_mount_where_the_filesystem_cannot(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    maps = [{"containerID": 0, "hostID": 4242, "size": 1}]
    add_mounts(bundle, {"destination": "/k", "type": "bind", "source": "/sys/kernel", "options": ["bind"],
                        "uidMappings": maps, "gidMappings": maps})  # fmt: skip
    sh(bundle, "true")
    refused(rt, bundle, cid, "idmapped mount of /sys/kernel on /k", "not supported")


def test_idmapped_mount_into_a_user_namespace(rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path) -> None:
    # the common case: host files owned by root show up owned by the container's root, not by nobody
    src = workdir / "idsrc"
    src.mkdir()
    (src / "f").write_text("x")
    rng = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    for d in ("plain", "idm"):  # the rootfs belongs to the host's root: the container's cannot mkdir there
        (bundle / "rootfs" / d).mkdir()
    c, save = edit_config(bundle)
    c["linux"]["namespaces"].append({"type": "user"})
    c["linux"]["uidMappings"] = c["linux"]["gidMappings"] = rng
    c["mounts"] += [
        {"destination": "/plain", "type": "bind", "source": str(src), "options": ["bind"]},
        {"destination": "/idm", "type": "bind", "source": str(src), "options": ["bind"],
         "uidMappings": rng, "gidMappings": rng},
    ]  # fmt: skip
    save()
    sh(bundle, "stat -c '%u %g' /plain/f /idm/f; echo hi > /idm/f && cat /idm/f")
    out = rt("run", "--bundle", str(bundle), cid).stdout.split("\n")
    assert out[:3] == ["65534 65534", "0 0", "hi"], out
    st = (src / "f").stat()
    assert (st.st_uid, st.st_gid) == (0, 0) and (src / "f").read_text() == "hi\n"
