"""Consoles: handing a pty master to a --console-socket (SCM_RIGHTS, as containerd and podman expect),
and, for a foreground `run -t`, relaying between our own terminal and the container's pty."""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import selectors
import signal
import socket
import struct
import termios
import tty
from collections.abc import Iterator


def send_console(socket_path: str, master: int) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(socket_path)
        s.sendmsg([b"/dev/ptmx"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])


def copy_winsize(src: int, dst: int) -> None:
    try:
        ws = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, ws)
    except OSError:
        pass


def set_winsize(fd: int, height: int, width: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


@contextlib.contextmanager
def raw_stdin() -> Iterator[None]:
    if not os.isatty(0):
        yield
        return
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def relay(master: int, done_fd: int) -> None:
    """Copy stdin -> master and master -> stdout until the pty closes or done_fd becomes readable."""
    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ, "out")
    sel.register(done_fd, selectors.EVENT_READ, "done")
    stdin_open = True
    try:
        sel.register(0, selectors.EVENT_READ, "in")
    except (ValueError, OSError, PermissionError):
        stdin_open = False
    if os.isatty(0):
        copy_winsize(0, master)
        signal.signal(signal.SIGWINCH, lambda *_: copy_winsize(0, master))
    draining = False
    while True:
        events = sel.select(timeout=0.05 if draining else None)
        if not events and draining:
            return
        for key, _ in events:
            if key.data == "out":
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    return
                os.write(1, data)
            elif key.data == "in" and stdin_open:
                data = os.read(0, 65536)
                if not data:
                    sel.unregister(0)
                    stdin_open = False
                    # EOF on a pipe: pass ^D so the program reading the tty sees end of input
                    os.write(master, b"\x04")
                else:
                    os.write(master, data)
            elif key.data == "done":
                sel.unregister(done_fd)
                draining = True
