"""The API's HTTP plumbing without an engine: routing, version negotiation, error mapping, request
bodies, stream framing, and a live service on a temporary socket answering _ping and errors."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from pallet.api import routes
from pallet.api.server import (
    API_VERSION,
    Body,
    HTTPError,
    Router,
    Service,
    deframe,
    frame,
    split_version,
    status_for,
)
from pallet.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
)


def test_versioned_and_unversioned_paths() -> None:
    assert split_version("/v1.41/containers/json") == ((1, 41), "/containers/json")
    assert split_version("/v1.24/_ping") == ((1, 24), "/_ping")
    assert split_version("/containers/json") == ((1, 44), "/containers/json")


@pytest.mark.parametrize(
    ("path", "word"), [("/v1.45/info", "too new"), ("/v1.23/info", "too old"), ("/vx.y/info", "invalid")]
)
def test_versions_out_of_range_are_400(path: str, word: str) -> None:
    with pytest.raises(HTTPError) as e:
        split_version(path)
    assert e.value.status == 400 and word in str(e.value)


def test_router_matches_segments_and_image_names_with_slashes() -> None:
    r = routes.build()
    fn, args = r.match("GET", "/images/localhost:5000/team/app:1.0/json")
    assert fn.__name__ == "inspect" and args == {"name": "localhost:5000/team/app:1.0"}
    fn, args = r.match("GET", "/images/json")
    assert fn.__name__ == "list_images" and args == {}
    fn, args = r.match("POST", "/containers/abc/start")
    assert fn.__name__ == "start" and args == {"id": "abc"}
    fn, _ = r.match("HEAD", "/containers/abc/archive")
    assert fn.__name__ == "archive_head"
    fn, _ = r.match("HEAD", "/_ping")
    assert fn.__name__ == "ping"


def test_router_unknown_is_501_and_wrong_method_405() -> None:
    r = Router()
    r.add("GET", "/a/{id}", lambda req: None)
    with pytest.raises(HTTPError) as e:
        r.match("GET", "/nothing")
    assert e.value.status == 501 and "/nothing" in str(e.value)
    with pytest.raises(HTTPError) as e:
        r.match("DELETE", "/a/1")
    assert e.value.status == 405


def test_unimplemented_endpoints_answer_501_not_a_fake_success() -> None:
    fn, _ = routes.build().match("POST", "/build")
    with pytest.raises(HTTPError) as e:
        fn(None)  # type: ignore[arg-type]
    assert e.value.status == 501


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (NotFound("x"), 404),
        (AlreadyExists("x"), 409),
        (Conflict("x"), 409),
        (InvalidArgument("x"), 400),
        (Internal("x"), 500),
        (RuntimeError("x"), 500),
        (FailedPrecondition("container x is not running"), 409),
        (HTTPError(304, "x"), 304),
    ],
)
def test_error_kinds_map_to_docker_status(exc: BaseException, status: int) -> None:
    assert status_for(exc) == status


def test_multiplexed_frames_round_trip() -> None:
    data = frame(1, b"out") + frame(2, b"") + frame(2, b"e" * 70000)
    assert data[:8] == bytes([1, 0, 0, 0, 0, 0, 0, 3])
    assert list(deframe(data)) == [(1, b"out"), (2, b""), (2, b"e" * 70000)]


def _headers(**kw: str) -> Message:
    m = Message()
    for k, v in kw.items():
        m[k.replace("_", "-")] = v
    return m


def test_body_content_length_and_chunked() -> None:
    b = Body(io.BytesIO(b'{"a": 1}NEXT'), _headers(Content_Length="8"))
    assert b.json() == {"a": 1} and b.done
    raw = b"3\r\nabc\r\n5;ext=1\r\ndefgh\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    f = io.BytesIO(raw)
    b = Body(f, _headers(Transfer_Encoding="chunked"))
    assert b.read(2) + b.read() == b"abcdefgh" and b.done
    assert f.read() == b"NEXT"  # the next request is left alone
    with pytest.raises(InvalidArgument):
        Body(io.BytesIO(b"ab"), _headers(Content_Length="5")).read()
    assert Body(io.BytesIO(b""), _headers()).json() == {}


# -- a live service, no engine call ----------------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "api.sock")
    srv = Service(path, tmp_path / "root", tmp_path / "run")
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield path
    srv.shutdown()
    srv.server_close()
    assert not os.path.exists(path)


def _ask(path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_socket_mode_0660(service: str) -> None:
    st = os.stat(service)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660


def test_ping_headers_get_and_head(service: str) -> None:
    for method in (b"GET", b"HEAD"):
        out = _ask(service, method + b" /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert f"Api-Version: {API_VERSION}".encode() in head
        assert b"Docker-Experimental: false" in head and b"Ostype: linux" in head
        assert body == (b"OK" if method == b"GET" else b"")


def test_errors_are_json_messages(service: str) -> None:
    out = _ask(service, b"GET /v1.99/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert "too new" in json.loads(body)["message"]
    out = _ask(service, b"GET /v1.41/swarm/unlock HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 501") and b"does not implement" in out


def test_a_second_service_on_a_live_socket_is_refused(service: str, tmp_path: Path) -> None:
    with pytest.raises(AlreadyExists):
        Service(service, tmp_path / "root", tmp_path / "run")
    assert os.path.exists(service)  # the refused one did not remove the live one's socket


def test_a_streaming_events_request_does_not_block_ping(service: str) -> None:
    with socket.socket(socket.AF_UNIX) as ev:
        ev.connect(service)
        ev.sendall(b"GET /v1.41/events HTTP/1.1\r\nHost: x\r\n\r\n")
        ev.settimeout(5)
        assert ev.recv(4096).startswith(b"HTTP/1.1 200")  # headers first, then it waits for events
        out = _ask(service, b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"OK")


def test_service_exits_after_timeout_idle_seconds_and_removes_its_socket(tmp_path: Path) -> None:
    import subprocess
    import sys

    sock = tmp_path / "s.sock"
    argv = [sys.executable, "-m", "pallet.cli.main", "--root", str(tmp_path / "r"), "--runroot",
            str(tmp_path / "rr"), "system", "service", "--host", f"unix://{sock}", "--timeout", "1"]  # fmt: skip
    p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert f"API listening on {sock}" in p.stderr and not sock.exists()
    p = subprocess.run(
        [*argv[:-4], "--host", "tcp://127.0.0.1:2375"], capture_output=True, text=True, timeout=20
    )
    assert p.returncode == 125 and "only unix://" in p.stderr
