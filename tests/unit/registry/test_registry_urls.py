from __future__ import annotations

from pathlib import Path

import pytest

from pallet.errors import FailedPrecondition
from pallet.image.registry.client import error_message
from pallet.image.registry.transport import Transport, api_host, is_local, tls_context
from pallet.oci.reference import parse_tagged


@pytest.mark.parametrize(
    ("name", "host", "path"),
    [
        ("busybox", "registry-1.docker.io", "/v2/library/busybox/manifests/latest"),
        ("docker.io/user/app:1", "registry-1.docker.io", "/v2/user/app/manifests/1"),
        ("localhost:5000/a/b:t", "localhost:5000", "/v2/a/b/manifests/t"),
        ("quay.io/x/y@sha256:" + "a" * 64, "quay.io", "/v2/x/y/manifests/sha256:" + "a" * 64),
    ],
)
def test_reference_to_url(name: str, host: str, path: str) -> None:
    ref = parse_tagged(name)
    t = Transport(api_host(ref.domain), [])
    t.scheme = "https"
    target = str(ref.digest) if ref.digest else ref.tag
    assert t.url(f"/v2/{ref.path}/manifests/{target}") == f"https://{host}{path}"


def test_locations_relative_and_absolute() -> None:
    t = Transport("127.0.0.1:5000", [])
    t.scheme = "http"
    assert t.url("/v2/a/blobs/uploads/u1?_state=x") == "http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=x"
    assert t.url("https://storage.example/blob?sig=1") == "https://storage.example/blob?sig=1"


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("registry.localhost", True),
        ("10.0.0.1:5000", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_local(host: str, local: bool) -> None:
    assert is_local(host) is local


def test_plain_http_refused_for_remote_hosts() -> None:
    """A host that is neither local nor insecure is never spoken to over plain HTTP."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def answer() -> None:  # a plain-HTTP server: a TLS hello gets an HTTP error back
        c, _ = srv.accept()
        c.recv(4096)
        c.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        c.close()

    threading.Thread(target=answer, daemon=True).start()
    t = Transport(f"127.0.0.1:{port}", [])
    t.host = f"127.0.0.1:{port}"
    import pallet.image.registry.transport as tr

    orig = tr.is_local
    tr.is_local = lambda host: False  # type: ignore[assignment]
    try:
        with pytest.raises(FailedPrecondition, match="plain http is used only for localhost"):
            t.resolve_scheme()
    finally:
        tr.is_local = orig
        srv.close()


def test_certs_d_loads_cas_and_needs_key_for_client_cert(tmp_path: Path) -> None:
    d = tmp_path / "reg.example:5000"
    d.mkdir()
    (d / "client.cert").write_text("x")
    with pytest.raises(FailedPrecondition, match='has no "client.key"'):
        tls_context("reg.example:5000", [tmp_path])
    (d / "client.cert").unlink()
    (d / "ca.crt").write_text("not a certificate")
    with pytest.raises(FailedPrecondition, match="cannot load CA"):
        tls_context("reg.example:5000", [tmp_path])
    assert tls_context("other:1", [tmp_path]) is not None  # no directory: system CAs only


def test_error_message_from_registry_body() -> None:
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
    assert error_message(body, 404, "Not Found") == "manifest unknown"
    assert error_message(b"<html>", 502, "Bad Gateway") == "502 bad gateway"
    assert error_message(b'{"errors":[{"code":"DENIED"}]}', 403, "Forbidden") == "denied"
