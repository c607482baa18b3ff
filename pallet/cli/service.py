"""``pallet system service``: serve the Docker Engine API on a unix socket until interrupted (or until
``--timeout`` seconds pass without a request, as ``podman system service --time``); as it starts, it
restores containers as dockerd does (``pallet system restore``: pallet.engine.restore)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from pallet.errors import InvalidArgument

if TYPE_CHECKING:
    import argparse

DEFAULT_HOST = "unix:///run/pallet/docker.sock"


def _group(name: str | None) -> int | None:
    if name is None:
        return None
    if name.isdigit():
        return int(name)
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise InvalidArgument(f"group {name!r} not found") from None


def cmd_restore(ctx: Any, args: argparse.Namespace) -> int:
    """Start the containers that their restart policies want running after a reboot; print each name."""
    from pallet.cli.containers import engine
    from pallet.engine.restore import restore

    failed = False
    for rec, err in restore(engine(ctx)):
        if err:
            failed = True
            print(f"Error: container {rec.name}: {err}", file=sys.stderr)
        else:
            print(rec.name, flush=True)
    return 1 if failed else 0


def cmd_service(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.api.server import Service

    if not args.host.startswith("unix://"):
        raise InvalidArgument(f"only unix:// hosts are supported: {args.host}")
    path = args.host.removeprefix("unix://")
    server = Service(path, ctx.root, ctx.runroot, ctx.storage_driver, _group(args.group), ctx.debug)
    stop = threading.Event()

    def shutdown(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: every thread's stack, on stderr
    if not args.no_restore:  # as dockerd restores its containers before it serves
        with contextlib.redirect_stdout(sys.stderr):
            cmd_restore(ctx, args)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"API listening on {path}", file=sys.stderr, flush=True)
    try:
        if args.timeout:
            last = server.requests
            while not stop.wait(args.timeout):
                if server.requests == last and not server.active:
                    break
                last = server.requests
        else:
            stop.wait()
    finally:
        server.shutdown()
        server.server_close()
    return 0


def register(sub: Any) -> None:
    system = sub.choices.get("system")
    if system is None:  # pallet.cli.images made no `system` group: make it
        system = sub.add_parser("system", help="manage pallet")
        system.set_defaults(help_parser=system)
        system.add_subparsers(dest="system_command", metavar="COMMAND", parser_class=type(system))
    ssub = system.subcommands  # the recorded group (pallet.cli.grammar.Command)
    p = ssub.add_parser("service", help="serve the Docker Engine API on a unix socket")
    p.set_defaults(func=cmd_service)
    p.add_argument("-H", "--host", default=DEFAULT_HOST, help=f"where to listen (default {DEFAULT_HOST})")
    p.add_argument("-t", "--timeout", type=int, default=0, help="exit after N idle seconds (0: never)")
    p.add_argument("--group", help="group owning the socket (default root)")
    p.add_argument("--no-restore", action="store_true", help="do not start containers as it starts")
    p = ssub.add_parser(
        "restore", help="start the containers that restart policies want running (after a reboot)"
    )
    p.set_defaults(func=cmd_restore)
