"""A fake registry in a thread (http.server): blobs and manifests from dicts, optional bearer auth
with a token endpoint, and faults to inject: cut a blob at some byte, ignore Range, refuse with 403.
Every request is recorded as (method, path, headers)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    def __init__(self, bearer: bool = False) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}  # ref -> (media type, bytes)
        self.bearer = bearer
        self.cut_at: int | None = None  # blob GETs stop at this byte of the blob ...
        self.cuts = 0  # ... this many times
        self.ignore_range = False
        self.forbid = False
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.token_requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake.handle(self)

            def do_HEAD(self) -> None:
                fake.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_blob(self, data: bytes) -> str:
        d = digest_of(data)
        self.blobs[d] = data
        return d

    def blob_requests(self) -> list[dict[str, str]]:
        return [h for m, p, h in self.requests if "/blobs/" in p and m == "GET"]

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k.replace("_", "-"), v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str, msg: str, **headers: str) -> None:
        body = json.dumps({"errors": [{"code": code, "message": msg}]}).encode()
        self._send(h, status, body, Content_Type="application/json", **headers)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?")[0]
        self.requests.append((h.command, h.path, dict(h.headers.items())))
        if path == "/token":
            self.token_requests.append(h.path)
            self._send(h, 200, json.dumps({"token": "tok-1", "expires_in": 300}).encode())
            return
        if self.bearer and h.headers.get("Authorization") != "Bearer tok-1":
            realm = f"http://{self.host}/token"
            scope = ""
            if path.startswith("/v2/") and path.count("/") >= 4:
                repo = path[4:].rsplit("/", 2)[0]
                scope = f',scope="repository:{repo}:pull"'
            challenge = f'Bearer realm="{realm}",service="fake"{scope}'
            self._error(h, 401, "UNAUTHORIZED", "authentication required", WWW_Authenticate=challenge)
            return
        if self.forbid and path != "/v2/":
            self._error(h, 403, "DENIED", "requested access to the resource is denied")
            return
        if path == "/v2/":
            self._send(h, 200, b"{}")
            return
        repo_and_kind, _, ref = path[4:].rpartition("/")
        kind = repo_and_kind.rsplit("/", 1)[-1]
        if kind == "manifests":
            if ref not in self.manifests:
                self._error(h, 404, "MANIFEST_UNKNOWN", "manifest unknown")
                return
            media_type, data = self.manifests[ref]
            self._send(h, 200, data, Content_Type=media_type, Docker_Content_Digest=digest_of(data))
            return
        if kind == "blobs" and ref in self.blobs:
            data = self.blobs[ref]
            start = 0
            rng = h.headers.get("Range")
            if rng and not self.ignore_range:
                start = int(rng[len("bytes=") :].split("-")[0])
            body = data[start:]
            status = 206 if start else 200
            h.send_response(status)
            if start:
                h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if h.command == "HEAD":
                return
            if self.cut_at is not None and self.cuts > 0 and start + len(body) > self.cut_at:
                self.cuts -= 1
                h.wfile.write(body[: max(self.cut_at - start, 0)])
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)
                h.close_connection = True
                return
            h.wfile.write(body)
            return
        self._error(h, 404, "BLOB_UNKNOWN", "blob unknown to registry")
