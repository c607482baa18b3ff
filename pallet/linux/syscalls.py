"""The one seam between Pallet and the kernel: raw syscalls through ctypes.

Python 3.11 has no unshare, setns, mount, pivot_root, prctl or capset, so they come from
libc here, with typed argtypes and errno turned into OSError. Everything above this layer
calls a ``Syscalls`` object, so unit tests can pass ``FakeSyscalls`` (fake.py) instead.
"""

from __future__ import annotations

import ctypes
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the container's init ~2 ms at every start; annotations only
    from typing import Any

# clone(2) / unshare(2) flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# prctl(2) options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# inotify(7)
IN_MODIFY = 0x2
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

MFD_CLOEXEC = 0x1
MFD_ALLOW_SEALING = 0x2
MFD_EXEC = 0x10
F_ADD_SEALS = 1033
F_SEAL_SEAL = 0x1
F_SEAL_SHRINK = 0x2
F_SEAL_GROW = 0x4
F_SEAL_WRITE = 0x8

_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# seccomp(2)
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_LOG = 2
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 32

# the new mount API: open_tree(2), mount_setattr(2), move_mount(2)
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
AT_FDCWD = -100
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
CLONE_INTO_CGROUP = 0x200000000
SIGCHLD = 17

# x86_64 and aarch64 numbers of the syscalls libc does not wrap everywhere
_NR = {
    "x86_64": {"pivot_root": 155, "pidfd_open": 434, "pidfd_send_signal": 424, "mount_setattr": 442,
               "seccomp": 317, "open_tree": 428, "move_mount": 429, "keyctl": 250, "fsopen": 430,
               "fsconfig": 431, "fsmount": 432, "clone3": 435},
    "aarch64": {"pivot_root": 41, "pidfd_open": 434, "pidfd_send_signal": 424, "mount_setattr": 442,
                "seccomp": 277, "open_tree": 428, "move_mount": 429, "keyctl": 219, "fsopen": 430,
                "fsconfig": 431, "fsmount": 432, "clone3": 435},
}  # fmt: skip


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class _CloneArgs(ctypes.Structure):  # struct clone_args up to .cgroup (CLONE_ARGS_SIZE_VER2)
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
            "set_tid", "set_tid_size", "cgroup",
        )
    ]  # fmt: skip


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    cs, ci, cul, vp = ctypes.c_char_p, ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p
    for name, args, res in [
        ("unshare", [ci], ci),
        ("setns", [ci, ci], ci),
        ("mount", [cs, cs, cs, cul, vp], ci),
        ("umount2", [cs, ci], ci),
        ("sethostname", [cs, ctypes.c_size_t], ci),
        ("setdomainname", [cs, ctypes.c_size_t], ci),
        ("prctl", [ci, cul, cul, cul, cul], ci),
        ("capset", [vp, vp], ci),
        ("capget", [vp, vp], ci),
        ("personality", [cul], ci),
        ("memfd_create", [cs, ctypes.c_uint], ci),
        ("inotify_init1", [ci], ci),
        ("inotify_add_watch", [ci, cs, ctypes.c_uint32], ci),
        ("syscall", None, ctypes.c_long),
    ]:
        fn = getattr(libc, name)
        if args is not None:
            fn.argtypes = args
        fn.restype = res
    return libc


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


class Syscalls:
    """Thin typed wrappers over libc; each raises OSError with errno on failure."""

    def __init__(self) -> None:
        self._libc = _libc()
        self._nr = _NR.get(os.uname().machine, _NR["x86_64"])

    def unshare(self, flags: int) -> None:
        _check(self._libc.unshare(flags), "unshare")

    def setns(self, fd: int, nstype: int = 0) -> None:
        _check(self._libc.setns(fd, nstype), "setns")

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
    ) -> None:
        d = _b(data)
        _check(
            self._libc.mount(_b(source), _b(target), _b(fstype), flags, ctypes.c_char_p(d) if d else None),
            f"mount {target}",
            target,
        )

    def umount2(self, target: str, flags: int = 0) -> None:
        _check(self._libc.umount2(_b(target), flags), f"umount {target}", target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        _check(self._libc.syscall(self._nr["pivot_root"], _b(new_root), _b(put_old)), "pivot_root", new_root)

    def sethostname(self, name: str) -> None:
        b = name.encode()
        _check(self._libc.sethostname(b, len(b)), "sethostname")

    def setdomainname(self, name: str) -> None:
        b = name.encode()
        _check(self._libc.setdomainname(b, len(b)), "setdomainname")

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        return _check(self._libc.prctl(option, arg2, arg3, arg4, arg5), "prctl")

    def join_session_keyring(self, name: str) -> int:
        """keyctl(KEYCTL_JOIN_SESSION_KEYRING, name): a new session keyring named name; its serial."""
        return _check(self._libc.syscall(self._nr["keyctl"], ctypes.c_int(1), name.encode()), "keyctl")

    def personality(self, persona: int) -> None:
        _check(self._libc.personality(persona), "personality")

    def memfd_create(self, name: str, flags: int) -> int:
        return _check(self._libc.memfd_create(name.encode(), flags), "memfd_create")

    def inotify_init1(self, flags: int) -> int:
        return _check(self._libc.inotify_init1(flags), "inotify_init1")

    def inotify_add_watch(self, fd: int, path: str, mask: int) -> int:
        return _check(self._libc.inotify_add_watch(fd, _b(path), mask), f"inotify_add_watch {path}", path)

    def pidfd_open(self, pid: int) -> int:
        return _check(
            self._libc.syscall(self._nr["pidfd_open"], ctypes.c_int(pid), ctypes.c_uint(0)), "pidfd_open"
        )

    def pidfd_send_signal(self, pidfd: int, sig: int) -> None:
        _check(
            self._libc.syscall(
                self._nr["pidfd_send_signal"], ctypes.c_int(pidfd), ctypes.c_int(sig), None, ctypes.c_uint(0)
            ),
            "pidfd_send_signal",
        )

    def capget(self) -> tuple[int, int, int]:
        """(effective, permitted, inheritable) of this thread as 64-bit masks."""
        hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        _check(self._libc.capget(ctypes.byref(hdr), ctypes.byref(data)), "capget")
        e, p, inh = (
            int(getattr(data[0], f)) | (int(getattr(data[1], f)) << 32)
            for f in ("effective", "permitted", "inheritable")
        )
        return e, p, inh

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for i in range(2):
            shift = 32 * i
            data[i].effective = (effective >> shift) & 0xFFFFFFFF
            data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
            data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
        _check(self._libc.capset(ctypes.byref(hdr), ctypes.byref(data)), "capset")

    def seccomp_set_filter(self, flags: int, program: bytes) -> int:
        """Load a classic BPF program (struct sock_filter[]) as this thread's seccomp filter.

        Returns the notify listener fd with SECCOMP_FILTER_FLAG_NEW_LISTENER, else 0. Needs no_new_privs
        or CAP_SYS_ADMIN (seccomp(2)).
        """
        buf = ctypes.create_string_buffer(program, len(program))
        prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
        return _check(
            self._libc.syscall(
                self._nr["seccomp"],
                ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                ctypes.c_uint(flags),
                ctypes.byref(prog),
            ),
            "seccomp",
        )

    def seccomp_flag_supported(self, flag: int) -> bool:
        """Whether this kernel knows a filter flag: with a NULL program it fails EFAULT if so, else EINVAL."""
        ret = self._libc.syscall(
            self._nr["seccomp"], ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flag), None
        )
        return ret < 0 and ctypes.get_errno() == 14  # EFAULT

    def open_tree(self, dirfd: int, path: str, flags: int) -> int:
        return _check(
            self._libc.syscall(self._nr["open_tree"], ctypes.c_int(dirfd), _b(path), ctypes.c_uint(flags)),
            f"open_tree {path}",
            path,
        )

    def mount_setattr(
        self,
        dirfd: int,
        path: str,
        flags: int,
        attr_set: int = 0,
        attr_clr: int = 0,
        propagation: int = 0,
        userns_fd: int = 0,
    ) -> None:
        attr = _MountAttr(attr_set, attr_clr, propagation, userns_fd)
        _check(
            self._libc.syscall(
                self._nr["mount_setattr"],
                ctypes.c_int(dirfd),
                _b(path),
                ctypes.c_uint(flags),
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            ),
            f"mount_setattr {path}",
            path,
        )

    def move_mount(self, from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int) -> None:
        _check(
            self._libc.syscall(
                self._nr["move_mount"],
                ctypes.c_int(from_dirfd),
                _b(from_path),
                ctypes.c_int(to_dirfd),
                _b(to_path),
                ctypes.c_uint(flags),
            ),
            f"move_mount {to_path}",
            to_path,
        )

    def fsopen(self, fstype: str) -> int:
        return _check(
            self._libc.syscall(self._nr["fsopen"], _b(fstype), ctypes.c_uint(FSOPEN_CLOEXEC)),
            f"fsopen {fstype}",
        )

    def fsconfig_set_string(self, fs_fd: int, key: str, value: str) -> None:
        _check(
            self._libc.syscall(
                self._nr["fsconfig"], ctypes.c_int(fs_fd), ctypes.c_uint(FSCONFIG_SET_STRING), _b(key),
                _b(value), ctypes.c_int(0),
            ),
            f"fsconfig {key}={value}",
        )  # fmt: skip

    def fsconfig_create(self, fs_fd: int) -> None:
        _check(
            self._libc.syscall(
                self._nr["fsconfig"], ctypes.c_int(fs_fd), ctypes.c_uint(FSCONFIG_CMD_CREATE), None, None,
                ctypes.c_int(0),
            ),
            "fsconfig create",
        )  # fmt: skip

    def fsmount(self, fs_fd: int, attr_flags: int) -> int:
        """A detached mount of the superblock made by fsopen/fsconfig: an fd, attached nowhere."""
        return _check(
            self._libc.syscall(
                self._nr["fsmount"],
                ctypes.c_int(fs_fd),
                ctypes.c_uint(FSMOUNT_CLOEXEC),
                ctypes.c_uint(attr_flags),
            ),
            "fsmount",
        )

    def fork_into_cgroup(self, cgroup_fd: int) -> int:
        """os.fork() whose child starts in the cgroup v2 directory ``cgroup_fd`` (clone3 with
        CLONE_INTO_CGROUP, Linux 5.7): no write to cgroup.procs, whose lock waits for an RCU grace
        period (5-15 ms here). Returns the child's pid, 0 in the child.

        Python's own fork bookkeeping runs around it, as os.fork does it (PyOS_BeforeFork and
        PyOS_AfterFork_*: the import lock, the GIL and thread states, at-fork callbacks), and the call
        goes through PyDLL, which keeps the GIL held across it. For a single-threaded caller only:
        libc's fork handlers (its malloc locks) do not run.
        """
        api = ctypes.pythonapi
        args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=SIGCHLD, cgroup=cgroup_fd)
        clone3 = ctypes.PyDLL(None, use_errno=True).syscall
        clone3.restype = ctypes.c_long
        api.PyOS_BeforeFork()
        pid = clone3(self._nr["clone3"], ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
        err = ctypes.get_errno()
        if pid == 0:
            api.PyOS_AfterFork_Child()
            return 0
        api.PyOS_AfterFork_Parent()
        if pid < 0:
            raise OSError(err, f"clone3: {os.strerror(err)}")
        return int(pid)

    def raw(self) -> Any:
        """The libc handle, for the rare caller that needs a syscall not wrapped here."""
        return self._libc


_default: Syscalls | None = None


def default() -> Syscalls:
    """The process-wide real Syscalls, made on first use (ctypes setup costs ~1 ms)."""
    global _default
    if _default is None:
        _default = Syscalls()
    return _default
