"""Network records, subnet checks and the files a container gets, without touching the host."""

from __future__ import annotations

from pathlib import Path

import pytest

from pallet.engine.network import BASE_HOSTS, has_sandbox, manager
from pallet.engine.network.manager import Networks, resolv_conf
from pallet.errors import Conflict, InvalidArgument


@pytest.fixture
def nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Networks:
    made: list[str] = []
    monkeypatch.setattr(
        manager.bridge, "create", lambda nid, name, br, gw, prefix, internal, subnet: made.append(br)
    )
    monkeypatch.setattr(manager.bridge, "delete", lambda nid, br: None)
    monkeypatch.setattr(manager.bridge, "link_exists", lambda name: False)
    monkeypatch.setattr(manager.bridge, "host_routes", lambda: ["default", "192.0.2.0/24"])
    monkeypatch.setattr(manager, "LOCK", str(tmp_path / "lock"))
    return Networks(tmp_path / "root", tmp_path / "run")


def test_subnets_checked_and_picked(nets: Networks) -> None:
    a = nets.create("net-a", "10.77.0.0/24", labels={"k": "v"})
    assert a["Gateway"] == "10.77.0.1" and a["Bridge"].startswith("pl-") and a["Labels"] == {"k": "v"}
    with pytest.raises(Conflict, match="overlaps"):
        nets.create("net-b", "10.77.0.128/25")
    with pytest.raises(Conflict, match="overlaps"):
        nets.create("net-c", "192.0.2.0/25")  # a host route
    with pytest.raises(InvalidArgument, match="gateway"):
        nets.create("net-d", "10.78.0.0/24", "10.79.0.1")
    with pytest.raises(InvalidArgument, match="subnet"):
        nets.create("net-e", "10.78.0.0/33")
    with pytest.raises(Conflict, match="predefined"):
        nets.create("host")
    auto = nets.create("net-f")
    assert auto["Subnet"] == "10.89.0.0/24"
    assert [n["Name"] for n in nets.all()] == ["net-a", "net-f", "bridge"] or {n["Name"] for n in nets.all()} == {
        "net-a", "net-f", "bridge"}  # fmt: skip
    with pytest.raises(Exception, match="already exists"):
        nets.create("net-a", "10.80.0.0/24")
    nets.remove("net-a")
    assert nets.create("net-a", "10.77.0.0/24")["Subnet"] == "10.77.0.0/24"  # the subnet is free again
    with pytest.raises(Conflict, match="pre-defined"):
        nets.remove("bridge")


def test_host_files_for_host_and_none_modes(nets: Networks, tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "hosts").write_text("old\n")
    (files / "resolv.conf").write_text("old\n")
    nets.attach("c" * 64, "c1", files, {"Hostname": "h"},
                {"NetworkMode": "none", "ExtraHosts": ["db:10.1.1.1", "v6:::1"], "Dns": ["10.0.0.53"],
                 "DnsSearch": ["example.org"]})  # fmt: skip
    hosts = (files / "hosts").read_text()
    assert "10.1.1.1\tdb\n" in hosts and "::1\tv6\n" in hosts and "old" not in hosts
    assert (files / "resolv.conf").read_text().startswith("nameserver 10.0.0.53\nsearch example.org\n")
    with pytest.raises(InvalidArgument, match="add-host"):
        nets.attach("d" * 64, "d1", files, {}, {"NetworkMode": "none", "ExtraHosts": ["db:notanip"]})
    with pytest.raises(InvalidArgument, match="user defined networks only"):
        nets.attach("e" * 64, "e1", files, {}, {"NetworkMode": "bridge", "Aliases": ["x"]})
    with pytest.raises(InvalidArgument, match="port publishing"):
        nets.attach("f" * 64, "f1", files, {}, {"NetworkMode": "none", "PortSpecs": ["80"]})


def test_none_and_host_without_options_need_no_sandbox(nets: Networks, tmp_path: Path) -> None:
    for mode in ("", "none", "host"):
        assert not has_sandbox({"NetworkMode": mode} if mode else {})
    for mode in ("bridge", "default", "net-a", "container:web"):
        assert has_sandbox({"NetworkMode": mode})
    options = "PortSpecs PublishAllPorts IPAddress Aliases ExtraHosts Dns DnsSearch DnsOptions".split()
    for key in options:
        assert has_sandbox({"NetworkMode": "none", key: ["x"]}), key
    # the engine skips attach for those: what attach would write is what the engine wrote at create
    files = tmp_path / "files"
    files.mkdir()
    (files / "hosts").write_text(BASE_HOSTS)
    (files / "resolv.conf").write_text("nameserver 10.0.0.1\n")
    for i, mode in enumerate(("none", "host")):
        nets.attach(str(i) * 64, f"c{i}", files, {"Hostname": "h"}, {"NetworkMode": mode})
        assert (files / "hosts").read_text() == BASE_HOSTS
        assert (files / "resolv.conf").read_text() == "nameserver 10.0.0.1\n"


def test_resolv_conf_drops_localhost_resolvers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 127.0.0.53\nsearch lan\noptions edns0\n")
    real = Path.read_text
    monkeypatch.setattr(
        Path, "read_text", lambda self, *a, **k: real(host if str(self) == "/etc/resolv.conf" else self)
    )
    assert resolv_conf([], [], []) == "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch lan\noptions edns0\n"
    assert (
        resolv_conf(["1.1.1.1"], ["x.org"], ["ndots:2"])
        == "nameserver 1.1.1.1\nsearch x.org\noptions ndots:2\n"
    )


def test_a_bridge_that_cannot_be_made_leaves_no_record(
    nets: Networks, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> None:
        raise manager.FailedPrecondition("ip: no luck")

    monkeypatch.setattr(manager.bridge, "create", fail)
    with pytest.raises(manager.FailedPrecondition, match="no luck"):
        nets.create("net-x", "10.81.0.0/24")
    assert "net-x" not in {n["Name"] for n in nets.all()}
    # the default network's record names no bridge, so no one will try to undo one that never was
    with pytest.raises(manager.FailedPrecondition):
        nets._materialize(nets.get("bridge")["Id"], "bridge", dict(nets.get("bridge")), None, None)
    assert nets.get("bridge")["Bridge"] == ""
