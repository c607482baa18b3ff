"""``pallet``: the docker-compatible CLI. Parses arguments, calls the library, prints.

Each module in COMMAND_MODULES registers its verbs with ``register(subparsers)``, into a recorded
grammar (pallet.cli.grammar) that reads a plain command line itself; help, errors and rare spellings go
to argparse, built from the same record (pallet.cli.argparser). A verb's function takes ``(ctx, args)``
and returns an exit status. Engine errors print ``Error: <message>`` and exit 125, bad usage exits 1
(docker's conventions).
"""

from __future__ import annotations

import os
import sys

from pallet import __version__
from pallet.cli.grammar import Command
from pallet.errors import PalletError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: a start imports neither typing nor argparse
    from typing import Any

    from pallet.cli.argparser import Parser

COMMAND_MODULES = [
    "pallet.cli.images",
    "pallet.cli.registry",
    "pallet.cli.containers",
    "pallet.cli.service",
    "pallet.cli.networks",
    "pallet.cli.volumes",
]
# the modules that register each command: only those are imported and recorded for a start (and only
# the command's own verbs replayed into argparse, ~0.4 ms each); a command missing here (a typo, `pallet`
# alone) records them all, for help and argparse's error (tests/unit/test_cli_main.py checks this table
# against what each module registers)
_CON, _IMG, _REG = "pallet.cli.containers", "pallet.cli.images", "pallet.cli.registry"
COMMANDS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        "attach container cp create events exec inspect kill logs pause port ps rename restart rm run start "
        "stats stop top unpause update wait".split(),
        (_CON,),
    ),
    **dict.fromkeys(
        "commit diff export history image images import load rmi save snapshot tag".split(), (_IMG,)
    ),
    **dict.fromkeys("login logout pull push".split(), (_REG,)),
    "system": (_IMG, "pallet.cli.service"),
    "network": ("pallet.cli.networks",),
    "volume": ("pallet.cli.volumes",),
}
EXIT_ENGINE = 125


class Context:
    """What every verb may need, made on first use so that `pallet --help` touches nothing."""

    def __init__(self, args: Any) -> None:
        from pathlib import Path  # not for `pallet --help`

        self.root = Path(args.root)
        self.runroot = Path(args.runroot)
        self.debug = bool(args.debug)
        self.storage_driver: str | None = args.storage_driver
        self._images: Any = None

    @property
    def images(self) -> Any:
        if self._images is None:
            from pallet.image.images import Images

            self._images = Images(self.root, self.storage_driver)
        return self._images

    def close(self) -> None:
        if self._images is not None:
            self._images.close()


def _command(argv: list[str]) -> str | None:
    """The command word: the first argument that is not a global flag or its value."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--root", "--runroot", "--storage-driver"):
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return arg
    return None


def grammar(command: str | None = None) -> Command:
    """The recorded grammar; with ``command``, only the verbs of the modules that register it."""
    p = Command(prog="pallet", description="A container engine.")
    p.add_argument("--root", default="/var/lib/pallet", help="engine state (default /var/lib/pallet)")
    p.add_argument("--runroot", default="/run/pallet", help="runtime state (default /run/pallet)")
    p.add_argument("--storage-driver", default=None, help="snapshotter: overlay, native or fuse-overlayfs")
    p.add_argument("-D", "--debug", action="store_true", help="print causes and tracebacks of errors")
    version = f"Pallet version {__version__}"
    p.add_argument(
        "-v", "--version", action="version", version=version, help="print version information and quit"
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    modules = COMMANDS.get(command or "")
    if modules:
        sub.only = command
    for name in modules or COMMAND_MODULES:
        __import__(name, fromlist=["register"]).register(sub)
    return p


def build_parser(command: str | None = None) -> Parser:
    """argparse's parser of the grammar; with ``command``, only the verbs of the modules that register it."""
    from pallet.cli.argparser import build

    return build(grammar(command))


def parse(argv: list[str]) -> tuple[Any, Parser | None]:
    """The arguments as argparse reads them, and argparse's parser where it was needed: help, a
    version, an error, or a spelling the recorded grammar does not read itself."""
    g = grammar(_command(argv))
    args = g.parse(argv)
    if args is not None and getattr(args, "func", None):
        return args, None
    from pallet.cli.argparser import build

    parser = build(g)
    return parser.parse_args(argv), parser


def main(argv: list[str] | None = None) -> int:
    as_program = argv is None
    argv = sys.argv[1:] if argv is None else argv
    args, parser = parse(argv)
    code = _run(parser, args)
    threading = sys.modules.get("threading")
    if as_program and (threading is None or threading.active_count() == 1):
        # the process ends here: skip the interpreter's teardown of every module (~13 ms a start);
        # the verb has closed what it opened (ctx.close), and no other thread is left to wait for
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe (`pallet ps | head`): what was left is lost either way
            pass
        os._exit(code)
    return code


def _run(parser: Parser | None, args: Any) -> int:
    if not getattr(args, "func", None):
        # `pallet` or `pallet image` alone: help, as docker prints it (argparse's, as parse() made it)
        help_parser: Any = getattr(args, "help_parser", parser)
        help_parser.print_help()
        return 0
    ctx = Context(args)
    try:
        return int(args.func(ctx, args) or 0)
    except PalletError as e:
        if ctx.debug:
            import traceback

            traceback.print_exc()
        print(f"Error: {e}", file=sys.stderr)
        return EXIT_ENGINE
    except BrokenPipeError:
        return 0
    except OSError as e:
        if ctx.debug:
            import traceback

            traceback.print_exc()
        print(f"Error: {e.strerror or e}{': ' + str(e.filename) if e.filename else ''}", file=sys.stderr)
        return EXIT_ENGINE
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
