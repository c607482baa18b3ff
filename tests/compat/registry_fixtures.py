"""Debian's docker-registry in three variants, a token issuer, and images to put in them.

Each registry lives in a pallet-t peer dir (config, storage, certificates, log) and listens on
127.0.0.1:<free port>; the dir's teardown kills it even when a test fails:

- ``plain``: plain HTTP, anonymous.
- ``basic``: TLS with a CA made here by openssl, htpasswd (bcrypt) basic auth.
- ``token``: plain HTTP, bearer tokens from ``TokenIssuer`` (an http.server in this process that
  signs RS256 JWTs with a key made here; the registry trusts its certificate via rootcertbundle).

Images are OCI layouts written here (gzip layers, deterministic bytes), so skopeo can push them.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.compat.conftest import Daemon, peer_dir

USER, PASSWORD = "pallet", "s3cret-pw"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    variant: str
    host: str  # 127.0.0.1:<port>
    dir: Path
    storage: Path
    daemon: Daemon
    ca: Path | None = None
    issuer: TokenIssuer | None = None

    def blob_path(self, digest: str) -> Path:
        hexd = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca_and_server_cert(d: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key) for 127.0.0.1."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=pallet-test-ca", cwd=d,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1", cwd=d,
    )  # fmt: skip
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=d,
    )  # fmt: skip
    (d / "ca").mkdir()
    (d / "ca" / "ca.crt").write_bytes((d / "ca.crt").read_bytes())  # alone: a cert dir for skopeo
    return d / "ca" / "ca.crt", d / "server.crt", d / "server.key"


def _wait_listening(daemon: Daemon, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            pytest.fail(f"docker-registry exited with {daemon.proc.returncode}:\n{daemon.log_tail()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    daemon.stop()
    pytest.fail(f"docker-registry did not listen on {port}:\n{daemon.log_tail()}")


@contextmanager
def start_registry(variant: str) -> Iterator[Registry]:
    if not os.path.exists("/usr/bin/docker-registry"):
        pytest.skip("docker-registry is not installed (Debian: docker-registry)")
    with peer_dir(f"registry-{variant}") as d:
        port = free_port()
        storage = d / "storage"
        storage.mkdir()
        lines = [
            "version: 0.1",
            "log:\n  level: warn\n  accesslog:\n    disabled: true",
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true",
            f"http:\n  addr: 127.0.0.1:{port}\n  secret: {uuid.uuid4().hex}",
        ]
        ca = None
        issuer = None
        if variant == "basic":
            bcrypt = pytest.importorskip(
                "bcrypt", reason="bcrypt is in the test extras (pip install -e .[test])"
            )

            ca, crt, key = make_ca_and_server_cert(d)
            lines[-1] += f"\n  tls:\n    certificate: {crt}\n    key: {key}"
            hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4, prefix=b"2a")).decode()
            (d / "htpasswd").write_text(f"{USER}:{hashed}\n")
            lines.append(f"auth:\n  htpasswd:\n    realm: pallet-test\n    path: {d / 'htpasswd'}")
        elif variant == "token":
            pytest.importorskip(
                "cryptography", reason="cryptography is in the test extras (pip install -e .[test])"
            )
            issuer = TokenIssuer(d)
            lines.append(
                "auth:\n  token:\n"
                f"    realm: {issuer.realm}\n    service: {issuer.service}\n"
                f"    issuer: {issuer.issuer}\n    rootcertbundle: {issuer.cert}"
            )
        (d / "config.yml").write_text("\n".join(lines) + "\n")
        daemon = Daemon(["/usr/bin/docker-registry", "serve", str(d / "config.yml")], d / "registry.log")
        try:
            _wait_listening(daemon, port)
            yield Registry(variant, f"127.0.0.1:{port}", d, storage, daemon, ca, issuer)
        finally:
            daemon.stop()
            if issuer is not None:
                issuer.stop()


# -- token issuer ---------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenIssuer:
    """Grants what is asked to USER with PASSWORD; anonymous callers get tokens with no access."""

    dir: Path
    service: str = "pallet-test-registry"
    issuer: str = "pallet-test-issuer"
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pallet-test-token-signer")])
        now = time.time()
        import datetime as dt

        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime.fromtimestamp(now - 3600, dt.UTC))
            .not_valid_after(dt.datetime.fromtimestamp(now + 86400, dt.UTC))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert = self.dir / "token-signer.crt"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer._answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlsplit(h.path).query)
        auth = h.headers.get("Authorization") or ""
        user = ""
        if auth.startswith("Basic "):
            u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            if (u, p) != (USER, PASSWORD):
                self.requests.append({"user": u, "scopes": query.get("scope", []), "status": 401})
                h.send_response(401)
                h.send_header("Content-Type", "application/json")
                h.end_headers()
                h.wfile.write(b'{"details":"incorrect username or password"}')
                return
            user = u
        scopes = query.get("scope", [])
        self.requests.append({"user": user, "scopes": scopes, "status": 200})
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if user == USER and a in ("pull", "push")]
            access.append({"type": kind, "name": name, "actions": granted})
        token = self.sign(user, access)
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.end_headers()
        h.wfile.write(json.dumps({"token": token, "expires_in": 300}).encode())

    def sign(self, subject: str, access: list[dict[str, Any]]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {
            "iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 300, "nbf": now - 10,
            "iat": now, "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(sig)}"


# -- images ---------------------------------------------------------------------------------------


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Layout:
    path: Path
    tag: str
    manifest_digest: str
    config_digest: str
    layer_digests: list[str]
    index_digest: str | None = None


def oci_layout(
    dest: Path,
    tag: str,
    layers: list[dict[str, bytes]],
    archs: tuple[str, ...] = ("amd64",),
    base: bytes | None = None,
) -> Layout:
    """An OCI layout with one image (or an index of one per arch when several are given). ``base``
    is an uncompressed rootfs tar put first (e.g. busybox), so the image runs."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / digest[7:]).write_bytes(data)
        return digest

    tars = ([base] if base is not None else []) + [_tar_bytes(files) for files in layers]
    layer_descs, diff_ids = [], []
    for t in tars:
        gz = gzip.compress(t, compresslevel=1, mtime=0)
        layer_descs.append({"mediaType": OCI_LAYER_GZIP, "digest": put(gz), "size": len(gz)})
        diff_ids.append("sha256:" + hashlib.sha256(t).hexdigest())
    manifests = []
    first: tuple[str, str] | None = None
    for arch in archs:
        config = {
            "created": "2024-01-01T00:00:00Z", "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"registry_fixtures layer {i}"} for i in range(len(tars))],
        }  # fmt: skip
        cbytes = json.dumps(config).encode()
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": put(cbytes), "size": len(cbytes)},
            "layers": layer_descs,
        }  # fmt: skip
        mbytes = json.dumps(manifest).encode()
        mdigest = put(mbytes)
        if first is None:
            first = (mdigest, "sha256:" + hashlib.sha256(cbytes).hexdigest())
        manifests.append(
            {"mediaType": OCI_MANIFEST, "digest": mdigest, "size": len(mbytes),
             "platform": {"architecture": arch, "os": "linux"}}
        )  # fmt: skip
    assert first is not None
    index_digest = None
    if len(archs) > 1:
        inner = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        ibytes = json.dumps(inner).encode()
        index_digest = put(ibytes)
        top = [{"mediaType": OCI_INDEX, "digest": index_digest, "size": len(ibytes)}]
    else:
        top = [{k: v for k, v in manifests[0].items() if k != "platform"}]
    top[0]["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": top}))
    return Layout(dest, tag, first[0], first[1], [x["digest"] for x in layer_descs], index_digest)
