"""What the `pallet` command modules share: a verb's registration, docker's prompt, and its rm loop."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from pallet.errors import PalletError

TYPE_CHECKING = False  # typing costs ~1.8 ms of every `pallet run`: annotations only
if TYPE_CHECKING:
    from typing import Any

    from pallet.cli.grammar import Command


def add_verb(sub: Any, name: str, func: Any, help: str, aliases: list[str] | None = None) -> Command:
    """A subcommand whose parsed arguments carry the function that runs it."""
    p: Command = sub.add_parser(name, help=help, aliases=aliases or [])
    p.set_defaults(func=func)
    return p


def confirm(question: str) -> bool:
    """docker's prune prompt: the warning, then "[y/N]"; anything but yes (or end of input) is no."""
    sys.stdout.write(question + "\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def remove_each(names: Iterable[str], remove: Callable[[str], None], force: bool, missing: str) -> int:
    """docker's ``network rm`` / ``volume rm``: each name in turn, printed once removed; a failure is
    reported and the rest still tried (exit 1 at the end); with ``force``, an error naming ``missing``
    (the object is not there) is no failure."""
    failed = 0
    for name in names:
        try:
            remove(name)
            print(name)
        except PalletError as e:
            if force and missing in str(e):
                continue
            print(f"Error response from daemon: {e}", file=sys.stderr)
            failed = 1
    return failed
