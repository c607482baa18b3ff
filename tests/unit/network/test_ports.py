"""-p parsing as docker's nat.ParsePortSpec, and the host port allocator."""

from __future__ import annotations

import socket

import pytest

from pallet.engine.network import ports
from pallet.errors import Conflict, InvalidArgument


def m(hip: str, hport: int, cport: int, proto: str = "tcp") -> dict[str, object]:
    return {"hostIP": hip, "hostPort": hport, "containerPort": cport, "protocol": proto}


@pytest.mark.parametrize(
    "spec, want",
    [
        ("80", [m("", 0, 80)]),
        ("8080:80", [m("", 8080, 80)]),
        ("127.0.0.1:8080:80/udp", [m("127.0.0.1", 8080, 80, "udp")]),
        ("127.0.0.1::80", [m("127.0.0.1", 0, 80)]),
        ("8000-8001:80-81", [m("", 8000, 80), m("", 8001, 81)]),
        ("9000-9001:80", [m("", 9000, 80)]),
        ("[::1]:8080:80", [m("::1", 8080, 80)]),
    ],
)
def test_parse(spec: str, want: list[dict[str, object]]) -> None:
    assert ports.parse(spec) == want


@pytest.mark.parametrize(
    "spec, msg",
    [
        ("80:abc", "invalid port specification"),
        ("0:80", "invalid port specification"),
        ("70000:80", "invalid port specification"),
        ("1:2:3:4", "invalid port specification"),
        ("80/icmp", "invalid proto"),
        ("300.1.1.1:80:80", "invalid IP address"),
        ("8000-8002:80-81", "invalid ranges"),
    ],
)
def test_parse_refuses(spec: str, msg: str) -> None:
    with pytest.raises(InvalidArgument, match=msg):
        ports.parse(spec)


def test_exposed_ports_get_ephemeral_host_ports() -> None:
    assert ports.exposed({"80/tcp": {}, "53/udp": {}}) == [m("", 0, 80), m("", 0, 53, "udp")]


def test_reserve_picks_free_ports_and_refuses_taken_ones() -> None:
    maps = [m("127.0.0.1", 0, 80)]
    ports.reserve(maps, set())
    assert isinstance(maps[0]["hostPort"], int) and maps[0]["hostPort"] > 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(Conflict, match="port is already allocated"):
            ports.reserve([m("127.0.0.1", busy, 80)], set())
    # held by another mapping of this engine (portmap binds nothing): refused too
    with pytest.raises(Conflict, match="already allocated"):
        ports.reserve([m("127.0.0.1", busy, 80)], {("tcp", busy, "127.0.0.1")})
