"""``pallet-monitor``: one per container, conmon's role. The engine forks it twice (setsid between),
marks it a child subreaper (PR_SET_CHILD_SUBREAPER survives execve) and execs it, so the container's
init — forked by ``runtime create``, whose own process then exits — is re-parented here and its exit
status comes here, not to the host's PID 1.

It owns the container's stdio (pipes, or the pty master that the runtime sends over the console
socket), writes json-file logs, serves the attach socket, runs health checks and restart policies and
records every state change in the engine store. Lean on purpose (idle memory is per container): it
runs under ``python -S`` and imports only C modules (``_socket``, ``_signal``, ``select``, ``marshal``,
``_json``) besides os/time; SQLite, json, ctypes and the engine load in a forked child or at exit.

Protocol with the engine that starts it: a pipe (fd given in argv) carries one line per step —
``created <pid>``, ``started``, or ``error <exit code> <message>`` — then closes.

Attach socket (SOCK_SEQPACKET, one message per packet; first packet says what the client wants):
  client → monitor: ``a<0|1 stdin>[ <rows> <cols>]`` attach (``A``: and I remove it after, for --rm) | ``l`` follow logs | ``w`` wait |
                    ``s<signal> <timeout>`` stop | ``k<signal>`` kill | ``0<bytes>`` stdin data
                    (``0`` alone: stdin EOF) | ``z<rows> <cols>`` resize the tty
  monitor → client: ``1<bytes>`` stdout | ``2<bytes>`` stderr | ``O<offset>`` log size at follow start |
                    ``L<json line>`` a log line | ``x<code>`` the container exited (then close)
Every wait here is a blocking one: epoll sleeps until an fd is readable or a deadline (stop timeout,
health check, restart backoff) is due; SIGCHLD arrives through set_wakeup_fd.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found,unused-ignore]  # signal.py would add enum
import _socket
import errno
import marshal
import os
import select
import sys
import time

from pallet.engine.monitor import sibling
from pallet.engine.monitor.logs import JsonLog

TYPE_CHECKING = False  # typing itself pulls in re, enum and collections: ~1 MiB more per container
if TYPE_CHECKING:
    from typing import Any

CHUNK = 32 * 1024


def _now() -> str:
    from pallet.engine.monitor.logs import timestamp

    return timestamp()


def _spawn(argv: list[str], stdin: int, stdout: int, stderr: int) -> int:
    actions = [
        (os.POSIX_SPAWN_DUP2, stdin, 0),
        (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)


def _code(status: int) -> int:
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def invoke_code(message: str) -> int:
    """docker's reading of a failed start: 127 for a missing command, 126 for one that cannot run."""
    low = message.lower()
    if "not found" in low or "no such file or directory" in low:
        return 127
    if "permission denied" in low or "exec format error" in low or "is a directory" in low:
        return 126
    if "open executable: operation not permitted" in low:  # crun's words for a directory (podman: 126)
        return 126
    return 125


class Client:
    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.kind = ""
        self.remover = False  # an attached `run --rm` removes the container itself once told the exit

    def send(self, msg: bytes) -> bool:
        """A client too slow to take output for 2 s is dropped: the container must never wait on it."""
        try:
            self.sock.send(msg)
            return True
        except OSError:
            return False


def _fds(anc: list[tuple[int, int, bytes]]) -> list[int]:
    """The file descriptors in a message's SCM_RIGHTS."""
    out = []
    for level, kind, data in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            out += [int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(0, len(data) - 3, 4)]
    return out


def _line(fd: int) -> bytes:
    """One line from a pipe, read a byte at a time (what follows it is not ours to take); b"" at EOF."""
    data = b""
    while (byte := os.read(fd, 1)) and byte != b"\n":
        data += byte
    return data


def _recv_fd(conn: _socket.socket) -> int:
    """One file descriptor sent with SCM_RIGHTS (the runtime's pty master)."""
    _, anc, _, _ = conn.recvmsg(1024, _socket.CMSG_SPACE(4))
    for level, kind, data in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS and len(data) >= 4:
            return int.from_bytes(data[:4], sys.byteorder)
    return -1


class Monitor:
    def __init__(self, cfg: dict[str, Any], sync_fd: int, cfg_path: str = "", early: str = "") -> None:
        self.cfg = cfg
        self.cfg_path = cfg_path
        # the engine's inproc.Early: the first create, started before this monitor was exec'd
        self.early = [int(x) for x in early.split(",")] if early else None
        self.cid: str = cfg["id"]
        self.sync_fd: int | None = sync_fd
        self.ep = select.epoll()
        self.kinds: dict[int, str] = {}  # registered fd -> what it is
        self.clients: dict[int, Client] = {}
        self.outputs: dict[int, str] = {}  # fd -> stream
        self.stdin_w: int | None = None
        self.pty: int | None = None
        self.init_pid = 0
        self.started_at = 0.0
        self.manual_stop = False
        self.restarts = int(cfg.get("restart_count", 0))
        self.deadlines: dict[str, float] = {}
        self.waiting_attach = bool(cfg.get("attach_wait"))
        self.log = JsonLog(cfg["log"], int(cfg["max_size"]), int(cfg["max_file"]))
        self.health: dict[str, Any] = {"Status": "starting", "FailingStreak": 0, "Log": []}
        self.health_proc: tuple[int, int, float] | None = None  # pid, output fd, started
        # pallet-runtime's create and start in one child (inproc.create_then_start): pid, its result
        # pipe (read end) and the pipe that tells it to start (write end); once it started the
        # container, the same child while it writes the running state (settle)
        self.starter: tuple[int, int, int] | None = None
        self.recorder = 0
        self.done = False
        self.sock_ino = -1  # the inode of the attach socket it bound (listen)
        self.backoff = 0.1

    # -- setup ---------------------------------------------------------------------------------
    def watch(self, fd: int, kind: str) -> None:
        self.ep.register(fd, select.EPOLLIN)
        self.kinds[fd] = kind

    def unwatch(self, fd: int) -> None:
        if self.kinds.pop(fd, None) is not None:
            self.ep.unregister(fd)

    def listen(self) -> None:
        path = self.cfg["sock"]
        if os.path.exists(path):
            os.unlink(path)
        self.listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.sock_ino = os.stat(path).st_ino  # the path is ours to remove only while it is this socket
        self.listener.listen(16)
        self.watch(self.listener.fileno(), "listen")
        wr, ww = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake = wr
        _signal.set_wakeup_fd(ww)
        _signal.signal(_signal.SIGCHLD, lambda *_: None)
        self.watch(wr, "sigchld")

    def record(self, fields: dict[str, Any]) -> None:
        """Write to the engine store from a forked child, so that SQLite never loads in the idle monitor."""
        self.settle()
        pid = os.fork()
        if pid == 0:
            try:
                from pallet.engine.store import record_state

                record_state(self.cfg["db"], self.cid, fields)
                os._exit(0)
            except BaseException:
                os._exit(1)
        os.waitpid(pid, 0)

    def event(self, action: str, **attrs: str) -> None:
        """One line of the engine's event log (events.py's format), written without json."""
        from _json import encode_basestring as q

        attrs = {"image": self.cfg["image"], "name": self.cfg["name"]} | attrs
        pairs = ",".join(f"{q(k)}:{q(v)}" for k, v in attrs.items())
        ns = time.time_ns()
        line = (
            f'{{"Type":"container","Action":{q(action)},"Actor":{{"ID":"{self.cid}","Attributes":{{{pairs}}}}},'
            f'"time":{ns // 1_000_000_000},"timeNano":{ns}}}\n'
        )
        try:
            fd = os.open(self.cfg["events"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError:
            pass

    def tell(self, line: str) -> None:
        if self.sync_fd is not None:
            try:
                os.write(self.sync_fd, line.encode() + b"\n")
            except OSError:
                pass

    def close_sync(self) -> None:
        if self.sync_fd is not None:
            os.close(self.sync_fd)
            self.sync_fd = None

    def runtime(
        self, *args: str, stdio: tuple[int, int, int] | None = None, then_start: bool = False
    ) -> tuple[int, str]:
        """Run one runtime verb to completion; (exit code, its last error message)."""
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            pid = self.spawn_verb(list(args), stdio or (null, null, null), then_start)
        finally:
            os.close(null)
        code = self.verb_code(pid)
        return code, self.runtime_error() if code != 0 else ""

    def spawn_verb(self, args: list[str], stdio: tuple[int, int, int], then_start: bool = False) -> int:
        """Start one runtime verb; its pid. pallet-runtime's run in a forked child (inproc.py), others exec.
        ``then_start`` (create, in-process only): the same child starts the container later (start())."""
        logf = self.cfg["runtime_log"]
        root = self.cfg.get("runtime_root")
        if not root:
            return _spawn([*self.cfg["runtime"], "--log", logf, "--log-format", "json", *args], *stdio)
        result_r = result_w = go_r = go_w = -1
        if then_start:
            result_r, result_w = os.pipe2(os.O_CLOEXEC)
            go_r, go_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for target, fd in enumerate(stdio):
                    os.dup2(fd, target)
                # the child must not wake the monitor's loop, and the runtime waits on its own children
                _signal.set_wakeup_fd(-1)
                _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
                from pallet.engine.monitor import inproc

                if then_start:
                    os.close(result_r)
                    os.close(go_w)
                    code = inproc.create_then_start(root, logf, args, result_w, go_r, self.cfg["db"])
                else:
                    code = inproc.run_verb(root, logf, args)
            finally:
                os._exit(code)
        if then_start:
            os.close(result_w)
            os.close(go_r)
            self.starter = (pid, result_r, go_w)
        return pid

    def verb_code(self, pid: int) -> int:
        """A verb's exit code; for the create of a create-then-start child, the code it reported."""
        if self.starter is None or self.starter[0] != pid:
            _, status = os.waitpid(pid, 0)
            return _code(status)
        line = _line(self.starter[1])
        if line == b"0":
            return 0
        code = self.drop_starter()
        return int(line) if line.isdigit() else code or 1

    def drop_starter(self, fields: dict[str, Any] | None = None) -> int:
        """Send the starter child the state to record and start it (``fields``): start's code, while
        the child goes on to write the record (``recorder``, see settle); or EOF alone (it exits
        without starting): it is reaped, and its exit code returned."""
        assert self.starter is not None
        pid, result_r, go_w = self.starter
        self.starter = None
        try:
            if fields is not None:
                os.write(go_w, marshal.dumps(fields))
        except OSError:
            pass
        finally:
            os.close(go_w)
        line = _line(result_r) if fields is not None else b""
        os.close(result_r)
        if line.isdigit():
            self.recorder = pid
            return int(line)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # died before it was told, and reap() took it: no start happened
            return 1
        return _code(status)

    def settle(self) -> None:
        """Wait for the starter child's record of the running state: every later record or word about
        the container comes after it (an exit recorded first would be overwritten)."""
        if self.recorder:
            try:
                os.waitpid(self.recorder, 0)
            except ChildProcessError:  # reap() took it
                pass
            self.recorder = 0

    def runtime_error(self) -> str:
        from pallet.engine.runtime_log import last_error  # noqa: PLC0415 - on a failure only

        return last_error(self.cfg["runtime_log"])

    # -- one run of the container ----------------------------------------------------------------
    def create(self) -> str | None:
        """``runtime create`` with fresh stdio; returns an error message or None."""
        cfg = self.cfg
        for path in (cfg["pid_file"], cfg["runtime_log"]):
            if os.path.exists(path) and self.early is None:
                os.unlink(path)
        args = ["create", "--bundle", cfg["bundle"], "--pid-file", cfg["pid_file"]]
        if cfg["tty"]:
            err = self._create_tty(args)
        else:
            err = self._create_pipes(args)
        if err:
            return err
        with open(cfg["pid_file"]) as f:
            self.init_pid = int(f.read().strip())
        return None

    def _create_pipes(self, args: list[str]) -> str | None:
        if self.early is not None:  # started by the engine: adopt its child and our ends of its pipes
            pid, result_r, go_w, out_r, err_r, in_w = self.early
            self.early = None
            for fd in (result_r, go_w, out_r, err_r, in_w):
                if fd >= 0:
                    os.set_inheritable(fd, False)
            self.starter = (pid, result_r, go_w)
            code = self.verb_code(pid)
            msg = self.runtime_error() if code != 0 else ""
        else:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            if self.cfg["stdin"]:
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
            else:
                in_r, in_w = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1
            code, msg = self.runtime(*args, self.cid, stdio=(in_r, out_w, err_w), then_start=True)
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        if code != 0:
            for fd in (out_r, err_r, in_w):
                if fd >= 0:
                    os.close(fd)
            return msg or f"runtime create exited with {code}"
        for fd, stream in ((out_r, "stdout"), (err_r, "stderr")):
            os.set_blocking(fd, False)
            self.outputs[fd] = stream
            self.watch(fd, "output")
        self.stdin_w = in_w if in_w >= 0 else None
        return None

    def _create_tty(self, args: list[str]) -> str | None:
        path = self.cfg["console_sock"]
        if os.path.exists(path):
            os.unlink(path)
        lst = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        lst.bind(path)
        lst.listen(1)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        pid = self.spawn_verb(
            [*args, "--console-socket", path, self.cid], (null, null, null), then_start=True
        )
        os.close(null)
        pidfd = os.pidfd_open(pid)
        master = -1
        ep = select.epoll()
        try:
            ep.register(lst.fileno(), select.EPOLLIN)
            ep.register(pidfd, select.EPOLLIN)
            # the runtime connects and sends the pty master, or exits having failed: whichever first
            if lst.fileno() in [fd for fd, _ in ep.poll()]:
                conn = _socket.socket(fileno=lst._accept()[0])  # type: ignore[attr-defined]
                try:
                    master = _recv_fd(conn)
                finally:
                    conn.close()
        finally:
            ep.close()
            lst.close()
            os.unlink(path)
            os.close(pidfd)
        code = self.verb_code(pid)
        if code != 0 or master < 0:
            if master >= 0:
                os.close(master)
            if code == 0 and self.starter is not None:
                self.drop_starter()
            return self.runtime_error() or f"runtime create exited with {code}"
        os.set_blocking(master, False)
        self.pty = master
        self.outputs[master] = "stdout"
        self.watch(master, "output")
        return None

    def start(self) -> str | None:
        self.waiting_attach = False
        self.deadlines.pop("attach", None)
        fields: dict[str, Any] = {
            "Status": "running",
            "Running": True,
            "Paused": False,
            "Restarting": False,
            "Pid": self.init_pid,
            "ExitCode": 0,
            "Error": "",
            "OOMKilled": False,
            "StartedAt": _now(),
            "MonitorPid": os.getpid(),
            "RestartCount": self.restarts,
        }
        if self.cfg.get("health"):
            self.health = {"Status": "starting", "FailingStreak": 0, "Log": []}
            fields["Health"] = self.health
        recorded = self.starter is not None
        if self.starter is not None:  # the child that created it starts it and records the state
            code = self.drop_starter(fields)
            msg = self.runtime_error() if code != 0 else ""
        else:
            code, msg = self.runtime("start", self.cid)
        if code != 0:
            return msg or f"runtime start exited with {code}"
        self.started_at = time.monotonic()
        self.event("start")
        if self.cfg.get("health"):
            self.deadlines["health"] = time.monotonic() + self.cfg["health"]["interval"]
        if not recorded:
            self.record(fields)
        return None

    def launch(self) -> str | None:
        err = self.create()
        if err is None and not self.waiting_attach:
            err = self.start()
        return err

    # -- the loop --------------------------------------------------------------------------------
    def loop(self) -> None:
        while not self.done:
            timeout = -1.0
            if self.deadlines:
                timeout = max(0.0, min(self.deadlines.values()) - time.monotonic())
            try:
                events = self.ep.poll(timeout)
            except InterruptedError:
                continue
            for fd, _ in events:
                # an earlier event of this batch (init's exit) may have closed this fd
                what = self.kinds.get(fd)
                if what == "listen":
                    self.accept()
                elif what == "sigchld":
                    self.reap()
                elif what == "output":
                    self.read_output(fd)
                elif what == "client":
                    self.client_message(fd)
                if self.done:
                    return
            now = time.monotonic()
            for name, when in list(self.deadlines.items()):
                if when <= now and self.deadlines.get(name) == when:
                    del self.deadlines[name]
                    self.deadline(name)

    def deadline(self, name: str) -> None:
        if name == "kill" and self.init_pid:
            self.kill(9)
        elif name == "attach" and self.waiting_attach:
            self.begin()
        elif name == "health":
            self.health_start()
        elif name == "health_timeout" and self.health_proc:
            try:
                os.kill(self.health_proc[0], 9)
            except ProcessLookupError:
                pass
        elif name == "restart":
            self.restart()

    def begin(self) -> None:
        err = self.start()
        if err:
            self.fail(err)
        else:
            if not self.clients:
                self.settle()  # an engine that does not stay attached (run -d) reads the record at once
            self.tell("started")
            self.close_sync()

    def kill(self, sig: int) -> None:
        if self.init_pid:
            try:
                os.kill(self.init_pid, sig)  # our child (we are its subreaper): its pid cannot be reused
            except ProcessLookupError:
                pass

    def accept(self) -> None:
        conn = _socket.socket(fileno=self.listener._accept()[0])  # type: ignore[attr-defined]
        conn.settimeout(2.0)
        self.clients[conn.fileno()] = Client(conn)
        self.watch(conn.fileno(), "client")

    def drop(self, fd: int) -> None:
        c = self.clients.pop(fd, None)
        if c is not None:
            self.unwatch(fd)
            # read what the client sent last (stdin, its EOF): closing on unread data would reset the
            # connection, and the client could lose the exit code queued for it
            c.sock.setblocking(False)
            try:
                while c.sock.recv(CHUNK + 1):
                    pass
            except OSError:
                pass
            c.sock.close()

    def client_message(self, fd: int) -> None:
        c = self.clients[fd]
        try:
            msg, anc, _, _ = c.sock.recvmsg(CHUNK + 1, _socket.CMSG_SPACE(8))  # up to two fds (sibling.py)
        except OSError:
            msg, anc = b"", []
        fds = _fds(anc)
        if not msg:
            for x in fds:
                os.close(x)
            self.drop(fd)
            return
        op, body = msg[:1], msg[1:]
        if op == b"F":
            self.fork_sibling(c, body, fds)
            self.drop(fd)
            return
        for x in fds:
            os.close(x)
        if op == b"0":
            self.stdin(body)
        elif op == b"z":
            rows, cols = (int(x) for x in body.split())
            self.resize(rows, cols)
        elif op in (b"a", b"A", b"w", b"l"):
            c.kind = op.decode().lower()
            c.remover = op == b"A"
            words = body.split()
            if c.kind == "a" and len(words) == 3:
                self.resize(int(words[1]), int(words[2]))
            if op == b"l":
                c.send(b"O%d" % self.log.size)
            if self.init_pid == 0 and not self.deadlines.get("restart"):
                c.send(b"x%d" % self.cfg.get("last_exit", 0))
                self.drop(fd)
                return
            if c.kind == "a" and self.waiting_attach:
                self.begin()
        elif op == b"s":
            sig, timeout = body.split()
            c.kind = "w"
            self.manual_stop = True
            if self.deadlines.pop("restart", None) is not None:
                self.finish(self.cfg.get("last_exit", 0))
                return
            self.kill(int(sig))
            self.deadlines["kill"] = time.monotonic() + float(timeout)
        elif op == b"k":
            self.manual_stop = True
            self.kill(int(body))
            self.drop(fd)

    def fork_sibling(self, c: Client, body: bytes, fds: list[int]) -> None:
        """The monitor of another container, forked from this one (sibling.py); ``E``: not done."""
        req = sibling.accepts(body, self.cfg_path, len(fds)) if len(fds) in (1, 2) else None
        if req is None:
            for x in fds:
                os.close(x)
            c.send(b"E")
            return
        # the answer goes first: an engine that sees none (we died, or never read it) starts another
        # monitor itself, so there must be no sibling unless it was told there would be one
        if c.send(b"F"):
            go = fds[1] if len(fds) == 2 else -1
            pid = sibling.fork(self, self.cfg_path, req[0], req[1], fds[0], go, req[2])
            try:
                os.waitpid(pid, 0)  # the intermediate child, gone at once
            except ChildProcessError:
                pass
        for x in fds:
            os.close(x)

    def resize(self, rows: int, cols: int) -> None:
        if self.pty is None:
            return
        import fcntl
        import struct
        import termios

        fcntl.ioctl(self.pty, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def stdin(self, data: bytes) -> None:
        target = self.pty if self.pty is not None else self.stdin_w
        if target is None:
            return
        if not data:
            if self.pty is None and self.stdin_w is not None:
                os.close(self.stdin_w)
                self.stdin_w = None
            return
        try:
            os.set_blocking(target, True)
            os.write(target, data)
            if target == self.pty:
                os.set_blocking(target, False)
        except OSError:
            pass

    def read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's last holder closed it
            data = b""
        if not data:
            self.unwatch(fd)
            self.outputs.pop(fd, None)
            if fd != self.pty:
                os.close(fd)
            return
        self.emit(self.outputs[fd], data)

    def emit(self, stream: str, data: bytes) -> None:
        lines = self.log.write(stream, data)
        tag = b"1" if stream == "stdout" else b"2"
        for fd, c in list(self.clients.items()):
            ok = True
            if c.kind == "a":
                for i in range(0, len(data), CHUNK):
                    ok = ok and c.send(tag + data[i : i + CHUNK])
            elif c.kind == "l":
                for line in lines:
                    ok = ok and c.send(b"L" + line)
            if not ok:
                self.drop(fd)

    def drain(self) -> None:
        """After init's exit: what is still buffered in the pipes or the pty, then partial lines."""
        for fd in list(self.outputs):
            while fd in self.outputs:
                try:
                    data = os.read(fd, CHUNK)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    self.read_output(fd)  # unregisters it at EOF
                    break
                self.emit(self.outputs[fd], data)
        for line in self.log.flush():
            for fd, c in list(self.clients.items()):
                if c.kind == "l" and not c.send(b"L" + line):
                    self.drop(fd)

    # -- children ------------------------------------------------------------------------------
    def reap(self) -> None:
        try:
            while os.read(self.wake, 512):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.recorder:
                self.recorder = 0
            elif pid == self.init_pid:
                self.exited(_code(status))
            elif self.health_proc and pid == self.health_proc[0]:
                self.health_done(_code(status))

    def exited(self, code: int) -> None:
        if not self.remover():
            # the exit is recorded after the running state; a foreground `run --rm` records nothing
            # and its CLI deletes the record, after which a late running state changes nothing
            self.settle()
        self.init_pid = 0
        self.event("die", exitCode=str(code))
        self.deadlines.pop("kill", None)
        self.deadlines.pop("health", None)
        self.drain()
        for fd in list(self.outputs):
            self.unwatch(fd)
            if fd != self.pty:
                os.close(fd)
        self.outputs.clear()
        if self.pty is not None:
            os.close(self.pty)
            self.pty = None
        if self.stdin_w is not None:
            os.close(self.stdin_w)
            self.stdin_w = None
        # a foreground `run --rm` records nothing: its CLI removes the container once told the code
        oom = self.oom_killed() if self.should_restart(code) or not self.remover() else False
        if self.should_restart(code) or not self.remover():
            # a foreground `run --rm` deletes it with the rest, as soon as it has the exit code
            self.runtime("delete", "--force", self.cid)
        self.cfg["last_exit"] = code
        if self.should_restart(code):
            ran = time.monotonic() - self.started_at
            self.backoff = 0.1 if ran >= 10 else min(self.backoff * 2, 60.0)
            self.restarts += 1
            self.record(
                {"Status": "restarting", "Running": False, "Restarting": True, "Pid": 0, "ExitCode": code}
                | {"FinishedAt": _now(), "RestartCount": self.restarts, "OOMKilled": oom}
            )
            self.notify_exit(code)
            self.deadlines["restart"] = time.monotonic() + self.backoff
            return
        self.finish(code, oom=oom)

    def oom_killed(self) -> bool:
        """Did the kernel OOM-kill a process of the container while it ran (docker's State.OOMKilled,
        the init or any other)? Read from the cgroup's counter before the runtime's delete removes it;
        the engine's cgroupsPath is absolute, so it is found whatever runtime made it. Read in a forked
        child (exit status 1: yes), as record() writes: json and the cgroup drivers never load in the
        monitor, which a restart policy keeps alive (and siblings are forked from)."""
        pid = os.fork()
        if pid == 0:
            killed = False
            try:
                import json  # noqa: PLC0415 - in the child only

                from pallet.runtime.cgroups import CgroupError, open_manager  # noqa: PLC0415

                try:
                    with open(os.path.join(self.cfg["bundle"], "config.json"), "rb") as f:
                        path = (json.loads(f.read()).get("linux") or {}).get("cgroupsPath")
                    mgr = open_manager(path, self.cid)
                    killed = mgr.exists() and int(mgr.stats()["memory"].get("oom_kill", 0)) > 0
                except (OSError, ValueError, KeyError, CgroupError):
                    pass  # no memory accounting to tell: docker says false too
            finally:
                os._exit(1 if killed else 0)
        _, status = os.waitpid(pid, 0)
        return _code(status) == 1

    def should_restart(self, code: int) -> bool:
        policy = self.cfg.get("restart") or {"Name": "no"}
        name, limit = policy.get("Name", "no"), int(policy.get("MaximumRetryCount", 0))
        if self.manual_stop or name in ("no", ""):
            return False
        if name == "on-failure":
            return code != 0 and (limit == 0 or self.restarts < limit)
        return name in ("always", "unless-stopped")

    def restart(self) -> None:
        if self.manual_stop:  # killed or stopped during the backoff: stay down
            self.finish(self.cfg.get("last_exit", 0))
            return
        err = self.launch()
        if err:
            self.finish(invoke_code(err), err)

    def notify_exit(self, code: int) -> None:
        for fd, c in list(self.clients.items()):
            if c.kind:
                c.send(b"x%d" % code)
                self.drop(fd)

    def fail(self, err: str) -> None:
        """The first start failed: report to the CLI, leave the container created with the error."""
        code = invoke_code(err)
        self.runtime("delete", "--force", self.cid)
        self.record({"Status": "created", "Running": False, "Pid": 0, "ExitCode": code, "Error": err})
        self.tell(f"error {code} {err}")
        self.close_sync()
        self.unmount()
        self.notify_exit(code)
        self.done = True

    def remover(self) -> bool:
        """Is a foreground ``run --rm`` attached, which removes the container once told the exit?"""
        return bool(self.cfg.get("auto_remove")) and any(c.remover for c in self.clients.values())

    def finish(self, code: int, err: str = "", oom: bool = False) -> None:
        if self.remover():
            # `run --rm` in the foreground: its CLI removes the runtime's container, the mount and the
            # record as soon as it has the exit code (as docker's CLI does); nothing to wait for here
            self.notify_exit(code)
            self.done = True
            return
        self.record(
            {"Status": "exited", "Running": False, "Restarting": False, "Paused": False, "Pid": 0}
            | {"ExitCode": code, "FinishedAt": _now(), "MonitorPid": 0, "RestartCount": self.restarts}
            | {"OOMKilled": oom}
            | ({"Error": err} if err else {})
            | ({"Health": self.health | {"Status": "unhealthy"}} if self.cfg.get("health") else {})
        )
        self.unmount()
        if self.cfg.get("auto_remove"):
            self.remove()
        self.notify_exit(code)
        self.done = True

    def unmount(self) -> None:
        from pallet.linux import syscalls

        try:
            syscalls.default().umount2(self.cfg["rootfs"], syscalls.MNT_DETACH)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):
                raise

    def remove(self) -> None:
        """--rm: the container goes with its monitor (docker's AutoRemove, done where the exit is seen)."""
        from pathlib import Path

        from pallet.engine.containers import Engine

        eng = Engine(Path(self.cfg["root"]), Path(self.cfg["runroot"]), self.cfg.get("storage_driver"))
        try:
            eng.remove(self.cid, force=True, volumes=True, exited=True)
        except Exception:
            pass
        finally:
            eng.close()

    # -- health checks -------------------------------------------------------------------------
    def health_start(self) -> None:
        hc = self.cfg["health"]
        test = hc["test"]
        args = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        r, w = os.pipe2(os.O_CLOEXEC)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        argv = [*self.cfg["runtime"], "exec", self.cid, *args]
        pid = _spawn(argv, null, w, w)
        os.close(null)
        os.close(w)
        os.set_blocking(r, False)
        self.health_proc = (pid, r, time.monotonic())
        self.deadlines["health_timeout"] = time.monotonic() + hc["timeout"]

    def health_done(self, code: int) -> None:
        assert self.health_proc is not None
        _, r, began = self.health_proc
        self.health_proc = None
        self.deadlines.pop("health_timeout", None)
        try:
            out = os.read(r, 4096).decode("utf-8", "replace")
        except OSError:
            out = ""
        os.close(r)
        hc = self.cfg["health"]
        if time.monotonic() - began >= hc["timeout"]:
            code, out = -1, f"Health check exceeded timeout ({hc['timeout']}s)"
        h = self.health
        in_grace = time.monotonic() - self.started_at < hc.get("start_period", 0)
        if code == 0:
            h["FailingStreak"] = 0
            h["Status"] = "healthy"
        elif not in_grace:
            h["FailingStreak"] += 1
            if h["FailingStreak"] >= hc["retries"]:
                h["Status"] = "unhealthy"
        h["Log"] = [*h["Log"], {"Start": _now(), "ExitCode": code, "Output": out}][-5:]
        self.record({"Health": h})
        self.event("health_status: " + h["Status"])
        if self.init_pid:
            self.deadlines["health"] = time.monotonic() + hc["interval"]


def main(argv: list[str] | None = None) -> int:
    """Run as ``pallet-monitor CONFIG SYNC_FD`` by the engine, already detached and a subreaper."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3, 4):
        print(
            "usage: pallet-monitor CONFIG SYNC_FD [EARLY [GO_FD]] (started by pallet, not by hand)",
            file=sys.stderr,
        )
        return 2
    sync_fd = int(argv[1])
    os.set_inheritable(sync_fd, False)  # inherited across our exec only: not into the runtime or container
    if len(argv) == 4:
        # exec'd before the engine wrote our config (monitor/launch.py): wait for its word; EOF: it gave up
        go = int(argv[3])
        os.set_inheritable(go, False)
        word = os.read(go, 1)
        os.close(go)
        if word != b"g":
            return 0
    return run(argv[0], sync_fd, argv[2] if len(argv) >= 3 else "")


def run(cfg_path: str, sync_fd: int, early: str = "") -> int:
    """One container's monitor, to its end (exec'd by the engine, or forked by a sibling)."""
    with open(cfg_path, "rb") as f:
        cfg = marshal.load(f)
    mon = Monitor(cfg, sync_fd, cfg_path, early)
    try:
        mon.listen()
        err = mon.create()
        if err:
            mon.fail(err)
            return 0
        mon.tell(f"created {mon.init_pid}")
        if mon.waiting_attach:
            mon.deadlines["attach"] = time.monotonic() + 30
        else:
            mon.begin()
        if not mon.done:
            mon.loop()
    except BaseException as e:  # noqa: BLE001 - the CLI must hear why, then the container is not left running
        mon.tell(f"error 125 monitor: {e}")
        if mon.init_pid:
            mon.kill(9)
        raise
    finally:
        try:
            # a new monitor of this container (`start` after its exit) may have bound the path already
            if os.stat(cfg["sock"]).st_ino == mon.sock_ino:
                os.unlink(cfg["sock"])
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
