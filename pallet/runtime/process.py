"""The last steps of a container process before execve: identity, limits, privileges, exec.

Runs in the init after the rootfs is in place (or in an `exec` process after setns). Order, with why:
rlimits and oom_score_adj while still privileged; the bounding set dropped while CAP_SETPCAP is
held; KEEPCAPS across the uid switch; capset; ambient; no_new_privs; fds closed and signals reset
last, so nothing of the runtime crosses into the container (CVE-2024-21626).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found,unused-ignore]  # signal.py adds enums: an import the init can skip
import os
import resource

from pallet.linux import syscalls as s
from pallet.runtime import caps

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ProcessError(Exception):
    pass


def env_path(env: list[str]) -> str:
    for e in env:
        if e.startswith("PATH="):
            return e[5:]
    return DEFAULT_PATH


def find_executable(args0: str, env: list[str]) -> str:
    """Resolve args[0] like execvp in the container's view; a clear error if it is not there."""
    if "/" in args0:
        candidates = [args0]
    else:
        candidates = [os.path.join(d or ".", args0) for d in env_path(env).split(":")]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    if "/" in args0:
        if os.path.exists(args0):
            raise ProcessError(f'exec "{args0}": permission denied or not a regular file')
        raise ProcessError(f'exec "{args0}": no such file or directory')
    raise ProcessError(f'exec "{args0}": executable file not found in $PATH')


def set_rlimits(proc: dict[str, Any]) -> None:
    for r in proc.get("rlimits") or []:
        name = r["type"]
        num = getattr(resource, name, None)
        if num is None:
            raise ProcessError(f"rlimit {name}: unknown resource")
        try:
            resource.setrlimit(num, (r["soft"], r["hard"]))
        except (ValueError, OSError) as e:
            raise ProcessError(f"rlimit {name} soft={r['soft']} hard={r['hard']}: {e}") from e


def set_oom_score_adj(proc: dict[str, Any]) -> None:
    if proc.get("oomScoreAdj") is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(proc["oomScoreAdj"]))


def apply_apparmor(proc: dict[str, Any]) -> None:
    profile = proc.get("apparmorProfile")
    if not profile:
        return
    if not os.path.exists("/sys/kernel/security/apparmor"):
        raise ProcessError(f"apparmor profile {profile!r} requested but AppArmor is not enabled on this host")
    for attr in ("/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"):
        if os.path.exists(attr):
            with open(attr, "w") as f:
                f.write(f"exec {profile}")
            return


def switch_user(sys: Any, proc: dict[str, Any]) -> None:
    user = proc.get("user") or {}
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    extra = user.get("additionalGids") or []
    try:
        # setgroups is denied in a user ns whose setgroups file says deny (rootless); then leave them be
        os.setgroups(extra)
    except PermissionError:
        if extra:
            raise
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if user.get("umask") is not None:
        os.umask(user["umask"])


def apply_capabilities(sys: Any, proc: dict[str, Any], uid_change: bool) -> None:
    sets = caps.parse(proc.get("capabilities"))
    for cap in range(caps.last_cap() + 1):
        if not sets["bounding"] & (1 << cap):
            try:
                sys.prctl(s.PR_CAPBSET_DROP, cap)
            except OSError:
                pass  # a capability this kernel knows but that is already gone
    if uid_change:
        sys.prctl(s.PR_SET_KEEPCAPS, 1)
    return None


def finish_capabilities(sys: Any, proc: dict[str, Any]) -> None:
    sets = caps.parse(proc.get("capabilities"))
    sys.capset(sets["effective"], sets["permitted"], sets["inheritable"])
    sys.prctl(s.PR_CAP_AMBIENT, s.PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(caps.last_cap() + 1):
        if sets["ambient"] & (1 << cap):
            sys.prctl(s.PR_CAP_AMBIENT, s.PR_CAP_AMBIENT_RAISE, cap)


def close_fds(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep and fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass


def reset_signals() -> None:
    # Python ignores SIGPIPE and SIGXFSZ; ignored dispositions survive execve, so restore them
    for sig in range(1, _signal.NSIG):
        if sig in (_signal.SIGKILL, _signal.SIGSTOP):
            continue
        try:
            _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


def chdir_checked(cwd: str) -> None:
    """chdir and prove the result is inside our root: a leaked fd as cwd would not be (CVE-2024-21626)."""
    try:
        os.chdir(cwd)
    except OSError as e:
        raise ProcessError(f"cwd {cwd}: {e.strerror}") from e
    try:
        here = os.getcwd()
    except OSError:
        here = "(unreachable)"
    if not here.startswith("/"):
        raise ProcessError(f"cwd {cwd}: resolves outside the container's root")


def exec_process(
    sys: Any,
    proc: dict[str, Any],
    path: str,
    preserve: set[int],
    load_seccomp: Callable[[], None] | None = None,
) -> None:
    """Become the container's process. Never returns.

    seccomp goes on last, right before execve, so the runtime's own steps are not filtered; but without
    no_new_privs, seccomp(2) needs CAP_SYS_ADMIN, so then it goes on before the capabilities are dropped
    (the order runc uses; the profile must then allow capset, setresuid, prctl, close and execve).
    """
    nnp = bool(proc.get("noNewPrivileges"))
    if load_seccomp is not None and not nnp:
        load_seccomp()
    user = proc.get("user") or {}
    uid_change = user.get("uid", 0) != 0 or user.get("gid", 0) != 0
    apply_capabilities(sys, proc, uid_change)
    switch_user(sys, proc)
    finish_capabilities(sys, proc)
    if nnp:
        sys.prctl(s.PR_SET_NO_NEW_PRIVS, 1)
    close_fds(preserve)
    reset_signals()
    if load_seccomp is not None and nnp:
        load_seccomp()
    os.execve(path, proc["args"], _env(proc))


def _env(proc: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for e in proc.get("env") or []:
        k, _, v = e.partition("=")
        env[k] = v
    return env
