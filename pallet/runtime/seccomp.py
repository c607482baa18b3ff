"""seccomp: the runtime spec's `linux.seccomp` compiled with libseccomp, loaded with seccomp(2).

Where each step happens, and why:
- names (actions, architectures, operators, flags) are checked in the parent by runtime_spec.validate,
  before anything is made, so a bad profile leaves nothing behind;
- the filter is compiled to BPF in the init's stage 1, before any namespace or pivot_root: libseccomp is
  a host library, out of reach once the container's root is in place;
- it is loaded last, right before execve (process.exec_process), so the runtime's own work is not
  filtered. Without noNewPrivileges, seccomp(2) needs CAP_SYS_ADMIN, so then (as runc does) the filter
  goes on before the capabilities are dropped; with noNewPrivileges it goes on after everything else,
  so the fewest syscalls run under it (runc, libcontainer/standard_init_linux.go).
- SCMP_ACT_NOTIFY: the listener fd and the container's state go to the agent at listenerPath, as a
  ContainerProcessState JSON with the fd attached (SCM_RIGHTS), exactly what runc sends. The socket is
  connected before pivot_root (listenerPath is a host path); the message is sent right after the load.

Unknown syscall names are skipped, as runc does: a profile lists syscalls of every kernel and arch.
When one argument carries several conditions, each condition becomes a rule of its own (an OR),
which is how runc treats them; conditions on distinct arguments are ANDed in one rule.
"""

from __future__ import annotations

import errno
import marshal
import os
import struct

from pallet.linux import seccomp as lsc
from pallet.linux import syscalls as s

# the init imports this module at every start: json and socket.py only when a listener is used, typing
# only for annotations (see init.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_ACTIONS = {
    "SCMP_ACT_KILL": lsc.ACT_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": lsc.ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": lsc.ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": lsc.ACT_TRAP,
    "SCMP_ACT_ERRNO": lsc.ACT_ERRNO,
    "SCMP_ACT_TRACE": lsc.ACT_TRACE,
    "SCMP_ACT_ALLOW": lsc.ACT_ALLOW,
    "SCMP_ACT_LOG": lsc.ACT_LOG,
    "SCMP_ACT_NOTIFY": lsc.ACT_NOTIFY,
}
_OPS = {
    "SCMP_CMP_NE": lsc.CMP_NE,
    "SCMP_CMP_LT": lsc.CMP_LT,
    "SCMP_CMP_LE": lsc.CMP_LE,
    "SCMP_CMP_EQ": lsc.CMP_EQ,
    "SCMP_CMP_GE": lsc.CMP_GE,
    "SCMP_CMP_GT": lsc.CMP_GT,
    "SCMP_CMP_MASKED_EQ": lsc.CMP_MASKED_EQ,
}
_FLAGS = {
    # TSYNC is moot: the init is single-threaded when it loads the filter (runc ignores it too)
    "SECCOMP_FILTER_FLAG_TSYNC": 0,
    "SECCOMP_FILTER_FLAG_LOG": s.SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": s.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": s.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}


class SeccompError(Exception):
    pass


# classic BPF, as seccomp(2) runs it: struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}
_LD_ABS_W, _JEQ, _JGT, _JGE, _RET_K = 0x20, 0x15, 0x25, 0x35, 0x06
_OFF_NR, _OFF_ARCH = 0, 4  # offsets in struct seccomp_data
_X32_BIT = 0x40000000
_RET_ENOSYS = lsc.ACT_ERRNO | errno.ENOSYS


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _enosys_stub(lib: lsc.Libseccomp, cfg: dict[str, Any], tokens: list[int]) -> bytes:
    """BPF put before libseccomp's program: a syscall numbered above every syscall the profile names
    fails with ENOSYS, not with the default action, so that a newer libc falls back to an older call
    (fchmodat2 -> fchmodat, clone3 -> clone) rather than failing with EPERM. runc does the same
    (libcontainer/seccomp/patchbpf); only the highest number matters, per architecture.

    Each architecture's block: load the arch, skip the block unless it matches, load the number,
    answer ENOSYS when it is past the highest known one. x32 shares x86_64's audit arch and marks its
    numbers with bit 30, so the x86_64 block checks that range separately.
    """
    names = {n for rule in cfg.get("syscalls") or [] for n in rule["names"]}
    x86_64, x32 = lib.arch_resolve("x86_64"), lib.arch_resolve("x32")
    top: dict[int, int] = {}
    for token in tokens:
        nrs = [lib.syscall_resolve_arch(token, n) for n in names]
        top[token] = max([nr for nr in nrs if nr >= 0], default=-1)
    out = b""
    for token in tokens:
        if token == x32 or top[token] < 0:
            continue  # x32 is checked inside the x86_64 block; an arch with nothing named keeps its default
        if token == x86_64:
            x32_top = top.get(x32, -1)
            x32_top = (x32_top | _X32_BIT) if x32_top >= 0 else 0xFFFFFFFF  # no x32: libseccomp decides
            out += b"".join([
                _insn(_LD_ABS_W, 0, 0, _OFF_ARCH),
                _insn(_JEQ, 0, 5, token),  # not x86_64: past this block
                _insn(_LD_ABS_W, 0, 0, _OFF_NR),
                _insn(_JGE, 1, 0, _X32_BIT),  # an x32 number: its own limit
                _insn(_JGT, 1, 2, top[token]),
                _insn(_JGT, 0, 1, x32_top),
                _insn(_RET_K, 0, 0, _RET_ENOSYS),
            ])  # fmt: skip
        else:
            out += b"".join([
                _insn(_LD_ABS_W, 0, 0, _OFF_ARCH),
                _insn(_JEQ, 0, 3, token),
                _insn(_LD_ABS_W, 0, 0, _OFF_NR),
                _insn(_JGT, 0, 1, top[token]),
                _insn(_RET_K, 0, 0, _RET_ENOSYS),
            ])  # fmt: skip
    return out


class Compiled:
    """A filter ready for seccomp(2), made before fork/pivot and carried to the last step."""

    __slots__ = ("program", "flags", "listener_path", "listener_metadata", "listener_fd")

    def __init__(
        self, program: bytes, flags: int, listener_path: str = "", listener_metadata: str = ""
    ) -> None:
        self.program = program
        self.flags = flags
        self.listener_path = listener_path
        self.listener_metadata = listener_metadata
        self.listener_fd = -1  # connected before pivot_root when the profile uses SCMP_ACT_NOTIFY

    def connect_listener(self) -> None:
        """Connect to the notify agent now, while listenerPath (a host path) is still reachable."""
        if not self.listener_path:
            return
        # imported here, before pivot_root, so that load() finds them in sys.modules afterwards
        import json  # noqa: F401
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.listener_path)
        except OSError as e:
            sock.close()
            raise SeccompError(f"linux.seccomp.listenerPath {self.listener_path}: {e.strerror}") from None
        self.listener_fd = sock.detach()

    def load(self, sysc: Any, state: dict[str, Any] | None, pid: int) -> None:
        """Install the filter on this thread; hand the notify fd to the agent if there is one."""
        try:
            fd = sysc.seccomp_set_filter(self.flags, self.program)
        except OSError as e:
            raise SeccompError(f"linux.seccomp: cannot load the filter: {e.strerror}") from e
        if self.listener_fd < 0:
            return
        import json  # both already loaded by connect_listener, before pivot_root
        import socket

        # runc's ContainerProcessState (runtime-spec config-linux.md, "seccomp listener")
        msg = {
            "ociVersion": (state or {}).get("ociVersion", "1.2.0"),
            "fds": ["seccompFd"],
            "pid": pid,
            "metadata": self.listener_metadata,
            "state": state or {},
        }
        sock = socket.socket(fileno=self.listener_fd)
        try:
            socket.send_fds(sock, [json.dumps(msg).encode()], [fd])
        except OSError as e:
            raise SeccompError(f"linux.seccomp.listenerPath {self.listener_path}: {e.strerror}") from e
        finally:
            sock.close()
            os.close(fd)
            self.listener_fd = -1


def _action(name: str, errno_ret: int | None) -> int:
    act = _ACTIONS[name]
    if act in (lsc.ACT_ERRNO, lsc.ACT_TRACE):
        act |= (errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF
    return act


def arch_name(spec_name: str) -> str:
    """SCMP_ARCH_X86_64 -> x86_64, libseccomp's own spelling."""
    return spec_name.removeprefix("SCMP_ARCH_").lower()


def compile_filter(cfg: dict[str, Any], lib: lsc.Libseccomp | None = None) -> Compiled:
    """BPF for one validated linux.seccomp object."""
    lib = lib or lsc.default()
    default = _action(cfg["defaultAction"], cfg.get("defaultErrnoRet"))
    ctx = lib.init(default)
    try:
        # without this, libseccomp would set no_new_privs on load; we load it ourselves, but say so anyway
        lib.attr_set(ctx, lsc.FLTATR_CTL_NNP, 0)
        for arch in cfg.get("architectures") or []:
            token = lib.arch_resolve(arch_name(arch))
            if not token:
                major, minor, micro = lib.version()
                raise SeccompError(
                    f"linux.seccomp.architectures: {arch} is not supported by libseccomp {major}.{minor}.{micro}"
                )
            lib.arch_add(ctx, token)
        notify = False
        for i, rule in enumerate(cfg.get("syscalls") or []):
            act = _action(rule["action"], rule.get("errnoRet"))
            if act == default:
                continue  # the same as the default: libseccomp refuses it, runc skips it
            notify = notify or act == lsc.ACT_NOTIFY
            conds = [
                (a["index"], _OPS[a["op"]], a.get("value", 0), a.get("valueTwo", 0))
                for a in rule.get("args") or []
            ]
            per_arg = [c[0] for c in conds]
            # several conditions on one argument: each its own rule (OR), as runc does
            groups = [[c] for c in conds] if len(set(per_arg)) < len(per_arg) else [conds]
            for name in rule["names"]:
                nr = lib.syscall_resolve(name)
                if nr == lsc.NR_SCMP_ERROR:
                    continue  # unknown to this libseccomp/arch: skipped, as runc does
                for group in groups:
                    try:
                        lib.rule_add(ctx, act, nr, group)
                    except OSError as e:
                        raise SeccompError(f"linux.seccomp.syscalls[{i}]: {name}: {e.strerror}") from None
        flags = 0
        for f in cfg.get("flags") or []:
            flags |= _FLAGS[f]
        if notify:
            flags |= s.SECCOMP_FILTER_FLAG_NEW_LISTENER
        else:
            # the kernel refuses WAIT_KILLABLE_RECV without a listener; without one it means nothing
            flags &= ~s.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        program = lib.export_bpf(ctx)
        if default not in (lsc.ACT_ALLOW, lsc.ACT_LOG):
            tokens = [lib.arch_native()] + [
                lib.arch_resolve(arch_name(a)) for a in cfg.get("architectures") or []
            ]
            program = _enosys_stub(lib, cfg, list(dict.fromkeys(tokens))) + program
        return Compiled(
            program,
            flags,
            cfg.get("listenerPath") or "" if notify else "",
            cfg.get("listenerMetadata") or "",
        )
    finally:
        lib.release(ctx)


# bump when the compiled form changes (the stub, the rule order), so that old cache entries are not used
_CACHE_FORMAT = 1


def compile_cached(cfg: dict[str, Any], cache_dir: str) -> Compiled:
    """compile_filter, remembered in cache_dir (the runtime's --root) by a hash of the profile, the
    libseccomp version and the native arch: an engine starts every container with the same profile, and
    libseccomp takes 5-15 ms to compile Docker's. The directory is trusted only if it is ours and not
    writable by anyone else; any failure falls back to compiling."""
    import _sha256  # type: ignore[import-not-found,unused-ignore]  # hashlib would load OpenSSL

    lib = lsc.default()
    key = _sha256.sha256(marshal.dumps((cfg, lib.version(), lib.arch_native(), _CACHE_FORMAT))).hexdigest()
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        dfd = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return compile_filter(cfg, lib)
    try:
        st = os.fstat(dfd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return compile_filter(cfg, lib)
        try:
            fd = os.open(key, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            with os.fdopen(fd, "rb") as f:
                program, flags, path, metadata = marshal.load(f)
            return Compiled(program, flags, path, metadata)
        except (OSError, EOFError, ValueError, TypeError):
            pass
        c = compile_filter(cfg, lib)
        tmp = f".{key}.{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            with os.fdopen(fd, "wb") as f:
                marshal.dump((c.program, c.flags, c.listener_path, c.listener_metadata), f)
            os.rename(tmp, key, src_dir_fd=dfd, dst_dir_fd=dfd)  # atomic: a reader sees all or nothing
        except OSError:
            pass
        return c
    finally:
        os.close(dfd)


def _probe(flag: int) -> int:
    # the kernel accepts WAIT_KILLABLE_RECV only together with a listener
    if flag == s.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV:
        return flag | s.SECCOMP_FILTER_FLAG_NEW_LISTENER
    return flag


def features(sysc: Any, lib: lsc.Libseccomp | None = None) -> dict[str, Any]:
    """The `linux.seccomp` part of `pallet-runtime features` (runtime-spec features.md), as runc reports it."""
    from pallet.oci.runtime_spec import SECCOMP_ARCHES

    lib = lib or lsc.default()
    known = sorted(_FLAGS)
    return {
        "enabled": True,
        "actions": sorted(_ACTIONS),
        "operators": sorted(_OPS),
        "archs": [a for a in SECCOMP_ARCHES if lib.arch_resolve(arch_name(a))],
        "knownFlags": known,
        # TSYNC is always honoured (the init is single-threaded); the others as this kernel knows them
        "supportedFlags": [
            f for f in known if not _FLAGS[f] or sysc.seccomp_flag_supported(_probe(_FLAGS[f]))
        ],
    }
