"""The streaming endpoints: logs, attach and exec (hijacked connections), resize.

Without a tty, output goes as docker's multiplexed stream (8-byte header: stream, 0, 0, 0, size);
with a tty, raw. Attach talks to the container's monitor over its attach socket (protocol in
pallet/engine/monitor/main.py); exec spawns the runtime's ``exec`` as the CLI does, with pipes or,
with a tty, the pty master the runtime sends over a console socket.
"""

from __future__ import annotations

import _socket
import json
import os
import secrets
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pallet.api.server import HTTPError, Pending, Request, frame
from pallet.engine.runtime_log import last_error
from pallet.engine.views import parse_time, when
from pallet.errors import Conflict, InvalidArgument, NotFound

CHUNK = 32 * 1024


def _ctype(req: Request, tty: bool) -> str:
    if not tty and req.version >= (1, 42):
        return "application/vnd.docker.multiplexed-stream"
    return "application/vnd.docker.raw-stream"


# -- logs ------------------------------------------------------------------------------------------------


def logs(req: Request) -> None:
    from pallet.engine import logs as log_files

    eng = req.engine
    rec = eng.get(req.args["id"])
    want = {"stdout": req.flag("stdout"), "stderr": req.flag("stderr")}
    if not any(want.values()):
        raise InvalidArgument("Bad parameters: you must choose at least one stream")
    tty = bool(rec.config["Config"].get("Tty"))
    since = when(req.query["since"]) if req.query.get("since") not in (None, "", "0") else 0.0
    until = when(req.query["until"]) if req.query.get("until") not in (None, "", "0") else None
    path = eng.cdir(rec.id) / f"{rec.id}-json.log"
    running = eng.status(rec) in ("running", "paused", "restarting")
    if req.flag("follow") and until is None:
        try:
            first, rest = log_files.follow(path, eng.sock(rec.id), running)
        except OSError:  # the monitor exited as we asked: what is on disk is all there is
            first, rest = list(log_files.read(path)), iter(())
    else:
        first, rest = list(log_files.read(path)), iter(())
    out = req.stream(_ctype(req, tty))
    stamps = req.flag("timestamps")

    def keep(r: dict[str, Any]) -> bool:
        if not want.get(r["stream"]):
            return False
        if since or until is not None:
            t = parse_time(r["time"])
            ts = t.timestamp() if t else 0.0
            return ts >= since and (until is None or ts <= until)
        return True

    import itertools

    for r in itertools.chain(
        log_files.tail([r for r in first if keep(r)], req.query.get("tail") or "all"), rest
    ):
        if not keep(r):
            continue
        data = r["log"].encode()
        if stamps:
            data = r["time"].encode() + b" " + data
        out.write(data if tty else frame(1 if r["stream"] == "stdout" else 2, data))
    out.close()


def _until_reset(records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A monitor that exits with its container may reset the follower's socket: that is the end."""
    try:
        yield from records
    except OSError:
        return


# -- attach -------------------------------------------------------------------------------------------------


def attach(req: Request) -> None:
    from pallet.engine import attach as monitor

    eng = req.engine
    rec = eng.get(req.args["id"])
    tty = bool(rec.config["Config"].get("Tty"))
    stdin = req.flag("stdin") and bool(rec.config["Config"].get("OpenStdin"))
    want = {1: req.flag("stdout"), 2: req.flag("stderr")}
    if req.flag("logs") and not req.flag("stream"):
        raise HTTPError(501, "attach with logs=1 and stream=0: use GET /containers/{id}/logs")
    st = eng.status(rec)
    pending: Pending | None = None
    sock: _socket.socket | None = None  # attach.Conn
    if st in ("running", "paused", "restarting"):
        sock = monitor.connect(eng.sock(rec.id), b"a%d" % stdin)
    elif st == "created" or st == "exited":
        pending = Pending(stdin)  # docker run attaches first, then starts: the start hands it over
        req.server.hub.park(rec.id, pending)
    else:
        raise Conflict(f"You cannot attach to a {st} container, start it first")
    conn = req.hijack(_ctype(req, tty))
    try:
        if pending is not None:
            while not pending.ready.wait(1.0):
                if _gone(conn):
                    return
            if pending.sock is None:
                return
            sock = pending.sock
        assert sock is not None
        _pump_attach(conn, sock, stdin, tty, want)
    finally:
        if pending is not None:
            req.server.hub.unpark(rec.id, pending)
        if sock is not None:
            sock.close()
        _close(conn)


def _gone(conn: socket.socket) -> bool:
    import select

    r, _, _ = select.select([conn], [], [], 0)
    if not r:
        return False
    try:
        return not conn.recv(1, socket.MSG_PEEK)
    except OSError:
        return True


def _close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _pump_attach(
    conn: socket.socket, mon: _socket.socket, stdin: bool, tty: bool, want: dict[int, bool]
) -> None:
    sel = selectors.DefaultSelector()
    sel.register(mon, selectors.EVENT_READ, "monitor")
    if stdin:
        sel.register(conn, selectors.EVENT_READ, "client")
    mon.settimeout(None)
    while True:
        for key, _ in sel.select():
            if key.data == "monitor":
                msg = mon.recv(65536)
                if not msg or msg[:1] == b"x":
                    return
                tag, body = msg[:1], msg[1:]
                if tag in (b"1", b"2") and want[int(tag)]:
                    try:
                        conn.sendall(body if tty else frame(int(tag), body))
                    except OSError:
                        return
            else:
                try:
                    data = conn.recv(CHUNK)
                except OSError:
                    data = b""
                mon.send(b"0" + data)  # b"0" alone: stdin's end
                if not data:
                    sel.unregister(conn)


def resize(req: Request) -> None:
    from pallet.engine import attach as monitor

    eng = req.engine
    rec = eng.get(req.args["id"])
    h, w = req.number("h", 0), req.number("w", 0)
    if eng.status(rec) != "running":
        raise Conflict(f"container {rec.id} is not running")
    with monitor.connect(eng.sock(rec.id), b"z%d %d" % (h or 0, w or 0)):
        pass
    return None


# -- exec ---------------------------------------------------------------------------------------------------


class Exec:
    def __init__(self, eid: str, cid: str, config: dict[str, Any]) -> None:
        self.id = eid
        self.cid = cid
        self.config = config
        self.running = False
        self.started = False
        self.exit_code: int | None = None
        self.pid = 0
        self.master = -1
        self.finished = 0.0
        self.lock = threading.Lock()

    def inspect(self) -> dict[str, Any]:
        c = self.config
        cmd = c.get("Cmd") or []
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": bool(c.get("Tty")),
                "entrypoint": cmd[0] if cmd else "",
                "arguments": cmd[1:],
                "privileged": bool(c.get("Privileged")),
                "user": c.get("User") or "",
            },
            "OpenStdin": bool(c.get("AttachStdin")),
            "OpenStderr": bool(c.get("AttachStderr")),
            "OpenStdout": bool(c.get("AttachStdout")),
            "CanRemove": False,
            "ContainerID": self.cid,
            "DetachKeys": "",
            "Pid": self.pid,
        }


def exec_create(req: Request) -> dict[str, Any]:
    eng = req.engine
    body = req.body.json()
    rec = eng._running(req.args["id"])
    if not body.get("Cmd"):
        raise InvalidArgument("No exec command specified")
    eid = secrets.token_hex(32)
    now = time.monotonic()
    with req.server.lock:
        # finished execs are kept for a while (clients read their exit code after the stream ends)
        for old in [x for x, e in req.server.execs.items() if e.finished and now - e.finished > 600]:
            del req.server.execs[old]
        req.server.execs[eid] = Exec(eid, rec.id, body)
    req.send(201, json.dumps({"Id": eid}).encode())
    return {}


def _exec(req: Request) -> Exec:
    e: Exec | None = req.server.execs.get(req.args["id"])
    if e is None:
        raise NotFound(f"No such exec instance: {req.args['id']}")
    return e


def exec_inspect(req: Request) -> dict[str, Any]:
    return _exec(req).inspect()


def exec_resize(req: Request) -> None:
    e = _exec(req)
    if e.master < 0:
        raise Conflict(f"exec {e.id} has no tty to resize")
    import fcntl
    import struct
    import termios

    fcntl.ioctl(
        e.master, termios.TIOCSWINSZ, struct.pack("HHHH", req.number("h", 0), req.number("w", 0), 0, 0)
    )
    return None


def exec_start(req: Request) -> None:
    eng = req.engine
    e = _exec(req)
    body = req.body.json()
    with e.lock:
        if e.started:
            raise Conflict(f"exec {e.id} has already been started")
        e.started = True
    rec = eng._running(e.cid)
    c = e.config
    tty = bool(body.get("Tty", c.get("Tty")))
    opts = {
        "tty": tty,
        "workdir": c.get("WorkingDir"),
        "env": c.get("Env") or [],
        "user": c.get("User"),
        "privileged": bool(c.get("Privileged")),
    }
    detach = bool(body.get("Detach"))
    opts["detach"] = detach
    argv = eng.exec_argv(rec, c["Cmd"], opts)
    log = eng.rdir(rec.id) / f"exec-{e.id[:12]}.log"
    argv[argv.index("--log") + 1] = str(log)
    try:
        if detach:
            p = subprocess.run([*argv, rec.id], stdin=subprocess.DEVNULL, capture_output=True)
            _record(e, p.returncode, log)
            if p.returncode != 0:
                msg = last_error(log) or p.stderr.decode(errors="replace").strip()
                raise Conflict(f"exec failed: {msg}")
            return None
        conn = req.hijack(_ctype(req, tty))
        e.running = True
        try:
            if tty:
                code = _exec_tty(eng, rec, e, argv, conn, bool(c.get("AttachStdin")))
            else:
                code = _exec_pipes(rec, e, argv, conn, bool(c.get("AttachStdin")))
            _record(e, code, log)
        finally:
            e.running = False
            _close(conn)
    finally:
        eng.exec_done(argv)
    return None


def _record(e: Exec, code: int, log: Path) -> None:
    """The runtime's exit is the process's, unless the runtime logged that it could not start it."""
    from pallet.engine.monitor.main import invoke_code

    msg = last_error(log)
    log.unlink(missing_ok=True)
    e.exit_code = invoke_code(msg) if msg else code
    e.finished = time.monotonic()


def _exec_pipes(rec: Any, e: Exec, argv: list[str], conn: socket.socket, stdin: bool) -> int:
    p = subprocess.Popen(
        [*argv, rec.id],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    e.pid = p.pid
    sel = selectors.DefaultSelector()
    assert p.stdout is not None and p.stderr is not None
    sel.register(p.stdout, selectors.EVENT_READ, 1)
    sel.register(p.stderr, selectors.EVENT_READ, 2)
    if stdin:
        sel.register(conn, selectors.EVENT_READ, 0)
    open_outputs = 2
    while open_outputs:
        for key, _ in sel.select():
            if key.data == 0:
                try:
                    data = conn.recv(CHUNK)
                except OSError:
                    data = b""
                assert p.stdin is not None
                try:
                    if data:
                        p.stdin.write(data)
                        p.stdin.flush()
                    else:
                        sel.unregister(conn)
                        p.stdin.close()
                except BrokenPipeError:
                    sel.unregister(conn)
                continue
            data = os.read(key.fd, CHUNK)
            if not data:
                sel.unregister(key.fileobj)
                open_outputs -= 1
                continue
            try:
                conn.sendall(frame(key.data, data))
            except OSError:
                pass  # the client went away; the process runs to its end
    if p.stdin is not None and not p.stdin.closed:
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
    p.stdout.close()
    p.stderr.close()
    return p.wait()  # a blocking waitpid


def _exec_tty(eng: Any, rec: Any, e: Exec, argv: list[str], conn: socket.socket, stdin: bool) -> int:
    """The runtime sends the pty master to our console socket; we copy between it and the client."""
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="exec-", dir=str(eng.rdir(rec.id)))
    path = os.path.join(tmp, "console")
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lst.bind(path)
        lst.listen(1)
        p = subprocess.Popen(
            [*argv, "--console-socket", path, rec.id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        e.pid = p.pid
        pidfd = os.pidfd_open(p.pid)
        sel = selectors.DefaultSelector()
        sel.register(lst, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        master = -1
        if any(k.fileobj is lst for k, _ in sel.select()):
            c, _ = lst.accept()
            with c:
                _, fds, _, _ = socket.recv_fds(c, 1024, 1)
                master = fds[0] if fds else -1
        sel.close()
        os.close(pidfd)
    finally:
        lst.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if master >= 0:
        e.master = master
        try:
            _copy_pty(master, conn, stdin)
        finally:
            e.master = -1
            os.close(master)
    assert p.stderr is not None
    p.stderr.close()
    return p.wait()


def _copy_pty(master: int, conn: socket.socket, stdin: bool) -> None:
    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ, "pty")
    if stdin:
        sel.register(conn, selectors.EVENT_READ, "client")
    while True:
        for key, _ in sel.select():
            if key.data == "pty":
                try:
                    data = os.read(master, CHUNK)
                except OSError:
                    data = b""  # EIO: every slave end is closed
                if not data:
                    return
                try:
                    conn.sendall(data)
                except OSError:
                    pass
            else:
                try:
                    data = conn.recv(CHUNK)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(conn)
                    continue
                os.write(master, data)
