"""Starting a container's monitor as a process of its own (conmon's detach), in two steps.

``Launch(argv, errors, early)``: fork, setsid, fork (the monitor is no child of ours and leads no
terminal), make it a child subreaper — kept across execve — start the create child where the create
runs in-process (``early``, inproc.Early: it spawns the container's init at once), and exec the
monitor, which waits for ``go``. The engine makes it before it mounts the rootfs and writes the
spec, so that the monitor's interpreter and the init's (~10 and ~12 ms here) start meanwhile.
``go()``: the bundle and the monitor's config are written — the monitor reads its config, the create
begins; returns the read end of the monitor's sync pipe. ``abort()``: the engine gave up — the
monitor exits without a word, the create child kills the init and exits.

Between fork and exec: syscalls only, and Early's fork. The create child is a copy of the engine's
process while it waits: every page the engine writes meanwhile is copied (a few ms at most); a
sibling monitor (sibling.py) needs none of this.
"""

from __future__ import annotations

import os

from pallet.engine.monitor.inproc import Early
from pallet.linux import syscalls


class Launch:
    def __init__(self, argv: list[str], errors: str, early: Early | None) -> None:
        self.early = early
        self.sync_r, sync_w = os.pipe()
        go_r, self.go_w = os.pipe()
        for fd in (sync_w, go_r):
            os.set_inheritable(fd, True)  # into the monitor's exec
        argv = [*argv, str(sync_w)]
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
                argv += [early.fork() if early is not None else "", str(go_r)]
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.dup2(err, 2)
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        for fd in (sync_w, go_r, null, err):
            os.close(fd)
        os.waitpid(pid, 0)  # the first child exits at once

    def go(self) -> int:
        os.write(self.go_w, b"g")
        os.close(self.go_w)
        if self.early is not None:
            self.early.go()
            self.early.close()  # the monitor reads create's result to EOF: our copies must go first
        return self.sync_r

    def abort(self) -> None:
        os.close(self.go_w)
        os.close(self.sync_r)
        if self.early is not None:
            self.early.close()
