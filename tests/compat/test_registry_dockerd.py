"""dockerd as the registry oracle: what Pallet pushes, docker pulls with the same image ID and repo
digest and runs; what docker pushes, Pallet pulls with the same image ID. One private containerd and
dockerd (temporary roots, no bridge, no iptables) and one plain-HTTP docker-registry per module."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import Daemon, dockerd_argv, need, peer_dir, start_containerd
from tests.compat.registry_fixtures import Registry, start_registry
from tests.compat.test_registry import Pallet

pytestmark = [pytest.mark.compat, pytest.mark.root, pytest.mark.xdist_group("dockerd")]


class Docker:
    def __init__(self, d: Path) -> None:
        self.env = dict(os.environ, DOCKER_CONFIG=str(d / "cli"), DOCKER_HOST=f"unix://{d}/docker.sock")

    def __call__(self, *args: str) -> str:
        p = subprocess.run(["docker", *args], capture_output=True, text=True, env=self.env, timeout=120)
        assert p.returncode == 0, f"docker {args}: {p.stderr}"
        return p.stdout


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    with start_registry("plain") as reg:
        yield reg


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    need("dockerd", "docker", "containerd", "containerd-shim-runc-v2", "runc")
    with peer_dir("reg-dockerd") as d:
        containerd, sock = start_containerd(d)
        dockerd = None
        try:
            dockerd = Daemon(dockerd_argv(d, sock), d / "dockerd.log")
            dockerd.wait_for_socket(d / "docker.sock", timeout=60)
            yield Docker(d)
        finally:
            if dockerd is not None:
                dockerd.stop()
            containerd.stop()


def test_pallet_push_docker_pull_and_run(
    registry: Registry, docker: Docker, workdir: Path, busybox_tar: Path
) -> None:
    pallet = Pallet(workdir)
    ref = f"{registry.host}/pallet/bb:v1"
    image_id = pallet.ok("import", str(busybox_tar), ref).strip()
    manifest = pallet.inspect(ref)["Descriptor"]["digest"]
    pallet.ok("push", ref)
    docker("pull", ref)
    info = json.loads(docker("image", "inspect", ref))[0]
    assert info["Id"] == image_id
    assert f"{registry.host}/pallet/bb@{manifest}" in info["RepoDigests"]
    assert docker("run", "--rm", "--network", "none", ref, "echo", "ran") == "ran\n"


def test_docker_push_pallet_pull(
    registry: Registry, docker: Docker, workdir: Path, busybox_tar: Path
) -> None:
    ref = f"{registry.host}/docker/bb:v2"
    docker("import", str(busybox_tar), ref)
    docker("push", ref)
    docker_id = json.loads(docker("image", "inspect", ref))[0]["Id"]
    pallet = Pallet(workdir)
    out = pallet.ok("pull", ref)
    assert f"Status: Downloaded newer image for {ref}" in out
    assert pallet.inspect(ref)["Id"] == docker_id
