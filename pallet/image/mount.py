"""Performing a snapshot's mounts, for the CLI and tests (the runtime mounts containers itself).

mount(2) takes at most one page of option data, so an overlay with many layers is mounted from
inside the directory that holds them, with relative lowerdirs, as containerd's mount helper does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import shutil
from collections.abc import Iterator
from pathlib import Path

from pallet.errors import Internal, InvalidArgument
from pallet.image.snapshots import Mount
from pallet.linux import syscalls

PAGE = resource.getpagesize()


def _flags(options: list[str]) -> tuple[int, list[str]]:
    flags, data = 0, []
    for opt in options:
        if opt in ("bind", "rbind"):
            flags |= syscalls.MS_BIND | (syscalls.MS_REC if opt == "rbind" else 0)
        elif opt == "ro":
            flags |= syscalls.MS_RDONLY
        elif opt == "rw":
            continue
        else:
            data.append(opt)
    return flags, data


def compact_lowerdirs(options: list[str]) -> tuple[str, list[str]]:
    """(directory to mount from, options with every layer path relative to it)."""
    paths = []
    for opt in options:
        key, _, value = opt.partition("=")
        if key in ("lowerdir", "upperdir", "workdir"):
            paths += value.split(":")
    common = os.path.commonpath(paths)
    if os.path.isdir(common) and common in paths:
        common = os.path.dirname(common)
    out = []
    for opt in options:
        key, _, value = opt.partition("=")
        if key in ("lowerdir", "upperdir", "workdir"):
            value = ":".join(os.path.relpath(p, common) for p in value.split(":"))
            opt = f"{key}={value}"
        out.append(opt)
    return common, out


def _mount_overlay(m: Mount, target: str) -> None:
    for opt in m.options:
        if "," in opt:
            raise InvalidArgument(f'overlay option "{opt}": paths must not contain ","')
    flags, data = _flags(m.options)
    text = ",".join(data)
    if len(text) < PAGE:
        syscalls.default().mount(m.source, target, "overlay", flags, text)
        return
    # relative paths resolve against the cwd at mount time; the CLI is single-threaded
    base, rel = compact_lowerdirs(data)
    text = ",".join(rel)
    if len(text) >= PAGE:
        raise InvalidArgument(
            f"overlay mount options are {len(text)} bytes even when relative; the limit is {PAGE}"
        )
    old = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.chdir(base)
        syscalls.default().mount(m.source, target, "overlay", flags, text)
    finally:
        os.fchdir(old)
        os.close(old)


def _mount_fuse(m: Mount, target: str) -> None:
    _, data = _flags(m.options)
    import subprocess  # fuse-overlayfs only: overlay and bind mounts are syscalls

    r = subprocess.run(["fuse-overlayfs", "-o", ",".join(data), target], capture_output=True, text=True)
    if r.returncode != 0:
        raise Internal(f"fuse-overlayfs on {target}: {r.stderr.strip() or 'failed'}")


def volatile(mounts: list[Mount]) -> list[Mount]:
    """The mounts with overlay's ``volatile`` (Linux 5.10), for a root whose writes are thrown away
    (``--rm``): its unmount then skips the sync of the whole filesystem its upper directory is on
    (umount2 took 2.4 ms median here, up to 13 ms while other processes wrote; 0.2 ms volatile).
    The kernel leaves ``work/incompat/volatile`` in the workdir and refuses the next mount of that
    upper while it is there (a crash may have lost its writes); such an upper is disposable, so the
    marker goes before each mount (the documented way to reuse one)."""
    out = []
    for m in mounts:
        work = m.option("workdir") if m.type == "overlay" else None
        if work:
            shutil.rmtree(os.path.join(work, "work", "incompat", "volatile"), ignore_errors=True)
            m = Mount(m.type, m.source, [*m.options, "volatile"])
        out.append(m)
    return out


def mount_all(mounts: list[Mount], target: Path) -> None:
    for m in mounts:
        if m.type == "overlay" and "volatile" in m.options:
            try:
                _mount_overlay(m, str(target))
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                # a kernel before 5.10 knows no volatile: the mount as it is without
                _mount_overlay(
                    Mount(m.type, m.source, [o for o in m.options if o != "volatile"]), str(target)
                )
        elif m.type == "bind":
            flags, _ = _flags(m.options)
            sc = syscalls.default()
            sc.mount(m.source, str(target), None, flags & ~syscalls.MS_RDONLY)
            if flags & syscalls.MS_RDONLY:
                # a bind mount ignores MS_RDONLY until it is remounted (mount(2), "Creating a bind mount")
                sc.mount(None, str(target), None, syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
        elif m.type == "overlay":
            _mount_overlay(m, str(target))
        elif m.type.startswith("fuse3.") or m.type.startswith("fuse."):
            _mount_fuse(m, str(target))
        else:
            raise InvalidArgument(f'mount type "{m.type}" is not supported')


def is_mountpoint(target: Path) -> bool:
    """From mountinfo: os.path.ismount misses a bind mount of a directory of the same filesystem."""
    want = os.path.realpath(target)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split(" ", 5)[4]
            # mountinfo escapes space, tab, newline and backslash as octal
            if re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point) == want:
                return True
    return False


def unmount_all(target: Path) -> None:
    """Unmount everything stacked on ``target``, until umount2 finds no mount there (EINVAL, "target
    is not a mount point"; ENOENT: no target): no read of mountinfo before and after each one."""
    sc = syscalls.default()
    while True:
        try:
            sc.umount2(str(target), 0)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                return  # nothing (left) mounted: another process (the monitor, a concurrent rm) may have
            try:
                sc.umount2(str(target), syscalls.MNT_DETACH)  # busy: detach it
            except OSError as e2:
                if e2.errno not in (errno.EINVAL, errno.ENOENT):
                    raise
                return


@contextlib.contextmanager
def mounted(mounts: list[Mount], target: Path) -> Iterator[Path]:
    mount_all(mounts, target)
    try:
        yield target
    finally:
        unmount_all(target)
