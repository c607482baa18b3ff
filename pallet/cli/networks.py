"""Network verbs (``network create|ls|inspect|rm|connect|disconnect|prune``) and the network and
volume flags of ``run``/``create`` (``run_flags`` adds them, ``apply`` puts them into the config)."""

from __future__ import annotations

import sys

from pallet.cli.format import inspect_each, print_rows
from pallet.cli.parsing import add_verb as _verb
from pallet.cli.parsing import confirm, remove_each
from pallet.engine.views import (
    network_created,
    network_get,
    network_inspect,
    network_list,
    network_match,
    port_rows,
)
from pallet.errors import InvalidArgument

TYPE_CHECKING = False  # typing costs ~1.8 ms of every `pallet run`: annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pallet.cli.grammar import Command

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
    for n in network_list(_networks(ctx)):
        row = {"ID": n["Id"] if args.no_trunc else n["Id"][:12], "Name": n["Name"], "Driver": n["Driver"],
               "Scope": "local", "IPv6": "false", "Internal": "true" if n["Internal"] else "false",
               "Labels": ",".join(f"{k}={v}" for k, v in n["Labels"].items()), "CreatedAt": network_created(n["Created"])}  # fmt: skip
        if all(network_match(f, n) for f in args.filter):
            rows.append(row)
    if args.quiet:
        for r in rows:
            print(r["ID"])
        return 0
    sys.stdout.write(print_rows(args.format, LS_TABLE, LS_HEADERS, rows))
    return 0


def cmd_inspect(ctx: Any, args: argparse.Namespace) -> int:
    nets = _networks(ctx)
    return inspect_each(args.format, args.networks, lambda ref: network_inspect(nets, network_get(nets, ref)))


def cmd_rm(ctx: Any, args: argparse.Namespace) -> int:
    def remove(ref: str) -> None:
        if ref in ("host", "none"):
            raise InvalidArgument(f"{ref} is a pre-defined network and cannot be removed")
        _networks(ctx).remove(ref)

    return remove_each(args.networks, remove, args.force, "not found")


def cmd_connect(ctx: Any, args: argparse.Namespace) -> int:
    rec = _container(ctx, args.container)
    _networks(ctx).connect(rec.id, args.network, args.alias, args.ip or "")
    return 0


def cmd_disconnect(ctx: Any, args: argparse.Namespace) -> int:
    rec = _container(ctx, args.container)
    _networks(ctx).disconnect(rec.id, args.network)
    return 0


def cmd_prune(ctx: Any, args: argparse.Namespace) -> int:
    if not args.force and not confirm(
        "WARNING! This will remove all custom networks not used by at least one container."
    ):
        return 0
    gone = _networks(ctx).prune()
    if gone:
        print("Deleted Networks:\n" + "\n".join(gone))
    return 0


# -- run/create flags ------------------------------------------------------------------------------------


def run_flags(p: Command) -> None:
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


def port(eng: Any, rec: Any, which: str | None) -> int:
    """``docker port C [PORT[/PROTO]]``: each mapping as 80/tcp -> 0.0.0.0:8080, or only host addresses."""
    from pallet.errors import NotFound

    maps = port_rows(eng, rec)
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
