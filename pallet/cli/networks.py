"""Network verbs (``network create|ls|inspect|rm|connect|disconnect|prune``) and the network and
volume flags of ``run``/``create`` (``run_flags`` adds them, ``apply`` puts them into the config)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from pallet.cli.format import print_rows, render
from pallet.errors import InvalidArgument, PalletError

LS_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
LS_HEADERS = {
    "ID": "NETWORK ID",
    "Name": "NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "Internal": "INTERNAL",
}


def _networks(ctx: Any) -> Any:
    if getattr(ctx, "_networks", None) is None:
        from pallet.engine.network.manager import Networks

        ctx._networks = Networks(ctx.root, ctx.runroot)
    return ctx._networks


def _container(ctx: Any, ref: str) -> Any:
    from pallet.cli.containers import engine

    return engine(ctx).get(ref)


def _created(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pseudo(name: str) -> dict[str, Any]:
    import hashlib

    nid = hashlib.sha256(b"pallet network " + name.encode()).hexdigest()
    return {"Id": nid, "Name": name, "Created": 0.0, "Driver": name if name != "none" else "null",
            "Internal": False, "Labels": {}, "Subnet": "", "Gateway": ""}  # fmt: skip


def _all(ctx: Any) -> list[dict[str, Any]]:
    return [*_networks(ctx).all(), _pseudo("host"), _pseudo("none")]


def _get(ctx: Any, ref: str) -> dict[str, Any]:
    if ref in ("host", "none"):
        return _pseudo(ref)
    net: dict[str, Any] = _networks(ctx).get(ref)
    return net


def inspect_dict(ctx: Any, n: dict[str, Any]) -> dict[str, Any]:
    conts = _networks(ctx).containers_of(n["Id"]) if n["Name"] not in ("host", "none") else {}
    return {
        "Name": n["Name"], "Id": n["Id"], "Created": _created(n["Created"]), "Scope": "local",
        "Driver": n["Driver"], "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {},
                 "Config": [{"Subnet": n["Subnet"], "Gateway": n["Gateway"]}] if n["Subnet"] else []},
        "Internal": n["Internal"], "Attachable": False, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": conts,
        "Options": {"com.docker.network.bridge.name": n["Bridge"]} if n.get("Bridge") else {},
        "Labels": n["Labels"],
    }  # fmt: skip


def cmd_create(ctx: Any, args: argparse.Namespace) -> int:
    labels = {}
    for item in args.label:
        k, _, v = item.partition("=")
        labels[k] = v
    if len(args.subnet) > 1 or len(args.gateway) > 1:
        raise InvalidArgument("only one --subnet and one --gateway per network are supported")
    n = _networks(ctx).create(
        args.name, args.subnet[0] if args.subnet else "", args.gateway[0] if args.gateway else "",
        args.internal, labels, args.driver,
    )  # fmt: skip
    print(n["Id"])
    return 0


def cmd_ls(ctx: Any, args: argparse.Namespace) -> int:
    rows = []
    for n in _all(ctx):
        row = {"ID": n["Id"] if args.no_trunc else n["Id"][:12], "Name": n["Name"], "Driver": n["Driver"],
               "Scope": "local", "IPv6": "false", "Internal": "true" if n["Internal"] else "false",
               "Labels": ",".join(f"{k}={v}" for k, v in n["Labels"].items()), "CreatedAt": _created(n["Created"])}  # fmt: skip
        if all(_match(f, n) for f in args.filter):
            rows.append(row)
    if args.quiet:
        for r in rows:
            print(r["ID"])
        return 0
    sys.stdout.write(print_rows(args.format, LS_TABLE, LS_HEADERS, rows))
    return 0


def _match(f: str, n: dict[str, Any]) -> bool:
    k, eq, v = f.partition("=")
    if not eq:
        raise InvalidArgument(f"invalid filter '{f}'")
    if k == "name":
        return v in n["Name"]
    if k == "id":
        return bool(n["Id"].startswith(v))
    if k == "driver":
        return bool(n["Driver"] == v)
    if k == "label":
        lk, leq, lv = v.partition("=")
        return lk in n["Labels"] and (not leq or n["Labels"][lk] == lv)
    if k == "type":
        builtin = n["Name"] in ("bridge", "host", "none")
        return builtin if v == "builtin" else not builtin
    raise InvalidArgument(f"invalid filter '{k}'")


def cmd_inspect(ctx: Any, args: argparse.Namespace) -> int:
    out, failed = [], 0
    for ref in args.networks:
        try:
            out.append(inspect_dict(ctx, _get(ctx, ref)))
        except PalletError as e:
            print(f"Error: {e}", file=sys.stderr)
            failed = 1
    if args.format:
        for o in out:
            print(render(args.format, o))
    else:
        print(json.dumps(out, indent=4))
    return failed


def cmd_rm(ctx: Any, args: argparse.Namespace) -> int:
    failed = 0
    for ref in args.networks:
        try:
            if ref in ("host", "none"):
                raise InvalidArgument(f"{ref} is a pre-defined network and cannot be removed")
            _networks(ctx).remove(ref)
            print(ref)
        except PalletError as e:
            if args.force and "not found" in str(e):
                continue
            print(f"Error response from daemon: {e}", file=sys.stderr)
            failed = 1
    return failed


def cmd_connect(ctx: Any, args: argparse.Namespace) -> int:
    rec = _container(ctx, args.container)
    _networks(ctx).connect(rec.id, args.network, args.alias, args.ip or "")
    return 0


def cmd_disconnect(ctx: Any, args: argparse.Namespace) -> int:
    rec = _container(ctx, args.container)
    _networks(ctx).disconnect(rec.id, args.network)
    return 0


def cmd_prune(ctx: Any, args: argparse.Namespace) -> int:
    if not args.force:
        print("WARNING! This will remove all custom networks not used by at least one container.")
        if input("Are you sure you want to continue? [y/N] ").strip().lower() not in ("y", "yes"):
            return 0
    gone = _networks(ctx).prune()
    if gone:
        print("Deleted Networks:\n" + "\n".join(gone))
    return 0


# -- run/create flags ------------------------------------------------------------------------------------


def run_flags(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--network-alias", "--net-alias", action="append", default=[])
    a("--add-host", action="append", default=[])
    a("--dns", action="append", default=[])
    a("--dns-search", action="append", default=[])
    a("--dns-option", "--dns-opt", action="append", default=[])
    a("--ip")
    a("-p", "--publish", action="append", default=[])
    a("-P", "--publish-all", action="store_true")
    a("--expose", action="append", default=[])
    a("--mount", action="append", default=[])
    a("--volumes-from", action="append", default=[])


def apply(args: argparse.Namespace, cfg: dict[str, Any], host: dict[str, Any]) -> None:
    """The network and volume flags into docker's Config/HostConfig; port specs checked now, so a bad
    one is refused before anything exists."""
    from pallet.engine.network import ports

    for p in args.publish:
        ports.parse(p)
    exposed: dict[str, Any] = {}
    for e in args.expose + [p.rpartition(":")[2] for p in args.publish]:
        key = e if "/" in e else e + "/tcp"
        for m in ports.parse(key):
            exposed[f"{m['containerPort']}/{m['protocol']}"] = {}
    if exposed:  # --expose and -p: in the host config too, which the image's config does not override
        cfg["ExposedPorts"] = (cfg.get("ExposedPorts") or {}) | exposed
        host["ExposedPorts"] = exposed
    mode = host.get("NetworkMode") or "bridge"
    host.update(
        NetworkMode="bridge" if mode == "default" else mode,
        PortSpecs=args.publish, PublishAllPorts=args.publish_all, Aliases=args.network_alias,
        IPAddress=args.ip or "", ExtraHosts=args.add_host, Dns=args.dns, DnsSearch=args.dns_search,
        DnsOptions=args.dns_option, MountSpecs=args.mount, VolumesFrom=args.volumes_from,
    )  # fmt: skip


# -- registration ----------------------------------------------------------------------------------------


def _verb(
    sub: Any, name: str, func: Any, help: str, aliases: list[str] | None = None
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, aliases=aliases or [])
    p.set_defaults(func=func)
    return p


def register(sub: Any) -> None:
    net = sub.add_parser("network", help="manage networks")
    net.set_defaults(help_parser=net)
    nsub = net.add_subparsers(dest="network_command", metavar="COMMAND", parser_class=type(net))
    p = _verb(nsub, "create", cmd_create, "create a network")
    p.add_argument("-d", "--driver", default="bridge")
    p.add_argument("--subnet", action="append", default=[])
    p.add_argument("--gateway", action="append", default=[])
    p.add_argument("--internal", action="store_true")
    p.add_argument("--label", action="append", default=[])
    p.add_argument("name")
    p = _verb(nsub, "ls", cmd_ls, "list networks", ["list"])
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format")
    p.add_argument("--no-trunc", action="store_true")
    p = _verb(nsub, "inspect", cmd_inspect, "display detailed information on networks")
    p.add_argument("-f", "--format")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p = _verb(nsub, "rm", cmd_rm, "remove networks", ["remove"])
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p = _verb(nsub, "connect", cmd_connect, "connect a container to a network")
    p.add_argument("--alias", action="append", default=[])
    p.add_argument("--ip")
    p.add_argument("network")
    p.add_argument("container")
    p = _verb(nsub, "disconnect", cmd_disconnect, "disconnect a container from a network")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("network")
    p.add_argument("container")
    p = _verb(nsub, "prune", cmd_prune, "remove all unused networks (and repair what crashes left)")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--filter", action="append", default=[])


# -- what containers.py shows of a container's network -------------------------------------------------


def _port_rows(eng: Any, rec: Any) -> list[dict[str, Any]]:
    return list(eng.networks.published(rec.id))


def _exposed(rec: Any) -> dict[str, Any]:
    return dict(rec.config["Config"].get("ExposedPorts") or {}) | (
        rec.config["HostConfig"].get("ExposedPorts") or {}
    )


def ports_text(eng: Any, rec: Any) -> str:
    """``ps``'s PORTS column: 0.0.0.0:8080->80/tcp, and exposed ports that publish nothing."""
    maps = _port_rows(eng, rec)
    out = [f"{m['hostIP'] or '0.0.0.0'}:{m['hostPort']}->{m['containerPort']}/{m['protocol']}" for m in maps]
    done = {f"{m['containerPort']}/{m['protocol']}" for m in maps}
    out += [p for p in _exposed(rec) if p not in done]
    return ", ".join(out)


def network_settings(eng: Any, rec: Any) -> dict[str, Any]:
    """inspect's NetworkSettings: per network its endpoint, the published ports, the sandbox."""
    nets = {}
    for name, ep in eng.networks.endpoints_of(rec.id).items():
        nets[name] = {
            "Aliases": ep.get("aliases") or None, "NetworkID": ep["NetworkID"], "Gateway": ep.get("gateway", ""),
            "IPAddress": ep.get("ip", ""), "IPPrefixLen": ep.get("prefix", 0), "MacAddress": ep.get("mac", ""),
        }  # fmt: skip
    mode = rec.config["HostConfig"].get("NetworkMode") or "none"
    if not nets and mode in ("host", "none"):
        nets[mode] = {}
    first = next(iter(nets.values()), {})
    ports: dict[str, Any] = {p: None for p in _exposed(rec)}
    for m in _port_rows(eng, rec):
        key = f"{m['containerPort']}/{m['protocol']}"
        ports[key] = (ports.get(key) or []) + [
            {"HostIp": m["hostIP"] or "0.0.0.0", "HostPort": str(m["hostPort"])}
        ]
    return {
        "SandboxKey": eng.networks.sandbox_key(rec.id), "Ports": ports, "Networks": nets,
        "IPAddress": first.get("IPAddress", ""), "Gateway": first.get("Gateway", ""),
        "MacAddress": first.get("MacAddress", ""), "IPPrefixLen": first.get("IPPrefixLen", 0),
    }  # fmt: skip


def port(eng: Any, rec: Any, which: str | None) -> int:
    """``docker port C [PORT[/PROTO]]``: each mapping as 80/tcp -> 0.0.0.0:8080, or only host addresses."""
    from pallet.errors import NotFound

    maps = _port_rows(eng, rec)
    if which:
        key = which if "/" in which else which + "/tcp"
        hits = [m for m in maps if f"{m['containerPort']}/{m['protocol']}" == key]
        if not hits:
            raise NotFound(f"No public port '{key}' published for {rec.name}")
        for m in hits:
            print(f"{m['hostIP'] or '0.0.0.0'}:{m['hostPort']}")
        return 0
    for m in maps:
        print(f"{m['containerPort']}/{m['protocol']} -> {m['hostIP'] or '0.0.0.0'}:{m['hostPort']}")
    return 0
