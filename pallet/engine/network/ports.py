"""``-p/--publish`` as docker parses it (go-connections nat.ParsePortSpec):
``[hostIP:][hostPort[-end]:]containerPort[-end][/tcp|udp]``; a host range must match the container
range in length (or be given for one container port); no host port means an ephemeral one."""

from __future__ import annotations

import _socket
import ipaddress

from pallet.errors import Conflict, InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any


def _range(text: str, spec: str) -> tuple[int, int]:
    lo, dash, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi) if dash else int(lo)
    except ValueError:
        raise InvalidArgument(f'invalid port specification: "{spec}"') from None
    if not (0 < a <= b <= 65535):
        raise InvalidArgument(f'invalid port specification: "{spec}"')
    return a, b


def parse(spec: str) -> list[dict[str, Any]]:
    """One -p value → portmap's mappings ({hostIP, hostPort (0: pick one), containerPort, protocol})."""
    rest, _, proto = spec.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f'invalid proto: "{proto}"')
    host_ip, host_port = "", ""
    if rest.startswith("["):  # [::1]:80:80
        end = rest.find("]")
        host_ip, rest = rest[1:end], rest[end + 2 :]
        host_port, _, ctr = rest.rpartition(":")
    else:
        parts = rest.split(":")
        if len(parts) == 1:
            ctr = parts[0]
        elif len(parts) == 2:
            host_port, ctr = parts
        elif len(parts) == 3:
            host_ip, host_port, ctr = parts
        else:
            raise InvalidArgument(f'invalid port specification: "{spec}"')
    if host_ip:
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise InvalidArgument(f'invalid IP address: "{host_ip}"') from None
    c0, c1 = _range(ctr, spec)
    h0, h1 = _range(host_port, spec) if host_port else (0, 0)
    if host_port and (h1 - h0) != (c1 - c0) and not (c0 == c1):
        raise InvalidArgument(f'invalid ranges specified for container and host Ports: "{spec}"')
    out = []
    for i, cport in enumerate(range(c0, c1 + 1)):
        hport = 0 if not host_port else (h0 + i if h1 - h0 == c1 - c0 else h0)
        out.append({"hostIP": host_ip, "hostPort": hport, "containerPort": cport, "protocol": proto})
    return out


def exposed(ports: dict[str, Any]) -> list[dict[str, Any]]:
    """``-P``: each of the image's ExposedPorts ("80/tcp") on an ephemeral host port."""
    out: list[dict[str, Any]] = []
    for key in ports:
        out += parse(key)
    return out


def _sock(proto: str, family: int) -> _socket.socket:
    # _socket, not socket: socket.py builds its enums at import, ~1.5 ms of every `pallet run`
    kind = _socket.SOCK_DGRAM if proto == "udp" else _socket.SOCK_STREAM
    return _socket.socket(family, kind)


def reserve(mappings: list[dict[str, Any]], taken: set[tuple[str, int, str]]) -> None:
    """Give ephemeral ports a number and refuse ports in use, as docker's port allocator does: a host
    port is free when no mapping of this engine holds it and a socket can bind it now."""
    for m in mappings:
        ip = m["hostIP"] or "0.0.0.0"
        family = _socket.AF_INET6 if ":" in ip else _socket.AF_INET
        for _ in range(64):
            s = _sock(m["protocol"], family)
            try:
                s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
                s.bind((ip, m["hostPort"]))
                port = s.getsockname()[1]
            except OSError as e:
                raise Conflict(
                    f"Bind for {ip}:{m['hostPort']} failed: port is already allocated ({e.strerror})"
                ) from None
            finally:
                s.close()
            if (m["protocol"], port, ip) not in taken and (m["protocol"], port, "0.0.0.0") not in taken:
                break
            if m["hostPort"]:
                raise Conflict(f"Bind for {ip}:{port} failed: port is already allocated")
        m["hostPort"] = port
        taken.add((m["protocol"], port, ip))
