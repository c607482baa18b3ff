"""libseccomp (Debian's libseccomp2, the library runc and crun use) through ctypes.

We use it as a compiler only: a filter is built in a libseccomp context and exported as classic BPF;
loading it is seccomp(2) in syscalls.py, with the flags the runtime spec asks for (libseccomp 2.5 cannot
set WAIT_KILLABLE_RECV itself, runc loads its exported program the same way). libseccomp functions
return a negative errno instead of setting errno; _check turns that into OSError.
"""

from __future__ import annotations

import ctypes
import os

# actions (seccomp.h); ERRNO and TRACE carry a 16-bit value in their low bits
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_NOTIFY = 0x7FC00000
ACT_ALLOW = 0x7FFF0000

# enum scmp_compare
CMP_NE, CMP_LT, CMP_LE, CMP_EQ, CMP_GE, CMP_GT, CMP_MASKED_EQ = range(1, 8)

# enum scmp_filter_attr
FLTATR_ACT_BADARCH = 2
FLTATR_CTL_NNP = 3

NR_SCMP_ERROR = -1


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise OSError(-ret, f"libseccomp {what}: {os.strerror(-ret)}")
    return ret


class Libseccomp:
    """One loaded libseccomp; each method wraps one C function."""

    def __init__(self, name: str = "libseccomp.so.2") -> None:
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise OSError(f"cannot load {name} (Debian: apt-get install libseccomp2): {e}") from None
        vp, u32, ci = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
        for fn, args, res in [
            ("seccomp_init", [u32], vp),
            ("seccomp_release", [vp], None),
            ("seccomp_arch_add", [vp, u32], ci),
            ("seccomp_arch_native", [], u32),
            ("seccomp_arch_resolve_name", [ctypes.c_char_p], u32),
            ("seccomp_syscall_resolve_name", [ctypes.c_char_p], ci),
            ("seccomp_syscall_resolve_name_arch", [u32, ctypes.c_char_p], ci),
            ("seccomp_rule_add_array", [vp, u32, ci, ctypes.c_uint, ctypes.POINTER(_ArgCmp)], ci),
            ("seccomp_attr_set", [vp, ci, u32], ci),
            ("seccomp_export_bpf", [vp, ci], ci),
            ("seccomp_version", [], ctypes.POINTER(_Version)),
        ]:
            f = getattr(lib, fn)
            f.argtypes = args
            f.restype = res
        self._lib = lib

    def version(self) -> tuple[int, int, int]:
        v = self._lib.seccomp_version().contents
        return int(v.major), int(v.minor), int(v.micro)

    def init(self, default_action: int) -> int:
        ctx = self._lib.seccomp_init(default_action)
        if not ctx:
            raise OSError(22, f"libseccomp init: invalid default action {default_action:#x}")
        return int(ctx)

    def release(self, ctx: int) -> None:
        self._lib.seccomp_release(ctx)

    def arch_native(self) -> int:
        return int(self._lib.seccomp_arch_native())

    def arch_resolve(self, name: str) -> int:
        """The arch token for a libseccomp name ("x86_64", "aarch64"); 0 when unknown."""
        return int(self._lib.seccomp_arch_resolve_name(name.encode()))

    def arch_add(self, ctx: int, token: int) -> None:
        ret = self._lib.seccomp_arch_add(ctx, token)
        if ret != -17:  # EEXIST: the native arch is in every new context already
            _check(ret, "arch_add")

    def syscall_resolve(self, name: str) -> int:
        """The native syscall number of name, or NR_SCMP_ERROR when this libseccomp does not know it."""
        return int(self._lib.seccomp_syscall_resolve_name(name.encode()))

    def syscall_resolve_arch(self, token: int, name: str) -> int:
        """name's number on one architecture; negative when it has none there (or is unknown)."""
        return int(self._lib.seccomp_syscall_resolve_name_arch(token, name.encode()))

    def rule_add(self, ctx: int, action: int, nr: int, conds: list[tuple[int, int, int, int]]) -> None:
        """conds: (arg index, op, datum_a, datum_b), all ANDed in one rule."""
        arr = (_ArgCmp * max(len(conds), 1))()
        for i, (arg, op, a, b) in enumerate(conds):
            arr[i] = _ArgCmp(arg, op, a & 0xFFFFFFFFFFFFFFFF, b & 0xFFFFFFFFFFFFFFFF)
        _check(self._lib.seccomp_rule_add_array(ctx, action, nr, len(conds), arr), "rule_add")

    def attr_set(self, ctx: int, attr: int, value: int) -> None:
        _check(self._lib.seccomp_attr_set(ctx, attr, value), "attr_set")

    def export_bpf(self, ctx: int) -> bytes:
        """The filter as classic BPF: an array of struct sock_filter (8 bytes each)."""
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            _check(self._lib.seccomp_export_bpf(ctx, fd), "export_bpf")
            size = os.fstat(fd).st_size
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)


_lib: Libseccomp | None = None


def default() -> Libseccomp:
    """The process-wide libseccomp, loaded on first use (only configs with linux.seccomp pay for it)."""
    global _lib
    if _lib is None:
        _lib = Libseccomp()
    return _lib
