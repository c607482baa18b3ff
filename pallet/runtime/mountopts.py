"""mount(8)-style option strings of the runtime spec turned into mount(2) flags and data."""

from __future__ import annotations

from pallet.linux import syscalls as s

# option -> (flags to set, flags to clear)
FLAGS: dict[str, tuple[int, int]] = {
    "ro": (s.MS_RDONLY, 0), "rw": (0, s.MS_RDONLY),
    "nosuid": (s.MS_NOSUID, 0), "suid": (0, s.MS_NOSUID),
    "nodev": (s.MS_NODEV, 0), "dev": (0, s.MS_NODEV),
    "noexec": (s.MS_NOEXEC, 0), "exec": (0, s.MS_NOEXEC),
    "sync": (s.MS_SYNCHRONOUS, 0), "async": (0, s.MS_SYNCHRONOUS),
    "dirsync": (s.MS_DIRSYNC, 0), "remount": (s.MS_REMOUNT, 0),
    "mand": (s.MS_MANDLOCK, 0), "nomand": (0, s.MS_MANDLOCK),
    "noatime": (s.MS_NOATIME, 0), "atime": (0, s.MS_NOATIME),
    "nodiratime": (s.MS_NODIRATIME, 0), "diratime": (0, s.MS_NODIRATIME),
    "relatime": (s.MS_RELATIME, 0), "norelatime": (0, s.MS_RELATIME),
    "strictatime": (s.MS_STRICTATIME, 0), "nostrictatime": (0, s.MS_STRICTATIME),
    "lazytime": (s.MS_LAZYTIME, 0), "nolazytime": (0, s.MS_LAZYTIME),
    "nosymfollow": (s.MS_NOSYMFOLLOW, 0), "symfollow": (0, s.MS_NOSYMFOLLOW),
    "bind": (s.MS_BIND, 0), "rbind": (s.MS_BIND | s.MS_REC, 0),
    "defaults": (0, 0),
}  # fmt: skip

PROPAGATION: dict[str, int] = {
    "private": s.MS_PRIVATE, "rprivate": s.MS_PRIVATE | s.MS_REC,
    "shared": s.MS_SHARED, "rshared": s.MS_SHARED | s.MS_REC,
    "slave": s.MS_SLAVE, "rslave": s.MS_SLAVE | s.MS_REC,
    "unbindable": s.MS_UNBINDABLE, "runbindable": s.MS_UNBINDABLE | s.MS_REC,
}  # fmt: skip

# options the runtime handles itself rather than passing to the kernel
SPECIAL = {"tmpcopyup", "idmap", "ridmap", "recursive"}

# recursive options -> (MOUNT_ATTR_* to set, MOUNT_ATTR_* to clear), applied to a whole mount tree with
# mount_setattr(AT_RECURSIVE) (runc 1.1+, crun): mount(2) can only change one mount at a time
_ATIME = s.MOUNT_ATTR__ATIME
RECURSIVE: dict[str, tuple[int, int]] = {
    "rro": (s.MOUNT_ATTR_RDONLY, 0), "rrw": (0, s.MOUNT_ATTR_RDONLY),
    "rnosuid": (s.MOUNT_ATTR_NOSUID, 0), "rsuid": (0, s.MOUNT_ATTR_NOSUID),
    "rnodev": (s.MOUNT_ATTR_NODEV, 0), "rdev": (0, s.MOUNT_ATTR_NODEV),
    "rnoexec": (s.MOUNT_ATTR_NOEXEC, 0), "rexec": (0, s.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (s.MOUNT_ATTR_NODIRATIME, 0), "rdiratime": (0, s.MOUNT_ATTR_NODIRATIME),
    "rrelatime": (s.MOUNT_ATTR_RELATIME, _ATIME), "rnorelatime": (0, 0),
    "rnoatime": (s.MOUNT_ATTR_NOATIME, _ATIME), "ratime": (0, 0),
    "rstrictatime": (s.MOUNT_ATTR_STRICTATIME, _ATIME), "rnostrictatime": (0, 0),
    "rnosymfollow": (s.MOUNT_ATTR_NOSYMFOLLOW, 0), "rsymfollow": (0, s.MOUNT_ATTR_NOSYMFOLLOW),
}  # fmt: skip


def recursive(options: list[str]) -> tuple[int, int]:
    """(attr_set, attr_clr) for mount_setattr from the r-prefixed options, later ones winning."""
    on = off = 0
    for opt in options:
        if opt in RECURSIVE:
            a, b = RECURSIVE[opt]
            on = (on & ~b) | a
            # an atime mode is set by clearing the whole _ATIME field (mount_setattr(2)) and naming one
            off = off | b if b == _ATIME else (off & ~a) | b
    return on, off


def parse(options: list[str]) -> tuple[int, list[int], str]:
    """(mount flags, propagation flags in order, data string for the filesystem)."""
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    for opt in options:
        if opt in FLAGS:
            on, off = FLAGS[opt]
            flags = (flags | on) & ~off
        elif opt in PROPAGATION:
            propagation.append(PROPAGATION[opt])
        elif opt in SPECIAL or opt.startswith("r") and opt[1:] in FLAGS and opt not in ("rw", "ro", "rbind"):
            continue  # recursive mount_setattr flags (rro, rnosuid, ...; see recursive()) and idmap
        else:
            data.append(opt)
    return flags, propagation, ",".join(data)
