"""Volume verbs: ``volume create|ls|inspect|rm|prune``, docker's flags and output."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from pallet.cli.format import human_size, inspect_each, print_rows
from pallet.cli.parsing import add_verb as _verb
from pallet.cli.parsing import confirm, remove_each
from pallet.engine.views import volume_filter
from pallet.errors import InvalidArgument

if TYPE_CHECKING:
    import argparse

LS_TABLE = "table {{.Driver}}\t{{.Name}}"
LS_HEADERS = {"Driver": "DRIVER", "Name": "VOLUME NAME", "Mountpoint": "MOUNTPOINT", "Labels": "LABELS"}


def _volumes(ctx: Any) -> Any:
    from pallet.engine.volumes import Volumes

    return Volumes(ctx.root)


def _kv(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        if not k:
            raise InvalidArgument(f'invalid argument "{item}" for "{flag}" flag')
        out[k] = v
    return out


def cmd_create(ctx: Any, args: argparse.Namespace) -> int:
    name = args.name or args.name_opt or ""
    v = _volumes(ctx).create(name, _kv(args.label, "--label"), args.driver, _kv(args.opt, "--opt"))
    print(v["Name"])
    return 0


def _row(v: dict[str, Any]) -> dict[str, Any]:
    return v | {"Labels": ",".join(f"{k}={x}" for k, x in v["Labels"].items()), "Scope": "local"}


def cmd_ls(ctx: Any, args: argparse.Namespace) -> int:
    vols = _volumes(ctx)
    rows = vols.all()
    for f in args.filter:
        k, eq, val = f.partition("=")
        kept = volume_filter(vols, rows, k, val) if eq else None
        if kept is None:
            raise InvalidArgument(f"invalid filter '{f}'")
        rows = kept
    if args.quiet:
        for v in rows:
            print(v["Name"])
        return 0
    sys.stdout.write(print_rows(args.format, LS_TABLE, LS_HEADERS, [_row(v) for v in rows]))
    return 0


def cmd_inspect(ctx: Any, args: argparse.Namespace) -> int:
    vols = _volumes(ctx)

    def get(name: str) -> Any:
        v = vols.get(name)
        v.pop("Anonymous")
        return v

    return inspect_each(args.format, args.volumes, get)


def cmd_rm(ctx: Any, args: argparse.Namespace) -> int:
    vols = _volumes(ctx)
    return remove_each(args.volumes, lambda name: vols.remove(name, args.force), args.force, "no such volume")


def cmd_prune(ctx: Any, args: argparse.Namespace) -> int:
    if not args.force and not confirm(
        "WARNING! This will remove anonymous local volumes not used by at least one container."
    ):
        return 0
    gone, freed = _volumes(ctx).prune(
        args.all, [f.partition("=")[2] for f in args.filter if f.startswith("label=")]
    )
    if gone:
        print("Deleted Volumes:\n" + "\n".join(gone) + "\n")
    print(f"Total reclaimed space: {human_size(freed) if freed else '0B'}")
    return 0


def register(sub: Any) -> None:
    vol = sub.add_parser("volume", help="manage volumes")
    vol.set_defaults(help_parser=vol)
    vsub = vol.add_subparsers(dest="volume_command", metavar="COMMAND", parser_class=type(vol))
    p = _verb(vsub, "create", cmd_create, "create a volume")
    p.add_argument("-d", "--driver", default="local")
    p.add_argument("--label", action="append", default=[])
    p.add_argument("-o", "--opt", action="append", default=[])
    p.add_argument("--name", dest="name_opt")
    p.add_argument("name", nargs="?")
    p = _verb(vsub, "ls", cmd_ls, "list volumes", ["list"])
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format")
    p = _verb(vsub, "inspect", cmd_inspect, "display detailed information on volumes")
    p.add_argument("-f", "--format")
    p.add_argument("volumes", nargs="+", metavar="VOLUME")
    p = _verb(vsub, "rm", cmd_rm, "remove volumes", ["remove"])
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("volumes", nargs="+", metavar="VOLUME")
    p = _verb(vsub, "prune", cmd_prune, "remove unused local volumes")
    p.add_argument("-a", "--all", action="store_true", help="named volumes too, not only anonymous ones")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--filter", action="append", default=[])
