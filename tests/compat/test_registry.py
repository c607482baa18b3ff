"""Pull, push, login and logout against Debian's docker-registry, with skopeo (and dockerd, in
test_registry_dockerd.py) as the oracles: what skopeo pushed Pallet pulls with the same IDs, what
Pallet pushed skopeo reads with the same manifest digest; every failure is one line, exit 125, and
leaves no tag, no image and no partial ingest (except the resumable one of a cut-off download).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.compat.registry_fixtures import (
    PASSWORD,
    USER,
    Layout,
    Registry,
    free_port,
    oci_layout,
    start_registry,
)

pytestmark = [pytest.mark.compat, pytest.mark.root]
PALLET = Path(sys.executable).parent / "pallet"


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    for tool in ("skopeo", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: {tool})")


@pytest.fixture(scope="module")
def plain() -> Iterator[Registry]:
    with start_registry("plain") as reg:
        yield reg


@pytest.fixture(scope="module")
def basic() -> Iterator[Registry]:
    with start_registry("basic") as reg:
        yield reg


@pytest.fixture(scope="module")
def tokenreg() -> Iterator[Registry]:
    with start_registry("token") as reg:
        yield reg


class Pallet:
    """The pallet CLI on its own root, with its own docker config dir."""

    def __init__(self, d: Path) -> None:
        self.root = d / "root"
        self.runroot = d / "run"
        self.config = d / "docker-config"
        self.env = dict(os.environ, DOCKER_CONFIG=str(self.config))

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PALLET), "--root", str(self.root), "--runroot", str(self.runroot), *args],
            capture_output=True,
            text=True,
            env=self.env,
            input=stdin,
            timeout=120,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        p = self(*args, stdin=stdin)
        assert p.returncode == 0, f"pallet {args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}"
        return p.stdout

    def fails(self, *args: str, want: str, stdin: str | None = None) -> str:
        """One error line naming ``want``, exit 125."""
        p = self(*args, stdin=stdin)
        assert p.returncode == 125, f"pallet {args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}"
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), p.stderr
        assert want in lines[0], p.stderr
        return lines[0]

    def inspect(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.ok("image", "inspect", name))[0])

    def ingests(self) -> list[Path]:
        d = self.root / "content" / "ingest"
        return sorted(d.iterdir()) if d.exists() else []

    def ingest_refs(self) -> list[str]:
        return sorted((i / "ref").read_text() for i in self.ingests())

    def assert_clean(self) -> None:
        """No image, no tag, no partial download."""
        assert self.ok("images", "-q") == ""
        assert self.ingests() == []


@pytest.fixture
def pallet(workdir: Path) -> Pallet:
    return Pallet(workdir)


def skopeo(*args: str) -> str:
    p = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"skopeo {args}: {p.stderr}"
    return p.stdout


def skopeo_push(layout: Layout, dest: str, *flags: str) -> None:
    skopeo(
        "copy",
        "--all",
        "--dest-tls-verify=false",
        *flags,
        f"oci:{layout.path}:{layout.tag}",
        f"docker://{dest}",
    )


@pytest.fixture(scope="module")
def busybox_layer(busybox_tar: Path) -> bytes:
    return busybox_tar.read_bytes()


def make_layout(d: Path, tag: str, base: bytes, n: int = 2, archs: tuple[str, ...] = ("amd64",)) -> Layout:
    layers = [{f"data/{tag}-{i}.bin": os.urandom(200_000 + i)} for i in range(n)]
    return oci_layout(d / f"layout-{tag}", tag, layers, archs, base or None)


# -- round trips ----------------------------------------------------------------------------------


def test_skopeo_push_pallet_pull(
    plain: Registry, pallet: Pallet, workdir: Path, busybox_layer: bytes
) -> None:
    layout = make_layout(workdir, "latest", busybox_layer)
    skopeo_push(layout, f"{plain.host}/rt/bb:latest")
    out = pallet.ok("pull", f"{plain.host}/rt/bb")
    lines = out.splitlines()
    assert lines[0] == "Using default tag: latest"
    assert lines[1] == "latest: Pulling from rt/bb"
    for digest in layout.layer_digests:
        assert f"{digest[7:19]}: Pull complete" in lines
    assert f"Digest: {layout.manifest_digest}" in lines
    assert f"Status: Downloaded newer image for {plain.host}/rt/bb:latest" in lines
    assert lines[-1] == f"{plain.host}/rt/bb:latest"

    info = pallet.inspect(f"{plain.host}/rt/bb")
    config = json.loads((layout.path / "blobs/sha256" / layout.config_digest[7:]).read_bytes())
    assert info["Id"] == layout.config_digest
    assert info["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]  # unpacked and verified
    assert info["Descriptor"]["digest"] == layout.manifest_digest
    assert info["RepoTags"] == [f"{plain.host}/rt/bb:latest"]
    assert pallet.ingests() == []
    # it runs, with the pulled layers' files in place
    run = pallet.ok(
        "run", "--rm", "--network", "none", f"{plain.host}/rt/bb", "sh", "-c", "wc -c < /data/latest-1.bin"
    )
    assert run.strip() == "200001"

    again = pallet.ok("pull", f"{plain.host}/rt/bb:latest")
    assert f"Status: Image is up to date for {plain.host}/rt/bb:latest" in again
    for digest in layout.layer_digests:
        assert f"{digest[7:19]}: Already exists" in again
    assert pallet.ok("pull", "-q", f"{plain.host}/rt/bb:latest") == f"{plain.host}/rt/bb:latest\n"

    # by digest: no tag is made, the image is the same
    out = pallet.ok("pull", f"{plain.host}/rt/bb@{layout.manifest_digest}")
    assert f"{layout.manifest_digest}: Pulling from rt/bb" in out
    assert pallet.inspect(f"{plain.host}/rt/bb@{layout.manifest_digest}")["Id"] == layout.config_digest


def test_concurrent_pulls_share_one_store(plain: Registry, pallet: Pallet, workdir: Path) -> None:
    layout = make_layout(workdir, "conc", b"", n=3)
    skopeo_push(layout, f"{plain.host}/rt/conc:v1")
    procs = [
        subprocess.Popen(
            [str(PALLET), "--root", str(pallet.root), "pull", "-q", f"{plain.host}/rt/conc:v1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=pallet.env,
        )
        for _ in range(3)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert pallet.ok("images", "-q", "--no-trunc").split() == [layout.config_digest]
    assert pallet.ingests() == []


def test_index_platform_selection(plain: Registry, pallet: Pallet, workdir: Path) -> None:
    layout = make_layout(workdir, "multi", b"", n=1, archs=("amd64", "arm64"))
    skopeo_push(layout, f"{plain.host}/rt/multi:v1")
    out = pallet.ok("pull", "--platform", "linux/arm64", f"{plain.host}/rt/multi:v1")
    assert f"Digest: {layout.index_digest}" in out  # what the tag names: the index
    assert pallet.inspect(f"{plain.host}/rt/multi:v1")["Architecture"] == "arm64"
    pallet.fails(
        "pull", "--platform", "linux/s390x", f"{plain.host}/rt/multi:v1", want="no manifest for platform"
    )
    assert pallet.inspect(f"{plain.host}/rt/multi:v1")["Architecture"] == "arm64"  # the tag did not move


def test_pallet_push_skopeo_pull(plain: Registry, pallet: Pallet, workdir: Path, busybox_tar: Path) -> None:
    image_id = pallet.ok("import", str(busybox_tar), f"{plain.host}/mine/bb:v1").strip()
    manifest = pallet.inspect(image_id)["Descriptor"]["digest"]
    out = pallet.ok("push", f"{plain.host}/mine/bb:v1")
    assert out.startswith(f"The push refers to repository [{plain.host}/mine/bb]\n")
    assert ": Pushed\n" in out
    assert out.splitlines()[-1].startswith(f"v1: digest: {manifest} size: ")
    raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{plain.host}/mine/bb:v1")
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == manifest
    skopeo("copy", "--src-tls-verify=false", f"docker://{plain.host}/mine/bb:v1", f"dir:{workdir / 'sk'}")
    copied = (workdir / "sk" / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(copied).hexdigest() == manifest  # skopeo got every byte, verified

    # pushed again: every blob is already there; another repository: mounted, not uploaded
    assert out.count(": Pushed") == 1
    again = pallet.ok("push", f"{plain.host}/mine/bb:v1")
    assert ": Layer already exists" in again and ": Pushed" not in again
    pallet.ok("tag", f"{plain.host}/mine/bb:v1", f"{plain.host}/other/bb:v2")
    moved = pallet.ok("push", f"{plain.host}/other/bb:v2")
    assert ": Mounted from mine/bb" in moved and ": Pushed" not in moved
    assert moved.splitlines()[-1].startswith(f"v2: digest: {manifest} ")

    # pulled back into a fresh root: the same image
    other = Pallet(workdir / "second")
    other.ok("pull", f"{plain.host}/other/bb:v2")
    assert other.inspect(f"{plain.host}/other/bb:v2")["Id"] == image_id


def test_pulled_image_pushed_keeps_digests(plain: Registry, pallet: Pallet, workdir: Path) -> None:
    """Chunked upload (PATCH) of what skopeo pushed and Pallet pulled: the same manifest digest."""
    layout = make_layout(workdir, "chunk", b"", n=2)
    skopeo_push(layout, f"{plain.host}/src/chunk:v1")
    pallet.ok("pull", f"{plain.host}/src/chunk:v1")
    pallet.ok("tag", f"{plain.host}/src/chunk:v1", f"{plain.host}/dst/chunk:v1")
    # no source known for the new repository: clear it so the blobs are uploaded, in 64 KiB chunks
    (pallet.root / "image" / "sources.db").unlink()
    for suffix in ("-wal", "-shm"):
        (pallet.root / "image" / f"sources.db{suffix}").unlink(missing_ok=True)
    out = pallet.ok("push", "--chunk-size", str(64 << 10), f"{plain.host}/dst/chunk:v1")
    assert out.count(": Pushed") == 2
    assert out.splitlines()[-1].startswith(f"v1: digest: {layout.manifest_digest} ")
    raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{plain.host}/dst/chunk:v1")
    assert json.loads(raw)["layers"][0]["digest"] == layout.layer_digests[0]


# -- authentication ---------------------------------------------------------------------------------


def test_basic_auth_over_tls(basic: Registry, pallet: Pallet, workdir: Path) -> None:
    assert basic.ca is not None
    layout = make_layout(workdir, "tls", b"", n=1)
    skopeo_push(layout, f"{basic.host}/auth/img:v1", "--dest-creds", f"{USER}:{PASSWORD}")
    ref = f"{basic.host}/auth/img:v1"

    # the test CA is not trusted yet
    line = pallet.fails("login", "-u", USER, "--password-stdin", basic.host, want="tls: ", stdin=PASSWORD)
    assert f"certs.d/{basic.host}/ca.crt" in line, line
    pallet.fails("pull", ref, want="tls: ")
    print(line)
    certs = pallet.root / "certs.d" / basic.host
    certs.mkdir(parents=True)
    (certs / "ca.crt").write_bytes(basic.ca.read_bytes())

    p = pallet("login", "-u", USER, "--password-stdin", basic.host, stdin="wrong\n")
    assert p.returncode == 125 and "incorrect username or password" in p.stderr
    assert not (pallet.config / "config.json").exists()
    pallet.fails("pull", ref, want="unauthorized: authentication required")
    pallet.assert_clean()

    assert (
        pallet.ok("login", "-u", USER, "--password-stdin", basic.host, stdin=PASSWORD + "\n")
        == "Login Succeeded\n"
    )
    auths = json.loads((pallet.config / "config.json").read_text())["auths"]
    assert list(auths) == [basic.host]
    assert (pallet.config / "config.json").stat().st_mode & 0o077 == 0
    pallet.ok("pull", ref)
    assert pallet.inspect(ref)["Id"] == layout.config_digest

    # --tls-verify=false: no CA needed (the certs.d entry is moved away)
    certs.rename(certs.with_name("away"))
    pallet.ok("rmi", ref)
    pallet.ok("pull", "--tls-verify=false", ref)

    assert pallet.ok("logout", basic.host) == f"Removing login credentials for {basic.host}\n"
    assert pallet.ok("logout", basic.host) == f"Not logged in to {basic.host}\n"
    pallet.fails("push", "--tls-verify=false", ref, want="unauthorized")


def test_token_auth_and_reuse(tokenreg: Registry, pallet: Pallet, workdir: Path) -> None:
    token = tokenreg
    issuer = token.issuer
    assert issuer is not None
    layout = make_layout(workdir, "tok", b"", n=4)
    skopeo_push(layout, f"{token.host}/tok/img:v1", "--dest-creds", f"{USER}:{PASSWORD}")
    ref = f"{token.host}/tok/img:v1"

    pallet.fails("pull", ref, want="unauthorized")  # anonymous tokens grant nothing
    pallet.assert_clean()
    p = pallet("login", "-u", USER, "-p", "nope", token.host)
    assert p.returncode == 125 and "incorrect username or password" in p.stderr
    pallet.ok("login", "-u", USER, "--password-stdin", token.host, stdin=PASSWORD)

    issuer.requests.clear()
    pallet.ok("pull", ref)
    # one token for the pull scope, reused by the manifest and five blob requests
    assert [r["scopes"] for r in issuer.requests] == [["repository:tok/img:pull"]]
    assert all(r["user"] == USER for r in issuer.requests)

    issuer.requests.clear()
    pallet.ok("tag", ref, f"{token.host}/tok/copy:v1")
    out = pallet.ok("push", f"{token.host}/tok/copy:v1")
    assert out.count(": Mounted from tok/img") == 4
    scopes = [tuple(r["scopes"]) for r in issuer.requests]
    # one token per scope set, even with five uploads running at once
    assert sorted(scopes) == sorted(set(scopes)), scopes
    assert ("repository:tok/copy:pull,push", "repository:tok/img:pull") in scopes


# -- failures -----------------------------------------------------------------------------------------


def test_errors_one_line_nothing_left(plain: Registry, pallet: Pallet) -> None:
    pallet.fails("pull", "x/UPPER", want='invalid reference "x/UPPER": repository name must be lowercase')
    pallet.fails("pull", "bad::ref", want="invalid reference format")
    pallet.fails("pull", "nohost.invalid/x/y:1", want='registry "nohost.invalid": cannot resolve host')
    port = free_port()
    pallet.fails("pull", f"127.0.0.1:{port}/x/y:1", want=f'registry "127.0.0.1:{port}": connection refused')
    pallet.fails(
        "pull",
        f"{plain.host}/none/such:v9",
        want=f'manifest for "{plain.host}/none/such:v9" not found: manifest unknown',
    )
    pallet.fails("push", f"{plain.host}/none/such:v9", want="not found")
    pallet.assert_clean()


def test_tampered_blob_is_refused(plain: Registry, pallet: Pallet, workdir: Path) -> None:
    layout = make_layout(workdir, "tamper", b"", n=2)
    skopeo_push(layout, f"{plain.host}/evil/img:v1")
    blob = plain.blob_path(layout.layer_digests[1])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    blob.write_bytes(bytes(data))
    line = pallet.fails("pull", f"{plain.host}/evil/img:v1", want="digest mismatch")
    assert layout.layer_digests[1] in line
    assert pallet.ok("images", "-q") == ""
    # the bad blob's ingest is gone; the good layer's download, stopped by the failure, may stay to resume
    assert set(pallet.ingest_refs()) <= {layout.layer_digests[0]}
    assert not (pallet.root / "content" / "blobs" / "sha256" / layout.layer_digests[1][7:]).exists()


class CuttingProxy:
    """Forwards to a registry; blob GETs are cut at byte ``cut_at`` of the blob ``cuts`` times per
    blob (then passed whole). Records each blob request's Range header."""

    def __init__(self, upstream: str, cut_at: int, cuts: int) -> None:
        self.upstream = upstream
        self.cut_at = cut_at
        self.cuts = cuts
        self.done: dict[str, int] = {}
        self.ranges: list[tuple[str, str | None]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy.forward(self)

            def do_HEAD(self) -> None:
                proxy.forward(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(h.command, h.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        blob = "/blobs/sha256:" in h.path and h.command == "GET"
        if blob:
            self.ranges.append((h.path.rsplit("/", 1)[1], h.headers.get("Range")))
        h.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "date", "server"):
                h.send_header(k, v)
        h.end_headers()
        key = h.path
        start = int((h.headers.get("Range") or "bytes=0-")[6:].split("-")[0])
        if blob and start + len(body) > self.cut_at and self.done.get(key, 0) < self.cuts:
            self.done[key] = self.done.get(key, 0) + 1
            h.wfile.write(body[: max(self.cut_at - start, 0)])
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        if h.command != "HEAD":
            h.wfile.write(body)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_cut_downloads_resume(plain: Registry, pallet: Pallet, workdir: Path) -> None:
    layout = make_layout(workdir, "cut", b"", n=2)
    skopeo_push(layout, f"{plain.host}/cut/img:v1")
    big = layout.layer_digests[0]

    # cut once per blob: the pull resumes in place with a Range request and succeeds
    proxy = CuttingProxy(plain.host, cut_at=50_000, cuts=1)
    try:
        pallet.ok("pull", f"{proxy.host}/cut/img:v1")
    finally:
        proxy.stop()
    assert (big, "bytes=50000-") in proxy.ranges
    assert pallet.inspect(f"{proxy.host}/cut/img:v1")["Id"] == layout.config_digest
    assert pallet.ingests() == []

    # cut every time: one clear error, nothing tagged, the partial blob kept for a later pull
    other = Pallet(workdir / "other")
    proxy = CuttingProxy(plain.host, cut_at=70_000, cuts=100)
    try:
        line = other.fails("pull", f"{proxy.host}/cut/img:v1", want="closed the connection")
    finally:
        proxy.stop()
    assert "kept to resume from" in line
    assert other.ok("images", "-q") == ""
    assert other.ingests() != []
    proxy = CuttingProxy(plain.host, cut_at=1 << 30, cuts=0)
    try:
        other.ok("pull", f"{proxy.host}/cut/img:v1")
    finally:
        proxy.stop()
    assert ("bytes=70000-") in [r for _, r in proxy.ranges]  # picked up where the last pull stopped
    assert other.ingests() == []
