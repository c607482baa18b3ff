"""A new monitor forked from a live one, so that the monitors of all the containers share one
interpreter's pages copy-on-write (conmon is ~0.4 MiB a container; a fresh ``python -S`` ~2.9 MiB of
private memory, most of it the interpreter's own data and the modules every monitor loads alike).

The engine asks (``request``) the monitor of any running container under the same runroot over its
attach socket: ``F<config path>\\0<stderr path>\\0<token>`` with the new monitor's sync pipe as
SCM_RIGHTS. The token names this code and interpreter (size and mtime of each module of this package,
the executable): a monitor started before an upgrade refuses (``E``) and the engine execs a fresh one, as
it also does when no monitor runs. Otherwise the asked monitor forks (``fork``), answers ``F`` and
goes on with its own container (the answer comes first, see ``request``); what it forked is on its
own from then on:

- fork, setsid, fork: a session of its own, no terminal; the asker's subreaper flag is not inherited
  (prctl(2): cleared on fork), so it sets its own, and its container's init is re-parented to it;
- it inherits every fd of its parent: it keeps stdio (null, null, its own stderr file) and the sync
  pipe (as fd 3) and closes all the others (its parent's container's pipes, sockets, epoll);
- the parent's objects stay referenced forever (``_KEEP``): freeing one would close an fd number that
  this process may have reused; ``gc.freeze()`` before the fork keeps the collector off them (and
  their pages shared);
- its command line is the parent's (the same argv memory): the config path in it is rewritten in
  place to its own (same length: the same root), because the engine knows a monitor by the container
  ID in its command line (``_alive``), as the tests' leak checks do;
- its cwd becomes ``/`` (the parent's may be a directory since removed).

If the parent dies, its siblings and their containers are unaffected: no state is shared after the
fork. A sibling is a child of its parent's subreaper (the parent itself), which reaps it when it ends.

Asked early (``request_early``, by an engine that runs pallet-runtime in-process): the request also
carries a go pipe and inproc.Early's settings, so the engine can ask before it writes the bundle. The
new monitor forks its create child at once — which imports the runtime and spawns the init while the
engine works (the monitor itself stays lean) — and reads its config only after the engine's go; at
EOF instead it exits, and its create child kills the init.
"""

from __future__ import annotations

import _socket
import gc
import os
import sys

_KEEP: list[object] = []
_HERE = os.path.dirname(os.path.abspath(__file__))


def token() -> bytes:
    """This monitor code (every module of the package: a sibling's children import some from disk)
    and interpreter, as one line."""
    parts = [os.path.realpath(sys.executable).encode()]
    for name in sorted(os.listdir(_HERE)):
        if name.endswith(".py"):
            st = os.stat(os.path.join(_HERE, name))
            parts.append(b"%s:%d:%d" % (name.encode(), st.st_size, st.st_mtime_ns))
    return b" ".join(parts)


def running(runroot: str) -> bool:
    """Whether a monitor may run under ``runroot``: one whose attach socket exists, which ``request``
    would ask (a socket left by a killed monitor only makes the engine ask in vain, then exec one)."""
    base = os.path.join(runroot, "c")
    try:
        names = os.listdir(base)
    except OSError:
        return False
    return any(os.path.exists(os.path.join(base, name, "attach")) for name in names)


class Launch:
    """A sibling asked before the engine writes the bundle (monitor/launch.py's twin): the new monitor
    forks its create child at once (an inproc.Early that imports the runtime and spawns the init
    while the engine works), then waits for ``go()`` (returns the sync pipe) or EOF (``abort()``)."""

    def __init__(self, sync_r: int, go_w: int) -> None:
        self.sync_r, self.go_w = sync_r, go_w

    def go(self) -> int:
        os.write(self.go_w, b"g")
        os.close(self.go_w)
        return self.sync_r

    def abort(self) -> None:
        os.close(self.go_w)
        os.close(self.sync_r)


def request_early(runroot: str, cfg_path: str, errors: str, early_cfg: dict[str, object]) -> Launch | None:
    """``request`` before the bundle exists, with Early's settings (``early_cfg``); None if no monitor
    would fork one."""
    import marshal

    sync_r, sync_w = os.pipe()
    go_r, go_w = os.pipe()
    try:
        asked = request(runroot, cfg_path, errors, sync_w, go_r, marshal.dumps(early_cfg))
    finally:
        os.close(sync_w)
        os.close(go_r)
    if not asked:
        os.close(sync_r)
        os.close(go_w)
        return None
    return Launch(sync_r, go_w)


def request(
    runroot: str, cfg_path: str, errors: str, sync_w: int, go_r: int = -1, early_cfg: bytes = b""
) -> bool:
    """Ask a running monitor under ``runroot`` to fork the monitor for ``cfg_path``; False if none
    would (then exec one). The asked monitor answers ``F`` before it forks: no answer (it was exiting,
    or died) means no sibling, and one that dies between its answer and the fork leaves the sync pipe
    without a writer (EOF: the start fails, rather than two monitors for one container). With
    ``go_r`` (request_early) the new monitor waits for a byte on it before it reads its config."""
    base = os.path.join(runroot, "c")
    try:
        names = os.listdir(base)
    except OSError:
        return False
    parts = [os.fsencode(cfg_path), os.fsencode(errors), token()]
    body = b"F" + b"\0".join(parts + [early_cfg] if go_r >= 0 else parts)
    fds = [sync_w] if go_r < 0 else [sync_w, go_r]
    tried = 0
    for name in names:
        if tried == 3:
            break
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        try:
            s.settimeout(1.0)  # a full backlog: try another
            s.connect(os.path.join(base, name, "attach"))
        except OSError:
            s.close()
            continue
        tried += 1
        try:
            rights = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
            s.sendmsg([body], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        except OSError:
            s.close()
            continue  # not sent: nothing was forked
        try:
            s.settimeout(None)  # it answers between two events of its loop
            reply = s.recv(16)
        except OSError:
            reply = b""
        finally:
            s.close()
        if reply == b"F":
            return True
    return False


def accepts(body: bytes, own_cfg: str, nfds: int) -> tuple[str, str, bytes] | None:
    """(config path, stderr path, Early's settings or b"") of a request this monitor can fork for
    (``nfds``: the fds it came with: the sync pipe, and request_early's go pipe), else None."""
    parts = body.split(b"\0", 3)
    if len(parts) != 2 + nfds or parts[2] != TOKEN:
        return None
    cfg_path, errors = os.fsdecode(parts[0]), os.fsdecode(parts[1])
    if len(cfg_path) != len(own_cfg) or os.path.basename(cfg_path) != os.path.basename(own_cfg):
        return None  # the command line could not name it
    return cfg_path, errors, parts[3] if nfds == 2 else b""


def fork(
    parent: object,
    own_cfg: str,
    cfg_path: str,
    errors: str,
    sync_fd: int,
    go_fd: int = -1,
    early_cfg: bytes = b"",
) -> int:
    """In the asked monitor: fork the new one; returns the pid of the intermediate child (reap it)."""
    import _signal  # type: ignore[import-not-found,unused-ignore]
    import fcntl

    from pallet.linux import syscalls  # ctypes: loaded once in the parent, shared by its siblings

    sc = syscalls.default()
    gc.freeze()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        _KEEP.append(parent)
        _signal.set_wakeup_fd(-1)
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        sc.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
        null = os.open(os.devnull, os.O_RDWR)
        err = os.open(errors, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        go = fcntl.fcntl(go_fd, fcntl.F_DUPFD_CLOEXEC, 256) if go_fd >= 0 else -1  # out of the way
        for target, fd in ((0, null), (1, null), (2, err), (3, sync_fd), (4, go)):
            if fd >= 0 and fd != target:  # the pipe came in as fd 3 where the parent had closed its own
                os.dup2(fd, target, inheritable=target < 3)
        os.set_inheritable(3, False)
        os.closerange(4 if go < 0 else 5, os.sysconf("SC_OPEN_MAX"))
        os.chdir("/")
        _retitle(own_cfg, cfg_path)
        from pallet.engine.monitor.main import run

        early = _start_early(early_cfg) if go >= 0 else ""
        if early is None:
            os._exit(0)  # the engine gave up: our create child, if any, kills its init
        code = run(cfg_path, 3, early)
    except BaseException:  # noqa: BLE001 - only os._exit may leave: never return into the parent's loop
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _start_early(early_cfg: bytes) -> str | None:
    """For request_early, in the new monitor: the create child forked now (it imports the runtime
    while the engine makes the bundle) and the init — forked here, where this monitor (like the one it
    came from) runs from the sealed interpreter with the init's code loaded (launch.py), else spawned
    by the create child — then the engine's go on fd 4; the argument for run() that tells what to
    adopt, or None at EOF (the engine gave up)."""
    import marshal

    from pallet.engine.monitor.inproc import Early

    early = Early(marshal.loads(early_cfg), preload=False) if early_cfg else None
    arg = ""
    if early is not None:
        init = sys.modules.get("pallet.runtime.init")
        if init is not None and init.sealed_here():
            ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
            init.fork_init(theirs.fileno(), [early.in_r, early.out_w, early.err_w])
            arg = early.fork(ours, theirs.fileno())
            ours.close()
            theirs.close()
        else:
            arg = early.fork()
        early.keep_monitor_ends()
    word = os.read(4, 1)
    os.close(4)
    if word != b"g":
        return None
    if early is not None:
        early.go()
        os.close(early.bundle_w)
    return arg


def _retitle(old: str, new: str) -> None:
    """Rewrite ``old`` to ``new`` (same length) in this process's command line (argv memory)."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    arg_start = int(fields[45])  # field 48 of proc(5), counted from field 3 (after the comm)
    with open("/proc/self/cmdline", "rb") as f:
        cmdline = f.read()
    at = cmdline.find(os.fsencode(old) + b"\0")
    if at < 0:
        return
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(arg_start + at)
        mem.write(os.fsencode(new))


TOKEN = token()  # when this monitor started: what it runs, whatever is on disk later
