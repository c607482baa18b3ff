"""docker-py (PyPI `docker`) against `pallet system service`: the high-level client as scripts and
Testcontainers use it."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.api_service import IMAGE, ApiService, api_service

docker = pytest.importorskip("docker", reason="docker-py is not installed (pip install -e '.[test]')")
pytestmark = [pytest.mark.root]


@pytest.fixture(scope="module")
def svc(busybox_tar: Path) -> Iterator[ApiService]:
    yield from api_service("api-py")


@pytest.fixture(scope="module")
def client(svc: ApiService, busybox_tar: Path) -> Iterator[Any]:
    c = docker.DockerClient(base_url=svc.url, timeout=60)
    with open(busybox_tar, "rb") as f:
        c.api.import_image_from_data(f.read(), repository="pallet-busybox", tag="latest")
    yield c
    c.close()


def test_ping_version_info(client: Any) -> None:
    assert client.ping() is True
    assert client.version()["ApiVersion"] == "1.44"
    assert client.api.api_version == "1.44"  # negotiated by docker-py's "auto"
    assert client.info()["OSType"] == "linux"


def test_run_output_and_exit_codes(client: Any) -> None:
    assert client.containers.run(IMAGE, ["echo", "hello"], remove=True) == b"hello\n"
    with pytest.raises(docker.errors.ContainerError) as e:
        client.containers.run(IMAGE, ["sh", "-c", "echo bad >&2; exit 3"], remove=True)
    assert e.value.exit_status == 3 and b"bad" in e.value.stderr


def test_detached_logs_exec_wait(client: Any) -> None:
    c = client.containers.run(IMAGE, ["sh", "-c", "echo a; sleep 30"], detach=True, labels={"t": "py"})
    try:
        assert c.status in ("created", "running")
        c.reload()
        assert c.status == "running" and c.attrs["Config"]["Labels"] == {"t": "py"}
        deadline = time.monotonic() + 10
        while b"a\n" not in c.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.logs(stdout=True, stderr=False) == b"a\n"
        assert c.exec_run(["sh", "-c", "echo out; exit 6"]) == (6, b"out\n")
        code, (out, err) = c.exec_run(["sh", "-c", "echo o; echo e >&2"], demux=True)
        assert (code, out, err) == (0, b"o\n", b"e\n")
        assert [x.id for x in client.containers.list(filters={"label": "t=py"})] == [c.id]
        top = c.top()
        assert any("sleep 30" in " ".join(p) for p in top["Processes"])
        st = c.stats(stream=False)
        assert st["pids_stats"]["current"] >= 1 and st["memory_stats"]["usage"] > 0
        c.kill()
        assert c.wait()["StatusCode"] == 137
    finally:
        c.remove(force=True)


def test_archive_put_get(client: Any) -> None:
    c = client.containers.run(IMAGE, ["sleep", "30"], detach=True, tmpfs={"/scratch": ""})
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = b"payload\n"
            info = tarfile.TarInfo("dir/file.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        assert c.put_archive("/tmp", buf.getvalue()) is True
        assert c.exec_run(["cat", "/tmp/dir/file.txt"]).output == b"payload\n"
        stream, stat = c.get_archive("/tmp/dir")
        assert stat["name"] == "dir"
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            assert tar.extractfile("dir/file.txt").read() == b"payload\n"  # type: ignore[union-attr]
        with pytest.raises(docker.errors.NotFound):
            c.get_archive("/no/such/path")
        changes = {ch["Path"] for ch in c.diff()}
        assert "/tmp/dir/file.txt" in changes
        # the container's own mounts, as its processes see them (a tmpfs here)
        assert c.put_archive("/scratch", buf.getvalue()) is True
        assert c.exec_run(["cat", "/scratch/dir/file.txt"]).output == b"payload\n"
        stream, stat = c.get_archive("/scratch/dir/file.txt")
        assert stat["name"] == "file.txt" and stat["size"] == len(b"payload\n")
        c.stop(timeout=0)  # stopped: its snapshot, mounted for the call
        stream, stat = c.get_archive("/tmp/dir/file.txt")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            assert tar.extractfile("file.txt").read() == b"payload\n"  # type: ignore[union-attr]
    finally:
        c.remove(force=True)


def test_images_and_errors(client: Any) -> None:
    img = client.images.get(IMAGE)
    assert "pallet-busybox:latest" in img.tags
    assert img.tag("pallet-py", "v1") is True
    assert "pallet-py:v1" in client.images.get("pallet-py:v1").tags
    saved = b"".join(client.images.get("pallet-py:v1").save(named="pallet-py:v1"))
    client.images.remove("pallet-py:v1")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("pallet-py:v1")
    loaded = client.images.load(saved)
    assert "pallet-py:v1" in loaded[0].tags
    client.images.remove("pallet-py:v1")
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("no-such-container")
    c = client.containers.create(IMAGE, ["true"], name="py-dup")
    try:
        with pytest.raises(docker.errors.APIError) as e:
            client.containers.create(IMAGE, ["true"], name="py-dup")
        assert e.value.status_code == 409
        c.start()
        assert c.wait()["StatusCode"] == 0
        client.api.stop(c.id)  # already stopped: no error
        api = client.api
        assert api._post(api._url("/containers/{0}/stop", c.id)).status_code == 304
        assert api._post(api._url("/containers/{0}/start", c.id)).status_code == 204
        c.wait()
    finally:
        c.remove(force=True)


def test_events_stream_is_not_blocked(client: Any) -> None:
    since = int(time.time()) - 1
    c = client.containers.run(IMAGE, ["true"], detach=True, name="py-events")
    c.wait()
    c.remove()
    until = int(time.time()) + 1
    evs = list(client.events(since=since, until=until, decode=True, filters={"container": "py-events"}))
    assert [e["Action"] for e in evs][:3] == ["create", "start", "die"]
    assert evs[-1]["status"] == "destroy"


def test_wait_next_exit_sees_a_start_by_the_cli(svc: ApiService, client: Any) -> None:
    """A wait parked in the service wakes for a start made by another process (`pallet start`), and a
    wait for removal answers once the monitor of an --rm container has removed it."""
    import threading

    c = client.containers.create(IMAGE, ["sh", "-c", "exit 7"])
    got: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: got.update(client.api.wait(c.id, condition="next-exit")), daemon=True
    )
    waiter.start()
    try:
        time.sleep(0.3)  # let the wait park before the start: the start must wake it
        assert "StatusCode" not in got
        p = svc.pallet("start", c.id)
        assert p.returncode == 0, p.stderr
        waiter.join(30)
        assert got.get("StatusCode") == 7
    finally:
        waiter.join(30)
        c.remove(force=True)
    r = client.containers.create(IMAGE, ["sh", "-c", "exit 4"], auto_remove=True)
    r.start()
    assert client.api.wait(r.id, condition="removed")["StatusCode"] == 4
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(r.id)
