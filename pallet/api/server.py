"""The HTTP side of ``pallet system service``: a threaded HTTP/1.1 server on a unix socket, the route
table, API version negotiation, request bodies (Content-Length or chunked), chunked streaming
responses, connection hijacking, and the one mapping from error kinds to HTTP status codes.

Threads, never forks: a container's processes are started through the engine (the monitor and
``pallet-runtime`` are separate processes, spawned and exec'd at once), so no thread ever enters a
namespace. Each request gets its own ``Engine`` (SQLite connections belong to one thread).
"""

from __future__ import annotations

import _socket
import json
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pallet.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PalletError,
    PermissionDenied,
    Unsupported,
)

MIN_VERSION = (1, 24)
MAX_VERSION = (1, 44)
API_VERSION = "1.44"
MIN_API_VERSION = "1.24"


class HTTPError(Exception):
    """An answer other than 2xx that is no engine error: 304, 501, a bad API version."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def status_for(exc: BaseException) -> int:
    """The one place where an error kind becomes an HTTP status (docker's codes)."""
    if isinstance(exc, HTTPError):
        return exc.status
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, AlreadyExists | Conflict):
        return 409
    if isinstance(exc, InvalidArgument):
        return 400
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, Unsupported):
        return 501
    if isinstance(exc, FailedPrecondition):
        return 409 if "not running" in str(exc) or "is paused" in str(exc) else 500
    return 500


def parse_version(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)\.(\d+)", text)
    if not m:
        raise HTTPError(400, f"invalid API version {text!r}")
    v = (int(m.group(1)), int(m.group(2)))
    if v > MAX_VERSION:
        raise HTTPError(
            400, f"client version {text} is too new. Maximum supported API version is {API_VERSION}"
        )
    if v < MIN_VERSION:
        raise HTTPError(
            400,
            f"client version {text} is too old. Minimum supported API version is {MIN_API_VERSION}, "
            "please upgrade your client to a newer version",
        )
    return v


def split_version(path: str) -> tuple[tuple[int, int], str]:
    """``/v1.41/containers/json`` → ((1, 41), ``/containers/json``); unversioned paths get the newest."""
    m = re.match(r"^/v([^/]+)(/.*)$", path)
    if m:
        return parse_version(m.group(1)), m.group(2)
    return MAX_VERSION, path


# -- routing ---------------------------------------------------------------------------------------------

Handler = Callable[["Request"], Any]


class Router:
    """``{name}`` matches one path segment, ``{name*}`` the rest (image names hold slashes)."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, fn: Handler) -> None:
        rx = re.sub(r"\{(\w+)\*\}", r"(?P<\1>.+)", pattern)
        rx = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", rx)
        self.routes.append((method, re.compile("^" + rx + "$"), fn))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for m, rx, fn in self.routes:
            found = rx.match(path)
            if found:
                if m == method or (method == "HEAD" and m == "GET" and not self._has(path, "HEAD")):
                    return fn, found.groupdict()
                allowed = True
        if allowed:
            raise HTTPError(405, f"method {method} not allowed on {path}")
        raise HTTPError(501, f"pallet does not implement {method} {path}")

    def _has(self, path: str, method: str) -> bool:
        return any(m == method and rx.match(path) for m, rx, _ in self.routes)


# -- request bodies and streamed answers ---------------------------------------------------------------


class Body:
    """The request body as a file: Content-Length bytes, or chunked transfer coding, or nothing."""

    def __init__(self, rfile: Any, headers: Any) -> None:
        self.rfile = rfile
        self.chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self.left = int(headers.get("Content-Length") or 0)
        self.done = not self.chunked and self.left == 0

    def _read_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.rfile.read(n - len(buf))
            if not chunk:
                raise InvalidArgument("request body ended early")
            buf += chunk
        return buf

    def _readline(self) -> bytes:
        line: bytes = self.rfile.readline(1024)
        if not line:
            raise InvalidArgument("request body ended early")
        return line

    def read(self, n: int = -1) -> bytes:
        if self.done or n == 0:
            return b""
        if n < 0:
            out = bytearray()
            while chunk := self.read(1 << 20):
                out += chunk
            return bytes(out)
        if self.chunked:
            if self.left == 0:
                size = int(self._readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self._readline() not in (b"\r\n", b"\n"):  # trailers
                        pass
                    self.done = True
                    return b""
                self.left = size
            data = self.rfile.read(min(n, self.left))
            if not data:
                raise InvalidArgument("request body ended early")
            self.left -= len(data)
            if self.left == 0:
                self._read_exact(2)  # the chunk's CRLF
            return bytes(data)
        data = self.rfile.read(min(n, self.left))
        if not data:
            raise InvalidArgument("request body ended early")
        self.left -= len(data)
        self.done = self.left == 0
        return bytes(data)

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def json(self) -> Any:
        data = self.read()
        if not data.strip():
            return {}
        try:
            return json.loads(data)
        except ValueError as e:
            raise InvalidArgument(f"invalid JSON: {e}") from None


class Stream:
    """A 200 answer whose length is not known: chunked, each write sent at once."""

    def __init__(self, wfile: Any) -> None:
        self.wfile = wfile

    def write(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def json(self, obj: Any) -> None:
        self.write(json.dumps(obj).encode() + b"\n")

    def close(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


def frame(stream: int, data: bytes) -> bytes:
    """docker's multiplexed stream: [stream, 0, 0, 0, size (big-endian uint32)] then the bytes."""
    return bytes((stream, 0, 0, 0)) + len(data).to_bytes(4, "big") + data


def deframe(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The inverse of ``frame`` over a whole buffer (tests and clients)."""
    i = 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i + 4 : i + 8], "big")
        yield data[i], data[i + 8 : i + 8 + size]
        i += 8 + size


# -- requests ----------------------------------------------------------------------------------------------


class Request:
    def __init__(self, handler: RequestHandler, version: tuple[int, int], path: str, query: str) -> None:
        self.handler = handler
        self.method = handler.command
        self.version = version
        self.path = path
        self.args: dict[str, str] = {}
        self.query = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        self.queries = parse_qs(query, keep_blank_values=True)
        self.headers = handler.headers
        self.body = Body(handler.rfile, handler.headers)
        self.server: Service = handler.server  # type: ignore[assignment]
        self._engine: Any = None
        self.answered = False

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from pallet.engine.containers import Engine

            self._engine = Engine(self.server.root, self.server.runroot, self.server.storage_driver)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()

    def flag(self, name: str, default: bool = False) -> bool:
        v = self.query.get(name)
        if v is None:
            return default
        return v.lower() not in ("", "0", "false", "no")

    def number(self, name: str, default: int | None = None) -> int | None:
        v = self.query.get(name)
        if v is None or v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise InvalidArgument(f"invalid value for {name}: {v}") from None

    def filters(self) -> dict[str, list[str]]:
        """docker's ``filters`` query: {"k": ["v"]} or the old {"k": {"v": true}}."""
        raw = self.query.get("filters")
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise InvalidArgument(f"invalid filters: {raw}") from None
        out: dict[str, list[str]] = {}
        for k, v in (data or {}).items():
            out[k] = list(v) if isinstance(v, list) else [x for x, on in v.items() if on]
        return out

    # answers
    def send(
        self, status: int, body: bytes, ctype: str = "application/json", extra: dict[str, str] | None = None
    ) -> None:
        h = self.handler
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if self.method != "HEAD":
            h.wfile.write(body)
        self.answered = True

    def stream(self, ctype: str = "application/json", extra: dict[str, str] | None = None) -> Stream:
        h = self.handler
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        h.send_header("Transfer-Encoding", "chunked")
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        self.answered = True
        return Stream(h.wfile)

    def hijack(self, ctype: str) -> socket.socket:
        """Answer 101 (with ``Upgrade``) or 200, then hand over the raw connection; it is closed after."""
        h = self.handler
        if (self.headers.get("Upgrade") or "").lower() == "tcp":
            h.send_response(101, "UPGRADED")
            h.send_header("Connection", "Upgrade")
            h.send_header("Upgrade", "tcp")
        else:
            h.send_response(200)
        h.send_header("Content-Type", ctype)
        h.end_headers()
        h.close_connection = True
        self.answered = True
        conn: socket.socket = h.connection
        return conn

    def stream_type(self) -> str:
        return "application/vnd.docker.raw-stream"


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pallet"
    # unbuffered reads: after a hijack, bytes the client sent must not hide in a read-ahead buffer
    rbufsize = 0

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.debug:  # type: ignore[attr-defined]
            super().log_message(format, *args)

    def address_string(self) -> str:
        return "unix"

    def do_any(self) -> None:
        url = urlsplit(self.path)
        req: Request | None = None
        try:
            version, path = split_version(url.path)
            req = Request(self, version, path, url.query)
            fn, args = self.server.router.match(self.command, path)  # type: ignore[attr-defined]
            req.args = args
            result = fn(req)
            if not req.answered:
                if result is None:
                    req.send(204, b"", "text/plain")
                else:
                    req.send(200, json.dumps(result).encode())
        except (PalletError, HTTPError, OSError, ValueError, KeyError) as e:
            if req is not None and req.answered and isinstance(e, BrokenPipeError | ConnectionResetError):
                self.close_connection = True  # the client left mid-stream (docker cancels its waits)
                return
            if self.server.debug or status_for(e) == 500:  # type: ignore[attr-defined]
                import traceback

                traceback.print_exc()
            self._error(req, e)
        finally:
            if req is not None:
                req.close()
                if not req.body.done and not self.close_connection:
                    self.close_connection = True  # an unread body would be read as the next request

    def _error(self, req: Request | None, e: BaseException) -> None:
        if req is not None and req.answered:
            self.close_connection = True  # mid-stream: nothing to do but close
            return
        status = status_for(e)
        msg = str(e) if isinstance(e, PalletError | HTTPError) else f"{type(e).__name__}: {e}"
        if isinstance(e, OSError) and not isinstance(e, PalletError):
            msg = f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}"
        body = b"" if status == 304 else json.dumps({"message": msg}).encode()
        self.send_response(status)
        if status != 304:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def version_string(self) -> str:
        return "Pallet/" + API_VERSION + " (linux)"

    def end_headers(self) -> None:
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Docker-Experimental", "false")
        self.send_header("Ostype", "linux")
        super().end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_any


class Service(ThreadingHTTPServer):
    """The API server on a unix socket (mode 0660, owned by root and ``group``)."""

    address_family = socket.AF_UNIX
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        path: str,
        root: Path,
        runroot: Path,
        storage_driver: str | None = None,
        group: int | None = None,
        debug: bool = False,
    ) -> None:
        from pallet.api import routes

        self.root = Path(root)
        self.runroot = Path(runroot)
        self.storage_driver = storage_driver
        self.debug = debug
        self.group = group
        self.router = routes.build()
        self.hub = Hub()
        self.hub.watch(self.root / "engine")
        self.execs: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.requests = 0  # connections so far, and now open: for --timeout
        self.active = 0
        super().__init__(path, RequestHandler)  # type: ignore[arg-type]

    def server_bind(self) -> None:
        path = str(self.server_address)
        if os.path.exists(path) or os.path.islink(path):
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(path)
                    raise AlreadyExists(f"{path}: another service is listening on it")
                except ConnectionRefusedError:
                    os.unlink(path)  # a socket left by a service that died
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        old = os.umask(0o117)  # never world-accessible, even for the instant before chmod
        try:
            self.socket.bind(path)
        finally:
            os.umask(old)
        if os.geteuid() == 0:
            os.chown(path, 0, self.group if self.group is not None else 0)
        elif self.group is not None:
            os.chown(path, -1, self.group)
        os.chmod(path, 0o660)
        self.server_name, self.server_port = path, 0
        self.bound = True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.requests += 1
            self.active += 1
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.lock:
                self.active -= 1

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, _ = self.socket.accept()
        return conn, "unix"

    def server_close(self) -> None:
        path = str(self.server_address)
        self.hub.close()
        super().server_close()
        if getattr(self, "bound", False):  # never another service's socket, after a refused bind
            try:
                os.unlink(path)
            except OSError:
                pass


class Hub:
    """What one request hands another: attachers waiting for a container's start (``docker run``
    attaches before it starts), and a condition that wakes ``wait`` whenever a container may have
    changed: a start through this service, or any write (by a CLI or a monitor beside us) to the
    engine's directory, its container database and event log, seen through inotify."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.waiting: dict[str, list[Pending]] = {}
        self._stop_w = -1

    def watch(self, directory: Path) -> None:
        """Wake the waiters after every change in ``directory``, from a thread of its own."""
        from pallet.linux import syscalls as s

        directory.mkdir(parents=True, exist_ok=True)
        sysc = s.default()
        ino = sysc.inotify_init1(s.IN_NONBLOCK | s.IN_CLOEXEC)
        sysc.inotify_add_watch(ino, str(directory), s.IN_MODIFY | s.IN_CREATE | s.IN_MOVED_TO)
        stop, self._stop_w = os.pipe2(os.O_CLOEXEC)
        threading.Thread(target=self._changes, args=(ino, stop), name="hub-inotify", daemon=True).start()

    def _changes(self, ino: int, stop: int) -> None:
        import select

        try:
            while True:
                readable, _, _ = select.select([ino, stop], [], [])
                if stop in readable:
                    return
                drain(ino)
                self.started()  # notified after the write that woke us: a waiter re-reads and sees it
        finally:
            os.close(ino)
            os.close(stop)

    def close(self) -> None:
        if self._stop_w >= 0:
            os.write(self._stop_w, b"x")
            os.close(self._stop_w)
            self._stop_w = -1

    def park(self, cid: str, p: Pending) -> None:
        with self.cond:
            self.waiting.setdefault(cid, []).append(p)

    def unpark(self, cid: str, p: Pending) -> None:
        with self.cond:
            if p in self.waiting.get(cid, []):
                self.waiting[cid].remove(p)

    def take(self, cid: str) -> list[Pending]:
        with self.cond:
            return self.waiting.pop(cid, [])

    def started(self) -> None:
        with self.cond:
            self.cond.notify_all()


def drain(ino: int) -> None:
    """Read a non-blocking inotify fd empty: its events only say "look again"."""
    while True:
        try:
            os.read(ino, 65536)
        except BlockingIOError:
            return


class Pending:
    """An attacher parked until its container starts: it gets the monitor's socket, or None."""

    def __init__(self, stdin: bool) -> None:
        self.stdin = stdin
        self.ready = threading.Event()
        self.sock: _socket.socket | None = None  # attach.Conn
        self.error = ""

    def give(self, sock: _socket.socket | None, error: str = "") -> None:
        self.sock, self.error = sock, error
        self.ready.set()
