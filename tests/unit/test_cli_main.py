"""pallet.cli.main records the grammar of the command in use only: its command table must match what
each command module registers, and a parser built for one command must parse like the full one."""

from __future__ import annotations

import argparse
import importlib
import sys

import pytest

from pallet.cli.grammar import Command
from pallet.cli.main import COMMAND_MODULES, COMMANDS, _command, build_parser, main


def test_command_table_matches_the_modules() -> None:
    registered: dict[str, set[str]] = {}
    for name in COMMAND_MODULES:
        sub = Command(prog="pallet").add_subparsers(dest="command")
        importlib.import_module(name).register(sub)
        for command in sub.choices:
            registered.setdefault(command, set()).add(name)
    assert {c: set(m) for c, m in COMMANDS.items()} == registered


def test_command_word_skips_global_flags() -> None:
    assert _command(["--root", "/r", "-D", "--runroot", "/x", "run", "--rm", "busybox"]) == "run"
    assert _command(["--storage-driver", "native", "images"]) == "images"
    assert _command(["-D"]) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--rm", "-e", "A=1", "--network", "none", "busybox", "sh", "-c", "true"],
        ["ps", "-a", "--no-trunc"],
        ["container", "ls", "-a"],
        ["image", "ls"],
        ["system", "service", "-H", "unix:///tmp/x.sock"],
        ["system", "df"],
        ["network", "ls"],
        ["volume", "create", "v"],
        ["pull", "busybox"],
    ],
)
def test_one_command_parses_as_the_full_parser(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["pallet", *argv])  # `container` builds its group only when named

    def parsed(p: argparse.ArgumentParser) -> dict[str, object]:
        ns = vars(p.parse_args(argv))
        return {k: v for k, v in ns.items() if k != "help_parser"}

    assert parsed(build_parser(_command(argv))) == parsed(build_parser())


def test_version_prints_as_docker_does(capsys: pytest.CaptureFixture[str]) -> None:
    from pallet import __version__

    for flag in ("--version", "-v"):
        with pytest.raises(SystemExit) as e:
            main([flag])
        assert e.value.code == 0
        assert capsys.readouterr().out == f"Pallet version {__version__}\n"
