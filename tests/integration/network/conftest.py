"""Network tests: the engine tests' fixtures (own roots, a busybox image, force-rm at the end), plus
subnets that no route on the host uses, networks removed at the end, and checks that nothing of the
engine's networks is left on the host (bridges, rules, leases, namespace files)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.net import free_subnet  # noqa: F401 - the network tests import it from here
from tests.integration.engine.conftest import Pallet, busybox_tar, make_pallet  # noqa: F401

pytestmark = pytest.mark.root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


class NetPallet(Pallet):
    def network(self, suffix: str, *flags: str) -> tuple[str, str]:
        """Create a network named for the test on a free subnet; returns (name, subnet)."""
        name = self.name(suffix)
        for _ in range(5):
            subnet = free_subnet()
            p = self("network", "create", "--subnet", subnet, *flags, name, check=False)
            if p.returncode == 0:
                return name, subnet
            assert "overlaps" in p.stderr, p.stderr  # a parallel test took it between check and create
        raise AssertionError("could not create a network")

    def host_state(self) -> list[str]:
        """What of this engine's networks exists on the host: bridge links, filter and nat rules that
        name a network or container, leases and namespace files."""
        import sqlite3

        found: list[str] = []
        db = self.root / "engine" / "networks.db"
        nets: list[tuple[str, str]] = []
        if db.exists():
            con = sqlite3.connect(db)
            import json

            nets = [
                (r[0], json.loads(r[1]).get("Bridge", ""))
                for r in con.execute("SELECT id, config FROM networks")
            ]
            con.close()
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        for nid, br in nets:
            if br and f": {br}:" in links:
                found.append(f"link {br}")
            if "pallet-" + nid[:12] in rules or "PALLET-" + nid[:12] in rules:
                found.append(f"rules of network {nid[:12]}")
        for cid in self("ps", "-aq", "--no-trunc", check=False).stdout.split():
            if cid in rules:
                found.append(f"rules of container {cid[:12]}")
        ipam = self.root / "network" / "ipam"
        if ipam.is_dir():
            found += [f"lease {p}" for p in ipam.rglob("*") if p.is_file() and p.name[0].isdigit()]
        netns = self.runroot / "netns"
        if netns.is_dir():
            found += [f"netns {p}" for p in netns.iterdir()]
        return found

    def cleanup(self) -> None:
        super().cleanup()
        for n in self("network", "ls", "-q", "--filter", "type=custom", check=False).stdout.split():
            self("network", "rm", n, check=False)

    def force_cleanup(self) -> None:
        """After a failure the engine could not undo: every recorded bridge and its rules, by record."""
        import json
        import sqlite3

        from pallet.engine.network import bridge

        db = self.root / "engine" / "networks.db"
        if db.exists():
            con = sqlite3.connect(db)
            for nid, conf in con.execute("SELECT id, config FROM networks"):
                if json.loads(conf).get("Bridge"):
                    bridge.delete(nid, json.loads(conf)["Bridge"])
            con.close()


@pytest.fixture
def net(workdir: Path, token: str, busybox_tar: Path, leakcheck: None) -> Iterator[NetPallet]:  # noqa: F811
    gen = make_pallet(workdir, token, busybox_tar, "pallet-runtime")
    base = next(gen)
    p = NetPallet(workdir, token)
    p.root, p.runroot = base.root, base.runroot
    try:
        yield p
    finally:
        p.cleanup()
        left = p.host_state()
        if left:
            p.force_cleanup()  # then fail: the engine should have removed it all
        try:
            next(gen)
        except StopIteration:
            pass
        assert not left, f"left on the host: {left}"


HTTPD = "mkdir -p /www && echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"
