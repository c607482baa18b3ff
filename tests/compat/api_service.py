"""`pallet system service` started for a test module in its own roots (a /tmp/pallet-t… directory),
with the busybox image imported through the API itself; torn down even when a test fails: every
container removed through the engine's CLI, the service stopped, then whatever still names the
directory killed and unmounted (tests/compat/conftest.py's teardown)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.compat.conftest import Daemon, peer_dir

PALLET = str(Path(sys.executable).parent / "pallet")
IMAGE = "pallet-busybox:latest"


@dataclass
class ApiService:
    dir: Path
    sock: Path
    daemon: Daemon

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def pallet(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [PALLET, "--root", str(self.dir / "root"), "--runroot", str(self.dir / "run"), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def api_service(label: str) -> Iterator[ApiService]:
    with peer_dir(label) as d:
        sock = d / "docker.sock"
        argv = [PALLET, "--root", str(d / "root"), "--runroot", str(d / "run"), "system", "service"]
        daemon = Daemon([*argv, "--host", f"unix://{sock}"], d / "service.log")
        svc = ApiService(d, sock, daemon)
        try:
            daemon.wait_for_socket(sock)
            yield svc
        finally:
            ids = svc.pallet("ps", "-aq", "--no-trunc").stdout.split()
            if ids:
                svc.pallet("rm", "-f", *ids)
            daemon.stop()
