"""bpf(2) through ctypes: just what cgroup v2 device control needs.

Load a BPF_PROG_TYPE_CGROUP_DEVICE program, attach it to a cgroup directory, list what is attached
there, and detach. ``union bpf_attr`` is built per command as a zero-filled buffer with fields at the
offsets of linux/bpf.h; the kernel requires every byte past the command's fields to be zero.
"""

from __future__ import annotations

import ctypes
import os
import struct

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16

BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6  # enum bpf_attach_type
BPF_F_ALLOW_OVERRIDE = 1
BPF_F_ALLOW_MULTI = 2
BPF_F_REPLACE = 4

_NR_BPF = {"x86_64": 321, "aarch64": 280}
_ATTR_SIZE = 128  # comfortably covers the fields used below; the rest stays zero


class BpfError(OSError):
    """A bpf(2) call failed; ``log`` holds the verifier's output for a refused program."""

    def __init__(self, err: int, msg: str, log: str = "") -> None:
        super().__init__(err, msg)
        self.log = log


_libc: ctypes.CDLL | None = None


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str, log: str | None = None) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    nr = _NR_BPF.get(os.uname().machine)
    if nr is None:
        raise BpfError(38, f"bpf: unsupported machine {os.uname().machine}")  # ENOSYS
    ret = int(_libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr))))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"{what}: {os.strerror(err)}", log or "")
    return ret


def _addr(buf: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buf)


def prog_load_cgroup_device(insns: bytes, license: str = "Apache") -> int:
    """Load a device program; returns its fd (close it when it is attached or no longer wanted)."""
    if len(insns) % 8:
        raise ValueError("bpf: instructions must be 8 bytes each")
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(1 << 16)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    # prog_type u32 @0, insn_cnt u32 @4, insns u64 @8, license u64 @16,
    # log_level u32 @24, log_size u32 @28, log_buf u64 @32, ..., prog_name char[16] @48
    struct.pack_into(
        "<IIQQIIQ",
        attr,
        0,
        BPF_PROG_TYPE_CGROUP_DEVICE,
        len(insns) // 8,
        _addr(code),
        _addr(lic),
        1,
        len(log),
        _addr(log),
    )
    struct.pack_into("16s", attr, 48, b"pallet_devices")
    try:
        return _bpf(BPF_PROG_LOAD, attr, "bpf prog load")
    except BpfError as e:
        e.log = log.value.decode(errors="replace")
        raise


def prog_attach(cgroup_fd: int, prog_fd: int, flags: int = BPF_F_ALLOW_MULTI, replace_fd: int = 0) -> None:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    # target_fd u32 @0, attach_bpf_fd u32 @4, attach_type u32 @8, attach_flags u32 @12, replace_bpf_fd u32 @16
    struct.pack_into("<IIIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, flags, replace_fd)
    _bpf(BPF_PROG_ATTACH, attr, "bpf prog attach")


def prog_detach(cgroup_fd: int, prog_fd: int) -> None:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<III", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE)
    _bpf(BPF_PROG_DETACH, attr, "bpf prog detach")


def prog_query(cgroup_fd: int) -> list[int]:
    """Ids of the device programs attached directly to the cgroup."""
    ids = (ctypes.c_uint32 * 64)()
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    # target_fd u32 @0, attach_type u32 @4, query_flags u32 @8, attach_flags u32 @12, prog_ids u64 @16, prog_cnt u32 @24
    struct.pack_into("<IIIIQI", attr, 0, cgroup_fd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), len(ids))
    _bpf(BPF_PROG_QUERY, attr, "bpf prog query")
    (count,) = struct.unpack_from("<I", attr, 24)
    return [int(ids[i]) for i in range(min(count, len(ids)))]


def prog_get_fd_by_id(prog_id: int) -> int:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<I", attr, 0, prog_id)
    return _bpf(BPF_PROG_GET_FD_BY_ID, attr, "bpf prog get fd by id")
