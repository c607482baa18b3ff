"""``pallet``: the docker-compatible CLI. Parses arguments, calls the library, prints.

Each module in COMMAND_MODULES registers its verbs with ``register(subparsers)``; a verb's
function takes ``(ctx, args)`` and returns an exit status. Engine errors print ``Error: <message>``
and exit 125, bad usage exits 1 (docker's conventions).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any, NoReturn

from pallet.errors import PalletError

COMMAND_MODULES = [
    "pallet.cli.images",
    "pallet.cli.registry",
    "pallet.cli.containers",
    "pallet.cli.service",
    "pallet.cli.networks",
    "pallet.cli.volumes",
]
EXIT_ENGINE = 125
EXIT_USAGE = 1


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"Error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


class Context:
    """What every verb may need, made on first use so that `pallet --help` touches nothing."""

    def __init__(self, args: argparse.Namespace) -> None:
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


def build_parser() -> Parser:
    p = Parser(prog="pallet", description="A container engine.")
    p.add_argument("--root", default="/var/lib/pallet", help="engine state (default /var/lib/pallet)")
    p.add_argument("--runroot", default="/run/pallet", help="runtime state (default /run/pallet)")
    p.add_argument("--storage-driver", default=None, help="snapshotter: overlay, native or fuse-overlayfs")
    p.add_argument("-D", "--debug", action="store_true", help="print causes and tracebacks of errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # `pallet` or `pallet image` alone: help, as docker prints it
        getattr(args, "help_parser", parser).print_help()
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
