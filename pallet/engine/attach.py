"""The client side of a monitor's attach socket (protocol in monitor/main.py), and the terminal proxy
used by ``run -t``, ``attach`` and ``exec -t``.
"""

from __future__ import annotations

import _socket
import contextlib
import os
import selectors
import sys
from collections.abc import Iterator

from pallet.errors import FailedPrecondition

DETACH_KEYS = b"\x10\x11"  # ctrl-p ctrl-q, docker's default
WINCH = 28
PROXIED = (1, 2, 3, 10, 12, 15)  # SIGHUP SIGINT SIGQUIT SIGUSR1 SIGUSR2 SIGTERM


class Detached(Exception):
    pass


class Conn(_socket.socket):
    """A connection to a monitor: the C socket, with ``with`` added (socket.py, which adds it too,
    builds its enums at import: ~1.5 ms of every CLI start)."""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(path: str, hello: bytes) -> Conn:
    s = Conn(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
        s.send(hello)
    except OSError as e:
        s.close()
        raise FailedPrecondition(f"cannot reach the container's monitor at {path}: {e.strerror}") from None
    return s


def wait_exit(s: _socket.socket, timeout: float | None = None) -> int | None:
    """Block until the monitor says the container exited; None if it closed without saying."""
    s.settimeout(timeout)
    while True:
        try:
            msg = s.recv(65536)
        except ConnectionResetError:  # it exited with our request unread: the same as closing
            return None
        if not msg:
            return None
        if msg[:1] == b"x":
            return int(msg[1:])


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    old = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def terminal_size(fd: int) -> tuple[int, int] | None:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return size.lines, size.columns


def proxy(s: _socket.socket, stdin: bool, tty: bool, sock_path: str | None = None) -> int | None:
    """Copy stdin to the container and its output to ours until it exits; returns its exit code,
    or None when the user detached (ctrl-p ctrl-q on a tty) or the monitor went away."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ, "sock")
    in_fd = sys.stdin.fileno() if stdin else -1
    if in_fd >= 0:
        sel.register(in_fd, selectors.EVENT_READ, "stdin")
    s.settimeout(None)
    prev = b""
    _watch_signals(sel, tty, sock_path)
    with raw_terminal(in_fd) if tty and in_fd >= 0 else contextlib.nullcontext():
        while True:
            for key, _ in sel.select():
                if key.data == "signals":
                    for sig in os.read(key.fd, 64):
                        if sig == WINCH:
                            size = terminal_size(in_fd if in_fd >= 0 else sys.stdout.fileno())
                            if size:
                                s.send(b"z%d %d" % size)
                        elif sock_path:  # docker's --sig-proxy: the container gets what we got
                            with connect(sock_path, b"k%d" % sig) as k:
                                k.settimeout(5)
                                k.recv(16)
                    continue
                if key.data == "sock":
                    try:
                        msg = s.recv(65536)
                    except ConnectionResetError:
                        return None
                    if not msg:
                        return None
                    tag, body = msg[:1], msg[1:]
                    if tag == b"1":
                        out.write(body)
                        out.flush()
                    elif tag == b"2":
                        err.write(body)
                        err.flush()
                    elif tag == b"x":
                        return int(body)
                else:
                    data = os.read(in_fd, 32768)
                    if tty and DETACH_KEYS in prev[-1:] + data:
                        return None
                    prev = data
                    try:
                        s.send(b"0" + data)
                    except (
                        OSError
                    ):  # the container exited and its monitor hung up: what is left to read is ours
                        data = b""
                    if not data:
                        sel.unregister(in_fd)


def hello(stdin: bool, tty: bool, remover: bool = False) -> bytes:
    """The attach request; on a tty it carries our window size, set before the process starts.
    A ``remover`` (``run --rm``) removes the container itself: the monitor then leaves it."""
    size = terminal_size(sys.stdin.fileno() if stdin else sys.stdout.fileno()) if tty else None
    return (b"A" if remover else b"a") + b"%d" % stdin + (b" %d %d" % size if size else b"")


def _watch_signals(sel: selectors.BaseSelector, tty: bool, sock_path: str | None) -> None:
    """Signals through a wakeup pipe into the selector (the pipe carries their numbers): a resize of
    our terminal goes to the pty; without a tty, INT/TERM/HUP/QUIT/USR1/USR2 go to the container."""
    import signal

    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(w)
    if tty:
        signal.signal(signal.SIGWINCH, lambda *_: None)
    elif sock_path:
        for sig in PROXIED:
            signal.signal(sig, lambda *_: None)
    sel.register(r, selectors.EVENT_READ, "signals")


def stop_request(sig: int, timeout: float) -> bytes:
    return b"s%d %s" % (sig, str(timeout).encode())
