"""argparse pieces the `pallet` command modules share."""

from __future__ import annotations

import argparse
from typing import Any


def add_verb(
    sub: Any, name: str, func: Any, help: str, aliases: list[str] | None = None
) -> argparse.ArgumentParser:
    """A subcommand whose parsed arguments carry the function that runs it."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, aliases=aliases or [])
    p.set_defaults(func=func)
    return p
