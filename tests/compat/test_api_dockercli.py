"""The docker CLI against `pallet system service`: Debian's docker.io client (API 1.41) and the newer
client (negotiated down to 1.44), each through the same core tests; the rest with one client."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.api_service import IMAGE, ApiService, api_service

CLIENTS = [c for c in ("/usr/bin/docker", "/usr/local/bin/docker") if os.path.exists(c)]
pytestmark = [pytest.mark.root]
if not CLIENTS:
    pytestmark.append(pytest.mark.skip(reason="no docker CLI (Debian docker.io)"))


@pytest.fixture(scope="module")
def svc(busybox_tar: Path) -> Iterator[ApiService]:
    yield from api_service("api-cli")


class Docker:
    def __init__(self, exe: str, svc: ApiService) -> None:
        self.exe, self.svc = exe, svc
        self.env = os.environ | {"DOCKER_CONFIG": str(svc.dir / f"config-{Path(exe).parent.name}")}
        self.env.pop("DOCKER_HOST", None)

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [self.exe, "-H", self.svc.url, *args],
            capture_output=True,
            text=True,
            input=input,
            env=self.env,
            timeout=timeout,
        )
        if check and p.returncode != 0:
            pytest.fail(f"docker {' '.join(args)}: {p.returncode}\n{p.stderr}\n{self.svc.daemon.log_tail()}")
        return p


@pytest.fixture(scope="module")
def image(svc: ApiService, busybox_tar: Path) -> str:
    """busybox imported through the API (POST /images/create?fromSrc=-) by the first client."""
    Docker(CLIENTS[0], svc)("import", str(busybox_tar), IMAGE)
    return IMAGE


@pytest.fixture(params=CLIENTS, ids=lambda c: Path(c).parent.name)
def docker(request: pytest.FixtureRequest, svc: ApiService, image: str) -> Docker:
    return Docker(request.param, svc)


@pytest.fixture
def newest(svc: ApiService, image: str) -> Docker:
    return Docker(CLIENTS[-1], svc)


# -- core, with both clients ---------------------------------------------------------------------------------


def test_version_and_info(docker: Docker) -> None:
    out = json.loads(docker("version", "--format", "{{json .}}").stdout)
    assert out["Server"]["ApiVersion"] == "1.44" and out["Server"]["MinAPIVersion"] == "1.24"
    assert out["Server"]["Os"] == "linux"
    assert docker("info", "--format", "{{.OSType}} {{.LoggingDriver}}").stdout.strip() == "linux json-file"


def test_run_output_and_exit_codes(docker: Docker) -> None:
    p = docker("run", "--rm", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (p.returncode, p.stdout, p.stderr.strip()) == (3, "out\n", "err")
    p = docker("run", "--rm", IMAGE, "/nonexistent", check=False)
    assert p.returncode == 127


def test_run_interactive_stdin(docker: Docker) -> None:
    p = docker("run", "--rm", "-i", IMAGE, "sh", "-c", "tr a-z A-Z; exit 4", input="hello\n", check=False)
    assert (p.returncode, p.stdout) == (4, "HELLO\n")


def test_run_tty(docker: Docker) -> None:
    p = docker("run", "--rm", "-t", IMAGE, "sh", "-c", "tty")
    assert p.stdout.strip().startswith("/dev/pts/")


def test_detached_logs_follow_exec(docker: Docker) -> None:
    cid = docker("run", "-d", IMAGE, "sh", "-c", "echo one; sleep 1; echo two").stdout.strip()
    try:
        p = docker("logs", "-f", cid)  # ends when the container does
        assert p.stdout == "one\ntwo\n"
        ts = docker("logs", "-t", "--tail", "1", cid).stdout
        assert ts.endswith(" two\n") and ts[:4].isdigit()
    finally:
        docker("rm", "-f", cid)
    cid = docker("run", "-d", IMAGE, "sleep", "60").stdout.strip()
    try:
        p = docker("exec", cid, "sh", "-c", "echo in; echo e >&2; exit 5", check=False)
        assert (p.returncode, p.stdout, p.stderr) == (5, "in\n", "e\n")
        p = docker("exec", "-i", cid, "cat", input="piped\n")
        assert p.stdout == "piped\n"
        assert docker("exec", cid, "/nonexistent", check=False).returncode == 127
    finally:
        docker("rm", "-f", cid)


# -- the rest, with the newest client ----------------------------------------------------------------------------


def test_cp_both_ways(newest: Docker, tmp_path: Path) -> None:
    d = newest
    cid = d("run", "-d", IMAGE, "sleep", "60").stdout.strip()
    try:
        (tmp_path / "up.txt").write_text("from host\n")
        d("cp", str(tmp_path / "up.txt"), f"{cid}:/tmp/")
        d("cp", str(tmp_path / "up.txt"), f"{cid}:/tmp/renamed.txt")
        assert d("exec", cid, "cat", "/tmp/up.txt", "/tmp/renamed.txt").stdout == "from host\n" * 2
        d("exec", cid, "sh", "-c", "mkdir -p /data/sub && echo x > /data/sub/f")
        d("cp", f"{cid}:/data", str(tmp_path / "down"))
        assert (tmp_path / "down" / "sub" / "f").read_text() == "x\n"
        p = d("cp", f"{cid}:/nope", str(tmp_path), check=False)
        assert p.returncode != 0 and "Could not find the file /nope" in p.stderr
        # a link in the container resolves in the container's root, never the host's
        d("exec", cid, "ln", "-s", str(tmp_path), "/escape")
        p = d("cp", f"{cid}:/escape/up.txt", str(tmp_path / "leak"), check=False)
        assert p.returncode != 0 and not (tmp_path / "leak").exists()
        src = tmp_path / "src"
        src.mkdir()
        (src / "planted").write_text("x")
        p = d("cp", str(src / "planted"), f"{cid}:/escape/", check=False)
        assert p.returncode != 0 and not (tmp_path / "planted").exists()
    finally:
        d("rm", "-f", cid)


def test_stop_kill_restart_pause_and_ps(newest: Docker) -> None:
    d = newest
    name = "api-lifecycle"
    d("run", "-d", "--name", name, "--label", "team=api", IMAGE, "sleep", "60")
    try:
        assert (
            d("ps", "--filter", "label=team=api", "--format", "{{.Names}} {{.State}}").stdout
            == f"{name} running\n"
        )
        d("pause", name)
        assert d("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "paused"
        d("unpause", name)
        d("kill", name)
        assert d("wait", name).stdout.strip() == "137"
        assert d("ps", "-a", "--filter", "status=exited", "--filter", f"name={name}", "-q").stdout.strip()
        d("restart", "-t", "1", name)
        assert d("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"
        t0 = time.monotonic()
        d("stop", "-t", "1", name)
        assert time.monotonic() - t0 < 10
        assert d("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "137"
        d("rename", name, name + "-2")
        assert d("inspect", "-f", "{{.Name}}", name + "-2").stdout.strip() == "/" + name + "-2"
    finally:
        d("rm", "-f", name, name + "-2", check=False)


def test_inspect_top_stats(newest: Docker) -> None:
    d = newest
    cid = d("run", "-d", "-e", "A=1", "-w", "/tmp", IMAGE, "sleep", "60").stdout.strip()
    try:
        info = json.loads(d("inspect", cid).stdout)[0]
        assert info["Id"] == cid and info["State"]["Running"] and info["State"]["Pid"] > 0
        assert "A=1" in info["Config"]["Env"] and info["Config"]["WorkingDir"] == "/tmp"
        assert info["Config"]["Cmd"] == ["sleep", "60"] and info["Config"]["Image"] == IMAGE
        assert "sleep 60" in d("top", cid).stdout
        row = d("stats", "--no-stream", "--format", "{{.ID}} {{.PIDs}} {{.MemUsage}}", cid).stdout.split()
        assert row[0] == cid[:12] and row[1] == "1" and "iB" in row[2]
    finally:
        d("rm", "-f", cid)


def test_events_since_until(newest: Docker) -> None:
    d = newest
    since = str(int(time.time()) - 1)
    d("run", "--rm", "--name", "api-events", IMAGE, "true")
    until = str(int(time.time()) + 1)
    out = d("events", "--since", since, "--until", until, "--filter", "container=api-events",
            "--format", "{{.Action}}").stdout.split()  # fmt: skip
    assert out[:3] == ["create", "start", "die"] and "destroy" in out


def test_images_tag_save_load_rmi(newest: Docker, tmp_path: Path) -> None:
    d = newest
    d("tag", IMAGE, "api-copy:v1")
    assert "api-copy:v1" in d("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert d("image", "inspect", "-f", "{{.Os}}", "api-copy:v1").stdout.strip() == "linux"
    assert d("history", "-q", "api-copy:v1").stdout.strip()
    d("save", "-o", str(tmp_path / "img.tar"), "api-copy:v1")
    assert "Untagged: api-copy:v1" in d("rmi", "api-copy:v1").stdout
    assert "Loaded image: api-copy:v1" in d("load", "-i", str(tmp_path / "img.tar")).stdout
    d("rmi", "api-copy:v1")


def test_errors(newest: Docker) -> None:
    d = newest
    p = d("inspect", "--type", "container", "no-such-ctr", check=False)
    assert p.returncode == 1 and "No such container: no-such-ctr" in p.stderr
    p = d("rmi", "no-such-image", check=False)
    assert p.returncode == 1 and "No such image: no-such-image" in p.stderr
    p = d("run", "--rm", "no-such-image", check=False)
    assert p.returncode == 125
    d("create", "--name", "api-dup", IMAGE, "true")
    try:
        p = d("run", "--name", "api-dup", IMAGE, "true", check=False)
        assert p.returncode == 125 and "is already in use" in p.stderr
        p = d("network", "inspect", "no-such-net", check=False)
        assert p.returncode == 1 and "no-such-net" in p.stderr
    finally:
        d("rm", "api-dup")


def test_network_volume_name_resolution_and_published_port(newest: Docker) -> None:
    import urllib.request

    d = newest
    net, vol, srv = "api-net", "api-vol", "api-srv"
    d("network", "create", net)
    d("volume", "create", vol)
    try:
        assert net in d("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert vol in d("volume", "ls", "-q").stdout.split()
        d("run", "-d", "--name", srv, "--network", net, "-v", f"{vol}:/data", "-p", "127.0.0.1::80",
          IMAGE, "sh", "-c", "echo hi > /data/www; httpd -f -p 80 -h /data")  # fmt: skip
        p = d("run", "--rm", "--network", net, IMAGE, "wget", "-qO-", f"http://{srv}/www")
        assert p.stdout == "hi\n"
        port = d("port", srv, "80").stdout.strip().rpartition(":")[2]
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/www", timeout=5).read() == b"hi\n"
        info = json.loads(d("inspect", srv).stdout)[0]
        assert info["NetworkSettings"]["Networks"][net]["IPAddress"]
        assert [m["Name"] for m in info["Mounts"]] == [vol]
        p = d("volume", "rm", vol, check=False)
        assert p.returncode != 0 and "in use" in p.stderr
    finally:
        d("rm", "-f", srv, check=False)
        d("volume", "rm", vol, check=False)
        d("network", "rm", net, check=False)
    assert net not in d("network", "ls", "--format", "{{.Name}}").stdout.split()


@pytest.fixture(scope="module")
def registry() -> Iterator[Any]:
    from tests.compat.registry_fixtures import start_registry

    with start_registry("plain") as r:
        yield r


def test_push_pull_local_registry(newest: Docker, registry: Any) -> None:
    d = newest
    ref = f"{registry.host}/api/busybox:v1"
    d("tag", IMAGE, ref)
    p = d("push", ref)
    assert "digest: sha256:" in p.stdout
    d("rmi", ref)
    p = d("pull", ref)
    assert "Downloaded newer image" in p.stdout or "Image is up to date" in p.stdout
    assert d("run", "--rm", ref, "echo", "pulled").stdout == "pulled\n"
    p = d("pull", f"{registry.host}/api/none:v1", check=False)
    assert p.returncode != 0 and p.stderr.strip()
    d("rmi", ref)


COMPOSE = """\
version: "3"
services:
  web:
    image: pallet-busybox:latest
    command: sh -c "echo hi > /data/index.html; httpd -f -p 80 -h /data"
    volumes: [data:/data]
    networks: [back]
  client:
    image: pallet-busybox:latest
    command: sh -c "until wget -qO- http://web/index.html; do sleep 0.2; done; sleep 60"
    depends_on: [web]
    networks: [back]
networks:
  back: {}
volumes:
  data: {}
"""


def test_compose_two_services_network_volume(newest: Docker, tmp_path: Path) -> None:
    import shutil

    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (Debian: docker-compose)")
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    env = newest.env | {"DOCKER_HOST": newest.svc.url}

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([exe, "-p", "apicompose", *args], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
        assert p.returncode == 0, p.stderr
        return p

    try:
        compose("up", "-d")
        names = newest("ps", "--format", "{{.Names}}").stdout.split()
        assert sorted(names) == ["apicompose_client_1", "apicompose_web_1"]
        deadline = time.monotonic() + 20
        while "hi" not in newest("logs", "apicompose_client_1").stdout and time.monotonic() < deadline:
            time.sleep(0.2)
        assert newest("logs", "apicompose_client_1").stdout == "hi\n"
    finally:
        compose("down", "-v", "-t", "1")
    assert "apicompose_back" not in newest("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert "apicompose_data" not in newest("volume", "ls", "-q").stdout.split()
    assert newest("ps", "-aq", "--filter", "label=com.docker.compose.project=apicompose").stdout == ""
