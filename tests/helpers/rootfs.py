"""A busybox root filesystem for tests, built from Debian's busybox-static."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def busybox_available() -> bool:
    try:
        out = subprocess.run(["file", "-L", BUSYBOX], capture_output=True, text=True).stdout
    except FileNotFoundError:
        out = "statically linked" if os.path.exists(BUSYBOX) else ""
    return os.path.exists(BUSYBOX) and ("static" in out or not out)


def make_busybox_rootfs(dest: Path) -> Path:
    """Lay out a minimal rootfs: busybox with one symlink per applet, /etc/passwd and group."""
    dest.mkdir(parents=True, exist_ok=True)
    for d in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "home",
        "var",
        "run",
    ):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = dest / applet
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        "app:x:1000:1000:app:/home/app:/bin/sh\n"
    )
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\napp:x:1000:\n")
    return dest
