"""Starting a container's monitor as a process of its own (conmon's detach), in two steps.

``Launch(cfg_path, errors, early)``: fork, setsid, fork (the monitor is no child of ours and leads
no terminal), make it a child subreaper — kept across execve — start the create child where the
create runs in-process (``early``, inproc.Early), and exec the monitor, which waits for ``go``. The
engine makes it before it writes the bundle (before it creates the container, for ``run``), so that
the interpreters start meanwhile. ``go()``: the bundle and the monitor's config are written — the
monitor reads its config, the create begins; returns the read end of the monitor's sync pipe.
``abort()``: the engine gave up — the monitor exits without a word, the create child too, and the
init with them.

With an Early, the monitor is exec'd from the sealed view of the interpreter that the container's
init needs (runtime/launcher.py) and forks that init first thing (runtime/init.fork_from): one
interpreter start (~6 ms here, beside ~4 ms of imports) for both, where the create child used to
spawn the init as a second one. The create child adopts it through its sync socket.

Between fork and exec: syscalls only, and Early's fork. The create child is a copy of the engine's
process while it waits: every page the engine writes meanwhile is copied (a few ms at most); a
sibling monitor (sibling.py) needs none of this.
"""

from __future__ import annotations

import _socket
import os
import sys
from pathlib import Path

from pallet.engine.monitor.inproc import Early
from pallet.linux import syscalls

_ROOT = str(Path(__file__).resolve().parents[3])
# the monitor runs without site (less memory per container): it finds pallet where this engine did;
# with an Early, the init is forked first (init.fork_from takes the last 4 arguments)
MONITOR_BOOT = (
    f"import sys; sys.path.insert(0, {_ROOT!r}); "
    "from pallet.engine.monitor.main import main; sys.exit(main(sys.argv[2:]))"
)
INIT_THEN_MONITOR_BOOT = (
    f"import sys; sys.path.insert(0, {_ROOT!r}); "
    "from pallet.runtime.init import fork_from; fork_from(sys.argv); "
    "from pallet.engine.monitor.main import main; sys.exit(main(sys.argv[2:]))"
)


class Launch:
    def __init__(self, cfg_path: str, errors: str, early: Early | None) -> None:
        self.early = early
        self.sync_r, sync_w = os.pipe()
        go_r, self.go_w = os.pipe()
        for fd in (sync_w, go_r):
            os.set_inheritable(fd, True)  # into the monitor's exec
        boot = MONITOR_BOOT if early is None else INIT_THEN_MONITOR_BOOT
        argv = [sys.executable, "-S", "-c", boot, "pallet-monitor", cfg_path, str(sync_w)]
        sc = syscalls.default()
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        err = os.open(errors, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                if os.fork() > 0:
                    os._exit(0)
                sc.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
                if early is None:
                    argv += ["", str(go_r)]
                    exe: int | str = argv[0]
                else:
                    from pallet.runtime import launcher

                    exe = launcher.sealed_interpreter(early.root)
                    ours, init_sock = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
                    argv += [early.fork(ours, init_sock.fileno()), str(go_r)]
                    ours.close()
                    # the init's: its sync socket and the container's stdio (init.fork_from)
                    for fd in (init_sock.fileno(), early.in_r, early.out_w, early.err_w):
                        os.set_inheritable(fd, True)
                        argv.append(str(fd))
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.dup2(err, 2)
                os.execve(exe, argv, os.environ)
            finally:
                os._exit(127)
        for fd in (sync_w, go_r, null, err):
            os.close(fd)
        self.first = pid  # it exits at once: reaped at go or abort, not waited for now

    def _reap(self) -> None:
        if self.first:
            os.waitpid(self.first, 0)
            self.first = 0

    def go(self) -> int:
        self._reap()
        os.write(self.go_w, b"g")
        os.close(self.go_w)
        if self.early is not None:
            self.early.go()
            self.early.close()  # the monitor reads create's result to EOF: our copies must go first
        return self.sync_r

    def abort(self) -> None:
        self._reap()
        os.close(self.go_w)
        os.close(self.sync_r)
        if self.early is not None:
            self.early.close()
