"""Starting a container's monitor as a process of its own (conmon's detach), in two steps.

``Launch(argv, errors, early)``: fork, setsid, fork (the monitor is no child of ours and leads no
terminal), make it a child subreaper — kept across execve — and, where the create runs in-process
(``early``, inproc.Early), spawn the container's init at once; then the monitor-to-be waits. The
engine makes it before it mounts the rootfs and writes the spec, so the init's interpreter (~12 ms
here) starts meanwhile. ``go()``: the bundle is ready — start the create (Early's fork) and exec the
monitor; returns the read end of its sync pipe. ``abort()``: the engine gave up — the monitor-to-be
kills the init and exits.

Between fork and exec: syscalls only, and Early's spawn and fork. The monitor-to-be is a copy of
the engine's process while it waits: every page the engine writes meanwhile is copied (a few ms at
most); a sibling monitor (sibling.py) needs none of this.
"""

from __future__ import annotations

import os

from pallet.engine.monitor.inproc import Early
from pallet.linux import syscalls


class Launch:
    def __init__(self, argv: list[str], errors: str, early: Early | None) -> None:
        self.early = early
        self.sync_r, sync_w = os.pipe()
        go_r, self.go_w = os.pipe2(os.O_CLOEXEC)
        os.set_inheritable(sync_w, True)
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
                os.close(self.go_w)
                if early is not None:
                    early.spawn_init()
                if os.read(go_r, 1) != b"g":  # EOF: the engine gave up (or died)
                    if early is not None:
                        early.abandon()
                    os._exit(0)
                if early is not None:
                    argv.append(early.fork())
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
            self.early.close()  # the monitor reads create's result to EOF: our copies must go first
        return self.sync_r

    def abort(self) -> None:
        os.close(self.go_w)
        os.close(self.sync_r)
        if self.early is not None:
            self.early.close()
