"""The container's init, on the child side of the sync ladder drawn in sync.py.

Every import happens before pivot_root: after it the host's Python library is out of reach.

This module runs in a fresh interpreter started from a sealed memfd copy of Python (see
launcher.py: /proc/self/exe inside the container then points at a file nobody can write,
CVE-2019-5736). It imports only what it needs; every parse happened in the parent.

Stage 1 joins or creates the namespaces and forks; stage 2, PID 1 of the new pid namespace,
builds the rootfs, reports ready, waits on exec.fifo for `start`, and execs the process.
For `exec`, stage 1 joins the running container's namespaces and stage 2 execs at once.
"""

from __future__ import annotations

import _socket
import errno
import fcntl
import os
import struct
import sys
import termios

from pallet.linux import net
from pallet.linux import syscalls as s
from pallet.runtime import process, sync
from pallet.runtime.rootfs import RootfsBuilder, idmapped_trees

# typing and socket.py cost the init milliseconds at every start: annotations only
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pallet.runtime.seccomp import Compiled

NS_FLAGS = {
    "user": s.CLONE_NEWUSER, "mount": s.CLONE_NEWNS, "pid": s.CLONE_NEWPID, "network": s.CLONE_NEWNET,
    "ipc": s.CLONE_NEWIPC, "uts": s.CLONE_NEWUTS, "cgroup": s.CLONE_NEWCGROUP, "time": s.CLONE_NEWTIME,
}  # fmt: skip
# joining order: user first (it grants the rights for the rest), mount last (it changes path lookups)
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")
PROC_NS_NAME = {"user": "user", "ipc": "ipc", "uts": "uts", "network": "net", "pid": "pid", "cgroup": "cgroup",
                "time": "time", "mount": "mnt"}  # fmt: skip


class InitError(Exception):
    pass


def main(fd: int | None = None, hello: bool = False) -> None:
    """The init, on the sync socket ``fd`` (argv[1] when spawned: launcher.spawn_init). ``hello``:
    forked by the process that will be the container's monitor (fork_from), so the runtime, which did
    not spawn us, learns our pid first."""
    sock = _socket.socket(fileno=int(sys.argv[1]) if fd is None else fd)
    os.set_inheritable(sock.fileno(), False)
    try:
        if hello:
            sync.send(sock, {"type": "hello", "pid": os.getpid()})
        _warm_up()
        boot, _ = sync.recv(sock)
        if boot is None:
            os._exit(1)
        sysc = s.default()
        stage1(sysc, sock, boot, _compile_seccomp(boot))
    except BaseException as e:  # everything becomes one message for the parent
        _report(sock, e)
        os._exit(1)
    os._exit(0)


def _warm_up() -> None:
    """What most containers need once the boot message comes, loaded while it has not: the seccomp
    code and libseccomp (~1.5 ms here; Docker's default profile is nearly everywhere). Best effort:
    a host without libseccomp fails later, and only for a config with linux.seccomp."""
    try:
        import pallet.runtime.seccomp  # noqa: F401
        from pallet.linux import seccomp as lsc

        lsc.default()
    except (ImportError, OSError):
        pass


def fork_from(argv: list[str]) -> None:
    """In a container's monitor started from the sealed interpreter (engine/monitor/launch.py), first
    thing: fork the container's init, which takes the last four arguments (its sync socket, the
    container's stdin, stdout and stderr; they leave ``argv``). One interpreter start for both: the
    init is a fork of a process whose /proc/self/exe is the sealed view (CVE-2019-5736), and the
    monitor, its parent and a subreaper, is where the init's children are re-parented."""
    sock, *stdio = (int(x) for x in argv[-4:])
    del argv[-4:]
    fork_init(sock, stdio)
    for fd in (sock, *stdio):
        os.close(fd)


def fork_init(sock: int, stdio: list[int]) -> int:
    """Fork the init on the sync socket ``sock`` with ``stdio`` as its 0, 1, 2; its pid. Only from a
    process running from the sealed view of the interpreter (sealed_here): the init's exe is ours."""
    pid = os.fork()
    if pid == 0:
        try:  # after fork, nothing clever: its stdio, its socket as fd 3, nothing else of ours
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
            os.dup2(sock, 3)
            os.closerange(4, os.sysconf("SC_OPEN_MAX"))
            main(3, hello=True)
        finally:
            os._exit(1)
    return pid


def sealed_here() -> bool:
    """Whether this process runs from a sealed view of the interpreter (launcher.sealed_interpreter):
    a file on a read-only mount, or a sealed memfd."""
    try:
        return bool(os.statvfs("/proc/self/exe").f_flag & os.ST_RDONLY) or os.readlink(
            "/proc/self/exe"
        ).startswith("/memfd:pallet-init")
    except OSError:
        return False


def _report(sock: _socket.socket, e: BaseException) -> None:
    if isinstance(e, OSError) and e.strerror:
        where = f" {e.filename}" if e.filename and str(e.filename) not in e.strerror else ""
        msg = f"{e.strerror}{where}"
    else:
        msg = str(e) or type(e).__name__
    try:
        sync.send(sock, {"type": "error", "message": msg, "errno": getattr(e, "errno", 0) or 0})
    except OSError:
        # after `ready` nobody listens on the socket any more: the container's stderr is all we have
        try:
            os.write(2, f"pallet-runtime: container init: {msg}\n".encode())
        except OSError:
            pass


def _join(sysc: Any, ns_type: str, path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sysc.setns(fd, NS_FLAGS[ns_type])
    except OSError as e:
        raise InitError(f"join {ns_type} namespace {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def _compile_seccomp(boot: dict[str, Any]) -> Compiled | None:
    """The filter, compiled while the host's libseccomp is in reach (before namespaces and pivot_root)."""
    if boot["mode"] == "exec":
        cfg = boot.get("seccomp")
    else:
        cfg = (boot["spec"].get("linux") or {}).get("seccomp")
    if not cfg:
        return None
    from pallet.runtime import seccomp  # only with a profile; like every import, before pivot_root

    if boot["mode"] == "exec":
        return seccomp.compile_filter(cfg)
    # the runtime's --root holds the container's state dir, which holds exec.fifo
    return seccomp.compile_cached(
        cfg, os.path.join(os.path.dirname(os.path.dirname(boot["fifo"])), ".seccomp")
    )


def _join_cgroups(tasks_files: list[str]) -> None:
    """Into the container's v1 cgroups, by ourselves: ``0`` written to ``tasks`` by a single-threaded
    process moves it without the lock that cgroup.procs takes (container._place says why). First
    thing: before a user namespace takes the host's rights away, and before the mount namespace
    changes what the paths name."""
    for path in tasks_files:
        try:
            _move_self(path)
        except OSError as e:
            raise InitError(
                f"cgroup: cannot join {os.path.dirname(path)}: {(e.strerror or str(e)).lower()}"
            ) from e


def _fork_into(sysc: Any, cgroup_v2: int) -> int:
    """os.fork(), the child born in the cgroup v2 directory ``cgroup_v2`` (an fd; -1: none). Where
    clone3 cannot do it (before Linux 5.7, a seccomp filter), the child moves itself the slow way."""
    if cgroup_v2 < 0:
        return os.fork()
    try:
        return int(sysc.fork_into_cgroup(cgroup_v2))
    except OSError:
        pass
    pid = os.fork()
    if pid == 0:
        _move_self("cgroup.procs", cgroup_v2)
    return pid


def _move_self(path: str, dir_fd: int | None = None) -> None:
    """``0`` (this process) written to a cgroup's ``tasks`` or ``cgroup.procs`` file, in one write."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def _enter_cgroup_ns(sysc: Any, ns: int | str | None) -> None:
    """The cgroup namespace, made or joined by stage 2 once it is in the container's cgroups: a new
    one's root is the cgroup its maker is in, and clone3 into a v2 cgroup (_fork_into) is refused by
    a host mounted with nsdelegate unless both cgroups are in view of the caller's namespace."""
    if ns is None:
        return
    try:
        if ns == "new":
            sysc.unshare(s.CLONE_NEWCGROUP)
        else:
            sysc.setns(int(ns), s.CLONE_NEWCGROUP)
            os.close(int(ns))
    except OSError as e:
        raise InitError(f"{'unshare' if ns == 'new' else 'join'} cgroup namespace: {e.strerror}") from e


def stage1(sysc: Any, sock: _socket.socket, boot: dict[str, Any], filt: Compiled | None) -> None:
    mode = boot["mode"]
    _join_cgroups(boot.get("cgroup_join") or [])
    v2 = boot.get("cgroup_v2")
    cgroup_v2 = os.open(v2, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if v2 else -1
    if filt is not None and mode == "exec":
        filt.connect_listener()  # before joining the mount namespace: listenerPath is a host path
    if mode == "exec":
        # the target's namespaces, each compared with ours so an unshared one is not re-entered needlessly
        target = boot["target_pid"]
        for t in JOIN_ORDER:
            if t not in boot["join"]:
                continue
            name = PROC_NS_NAME[t]
            path = f"/proc/{target}/ns/{name}"
            if os.path.exists(path) and os.stat(path).st_ino != os.stat(f"/proc/self/ns/{name}").st_ino:
                if t == "cgroup":
                    boot["_cgroup_ns"] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # stage 2's to join
                else:
                    _join(sysc, t, path)
    else:
        os.chdir(boot["bundle"])
        ns = boot["namespaces"]  # type -> path ("" means new)
        # idmapped mounts are made here, with the host's privileges, before any user namespace: inside
        # one, mount_setattr(MOUNT_ATTR_IDMAP) on a host filesystem is refused (runc makes them outside too)
        boot["idmapped_trees"] = idmapped_trees(sysc, boot["spec"], boot["bundle"])
        if "user" in ns:
            if ns["user"]:
                _join(sysc, "user", ns["user"])
            else:
                sysc.unshare(s.CLONE_NEWUSER)
                sync.send(sock, {"type": "userns"})
                reply, _ = sync.recv(sock)
                if not reply or reply.get("type") != "userns-mapped":
                    raise InitError("parent did not map the user namespace")
            # become root of the namespace so the rest is allowed (and files are made as mapped root)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        for t in JOIN_ORDER:
            if t not in ("user", "cgroup") and ns.get(t):
                _join(sysc, t, ns[t])
        if "cgroup" in ns:
            boot["_cgroup_ns"] = os.open(ns["cgroup"], os.O_RDONLY | os.O_CLOEXEC) if ns["cgroup"] else "new"
        flags = 0
        for t, path in ns.items():
            if not path and t not in ("user", "cgroup"):
                flags |= NS_FLAGS[t]
        if flags:
            try:
                sysc.unshare(flags)
            except OSError as e:
                raise InitError(
                    f"unshare namespaces {', '.join(t for t, p in ns.items() if not p)}: {e.strerror}"
                ) from e
        offsets = boot.get("time_offsets")
        if offsets and "time" in ns and not ns["time"]:
            with open("/proc/self/timens_offsets", "w") as f:
                for clock, off in offsets.items():
                    f.write(f"{clock} {off.get('secs', 0)} {off.get('nanosecs', 0)}\n")
    # a notify agent wants stage 2's pid as the runtime sees it, which stage 2 (in its pid ns) cannot know
    pid_pipe = os.pipe() if filt is not None else None
    pid = _fork_into(sysc, cgroup_v2)
    if pid:
        if pid_pipe is not None:
            os.close(pid_pipe[0])
            os.write(pid_pipe[1], str(pid).encode())
            os.close(pid_pipe[1])
        sync.send(sock, {"type": "pid", "pid": pid})
        return
    try:
        host_pid = 0
        if pid_pipe is not None:
            os.close(pid_pipe[1])
            host_pid = int(os.read(pid_pipe[0], 32) or b"0")
            os.close(pid_pipe[0])
        if mode == "exec":
            stage2_exec(sysc, sock, boot, filt, host_pid)
        else:
            stage2_create(sysc, sock, boot, filt, host_pid)
    except BaseException as e:
        _report(sock, e)
        os._exit(1)
    os._exit(1)


def _wait_reply(sock: _socket.socket, want: str) -> dict[str, Any]:
    msg, _ = sync.recv(sock)
    if msg is None or msg.get("type") != want:
        raise InitError(f"runtime went away while the init waited for {want!r}")
    return msg


def _setup_console(sysc: Any, sock: _socket.socket, proc: dict[str, Any]) -> None:
    """A pty from the container's own devpts; the master goes to the runtime, the slave becomes stdio."""
    master, slave = os.openpty()
    size = proc.get("consoleSize")
    if size:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size["height"], size["width"], 0, 0))
    if os.path.exists("/dev/console") or os.path.isdir("/dev"):
        try:
            if not os.path.exists("/dev/console"):
                os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            sysc.mount(os.ttyname(slave), "/dev/console", None, s.MS_BIND)
        except OSError:
            pass  # no writable /dev: the console bind is a courtesy, the stdio is what matters
    sync.send(sock, {"type": "console"}, [master])
    os.close(master)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _seccomp_loader(sysc: Any, filt: Compiled | None, state: dict[str, Any] | None, pid: int) -> Any:
    if filt is None:
        return None
    return lambda: filt.load(sysc, state, pid)


def stage2_create(
    sysc: Any, sock: _socket.socket, boot: dict[str, Any], filt: Compiled | None, host_pid: int
) -> None:
    spec = boot["spec"]
    spec["_bundle"] = boot["bundle"]
    proc = spec["process"]
    ns = boot["namespaces"]
    os.setsid()
    _enter_cgroup_ns(sysc, boot.get("_cgroup_ns"))
    if boot.get("new_keyring"):
        _join_keyring(sysc, boot["container_id"])
    if ns.get("network") == "":
        net.bring_up("lo")  # a new network namespace starts with loopback down; runc brings it up too
    fifo_fd = os.open(boot["fifo"], os.O_PATH | os.O_CLOEXEC)
    builder = RootfsBuilder(
        sysc, spec, boot["rootfs"], boot.get("cgroup_paths") or {}, boot.get("idmapped_trees") or {}
    )
    if "mount" in ns:
        builder.prepare()
    if boot.get("sync_hooks", True):
        sync.send(sock, {"type": "hooks"})
        msg = _wait_reply(sock, "hooks-done")
    else:  # no hook to run, no seccomp agent to tell: no state needed (Runtime.create)
        msg = {"state": None, "state_json": ""}
    if boot.get("create_container_hooks"):
        from pallet.runtime import hooks  # before pivot_root, so the host library is still in reach

        hooks.run_all(boot["create_container_hooks"], msg["state"], "createContainer")
    if filt is not None:
        filt.connect_listener()  # listenerPath is a host path: reach it before pivot_root
    if "mount" in ns:
        builder.pivot(boot.get("no_pivot", False))
        builder.finish()
    else:
        builder.write_sysctls()
    if spec.get("hostname"):
        if "uts" not in ns:
            raise InitError("cannot set hostname without a private uts namespace")
        sysc.sethostname(spec["hostname"])
    if spec.get("domainname"):
        if "uts" not in ns:
            raise InitError("cannot set domainname without a private uts namespace")
        sysc.setdomainname(spec["domainname"])
    pers = (spec.get("linux") or {}).get("personality")
    if pers:
        sysc.personality(0x0008 if pers["domain"] == "LINUX32" else 0)
    process.set_rlimits(proc)
    process.set_oom_score_adj(proc)
    process.apply_apparmor(proc)
    if proc.get("terminal"):
        _setup_console(sysc, sock, proc)
    path = process.find_executable(proc["args"][0], proc.get("env") or [])
    preserve = set(range(3, 3 + boot.get("preserve_fds", 0)))
    # close what must not reach the container before chdir: a leaked dir fd is a way out (CVE-2024-21626)
    listener = {filt.listener_fd} if filt is not None and filt.listener_fd >= 0 else set()
    process.close_fds(preserve | listener | {sock.fileno(), fifo_fd})
    process.chdir_checked(proc.get("cwd") or "/")
    sysc.prctl(s.PR_SET_DUMPABLE, 0)
    sync.send(sock, {"type": "ready"})
    sock.close()
    # blocks until `start` opens the fifo for reading (the create/start split)
    fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    os.close(fifo_fd)
    os.write(fd, b"0")
    # the fifo stays open, close-on-exec, until execve: `start` reads it to EOF, so it returns (and runs
    # poststart hooks) only once the program runs, after the startContainer hooks
    _run_start_container_hooks(boot.get("start_container_hooks") or [], msg["state_json"])
    state = dict(msg["state"], status="created") if msg["state"] else None
    keep = preserve | listener | {fd}
    process.exec_process(sysc, proc, path, keep, _seccomp_loader(sysc, filt, state, host_pid))


def _join_keyring(sysc: Any, container_id: str) -> None:
    """A session keyring of the container's own, so its keys are not the host session's (runc names it
    _ses.ID). Kernels without keyrings, or that refuse them in a user namespace, go on without."""
    try:
        sysc.join_session_keyring(f"_ses.{container_id}"[:255])
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.EACCES, errno.EPERM, errno.EDQUOT):
            raise InitError(f"join session keyring: {e.strerror}") from e


def _run_start_container_hooks(hooks: list[dict[str, Any]], state_json: str) -> None:
    """startContainer hooks: run by the init, in the container's namespaces, after `start` and before
    the program (runtime-spec). subprocess is out of reach after pivot_root, so fork and exec by hand."""
    for i, h in enumerate(hooks):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(r, 0)
                env = dict(e.partition("=")[::2] for e in h.get("env") or [])
                os.execve(h["path"], h.get("args") or [h["path"]], env)
            finally:
                os._exit(127)
        os.close(r)
        try:
            os.write(w, state_json.encode())
        except BrokenPipeError:
            pass
        os.close(w)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            code = os.waitstatus_to_exitcode(status)
            raise InitError(f"startContainer hook #{i} {h['path']}: exited with status {code}")


def stage2_exec(
    sysc: Any, sock: _socket.socket, boot: dict[str, Any], filt: Compiled | None, host_pid: int
) -> None:
    proc = boot["process"]
    os.setsid()
    _enter_cgroup_ns(sysc, boot.get("_cgroup_ns"))
    if "mount" in boot["join"]:
        os.chdir("/")
    process.set_rlimits(proc)
    process.apply_apparmor(proc)
    if proc.get("terminal"):
        _setup_console(sysc, sock, proc)
    path = process.find_executable(proc["args"][0], proc.get("env") or [])
    preserve = set(range(3, 3 + boot.get("preserve_fds", 0)))
    listener = {filt.listener_fd} if filt is not None and filt.listener_fd >= 0 else set()
    process.close_fds(preserve | listener | {sock.fileno()})
    process.chdir_checked(proc.get("cwd") or "/")
    sysc.prctl(s.PR_SET_DUMPABLE, 0)
    # no "ready" here: the socket is close-on-exec, so the runtime's EOF means execve succeeded
    loader = _seccomp_loader(sysc, filt, boot.get("state"), host_pid)
    process.exec_process(sysc, proc, path, preserve | listener | {sock.fileno()}, loader)


if __name__ == "__main__":
    main()
