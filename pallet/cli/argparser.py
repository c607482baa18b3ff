"""The recorded grammar replayed into argparse: usage, help, errors, and every spelling that the quick
reading in pallet.cli.grammar leaves to it. Imported only then (argparse costs ~2 ms to import)."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from pallet.cli.grammar import Command

EXIT_USAGE = 1


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"Error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build(cmd: Command, parser: argparse.ArgumentParser | None = None) -> Parser:
    """The argparse parser of a recorded Command: its calls made again, in their order."""
    p = parser or Parser(**cmd.kwargs)
    for call, names, kwargs in cmd.calls:
        if call == "add_argument":
            p.add_argument(*names, **kwargs)
        elif call == "set_defaults":  # help_parser=<the group itself>: the group's argparse parser
            p.set_defaults(**{k: p if v is cmd else v for k, v in kwargs.items()})
        else:
            sub = p.add_subparsers(**{**kwargs, "parser_class": Parser})
            assert cmd.subcommands is not None
            for name, child in cmd.subcommands.parsers:
                build(child, sub.add_parser(name, **child.kwargs))
    assert isinstance(p, Parser)
    return p
