"""RootfsBuilder against FakeSyscalls: which mounts it asks the kernel for, in which order."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from pallet.linux import syscalls as s
from pallet.linux.fake import FakeSyscalls
from pallet.runtime import process
from pallet.runtime.rootfs import RootfsBuilder, RootfsError


def builder(tmp_path: Path, mounts: list[dict], **linux: object) -> tuple[RootfsBuilder, FakeSyscalls, Path]:
    root = tmp_path / "rootfs"
    root.mkdir()
    fake = FakeSyscalls()
    spec = {
        "mounts": mounts,
        "root": {"path": str(root)},
        "linux": {"namespaces": [{"type": "mount"}], **linux},
    }
    return RootfsBuilder(fake, spec, str(root), {}), fake, root


def test_tmpfs_mount_goes_through_a_checked_fd(tmp_path: Path) -> None:
    b, fake, root = builder(tmp_path, [])
    b.mount_one(
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m"]}
    )
    (name, (src, target, fstype, flags, data)) = fake.calls[0]
    assert name == "mount" and src == "tmpfs" and fstype == "tmpfs"
    assert target.startswith("/proc/self/fd/")
    assert flags == s.MS_NOSUID and data == "size=1m"
    assert (root / "scratch").is_dir()


def test_bind_ro_is_bind_then_remount(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    b, fake, root = builder(tmp_path, [])
    b.mount_one(
        {"destination": "/data", "type": "bind", "source": str(src), "options": ["rbind", "ro", "rprivate"]}
    )
    flags = [c[1][3] for c in fake.calls]
    assert flags[0] == s.MS_BIND | s.MS_REC
    assert flags[1] == s.MS_REMOUNT | s.MS_BIND | s.MS_RDONLY
    assert flags[2] == s.MS_PRIVATE | s.MS_REC


def test_symlinked_destination_stays_inside_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    b, fake, root = builder(tmp_path, [])
    (root / "evil").symlink_to(str(outside))  # absolute target: resolved inside the rootfs
    b.mount_one({"destination": "/evil/sub", "type": "tmpfs", "source": "tmpfs"})
    assert (root / str(outside).lstrip("/") / "sub").is_dir()
    assert not (outside / "sub").exists()


def test_proc_over_a_symlink_is_refused(tmp_path: Path) -> None:
    b, fake, root = builder(tmp_path, [])
    (root / "tmp").mkdir()
    (root / "proc").symlink_to("tmp")  # CVE-2019-16884: proc through a symlink would land elsewhere
    with pytest.raises(RootfsError, match="must be a directory, not a symlink"):
        b.mount_one({"destination": "/proc", "type": "proc", "source": "proc"})
    (root / "sysfile").write_text("")
    with pytest.raises(RootfsError, match="must be a directory"):
        b.mount_one({"destination": "/sysfile", "type": "sysfs", "source": "sysfs"})
    assert fake.calls == []


def test_sysfs_eperm_falls_back_to_a_bind_of_the_host(tmp_path: Path) -> None:
    b, fake, root = builder(tmp_path, [])
    fake.fail["mount"] = errno.EPERM
    with pytest.raises(RootfsError, match="mount sysfs sysfs on /sys"):
        b.mount_one({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]})


def test_find_executable(tmp_path: Path) -> None:
    exe = tmp_path / "bin" / "tool"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert process.find_executable("tool", [f"PATH={exe.parent}"]) == str(exe)
    with pytest.raises(process.ProcessError, match='exec "nope": executable file not found in \\$PATH'):
        process.find_executable("nope", [f"PATH={exe.parent}"])
    exe.chmod(0o644)
    with pytest.raises(process.ProcessError, match="permission denied"):
        process.find_executable(str(exe), [])
