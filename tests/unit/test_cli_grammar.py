"""The quick reading of the recorded grammar (pallet.cli.grammar) against argparse, built from the same
record (pallet.cli.argparser): for every verb of every command module and many spellings of each of its
arguments, the quick reading gives argparse's namespace, or None where argparse must answer (help, a
version, an error, a spelling left to it), never a namespace where argparse fails; and main falls back
to argparse for every None."""

from __future__ import annotations

import io
import itertools
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import pytest

from pallet.cli import main as cli
from pallet.cli.argparser import Parser, build
from pallet.cli.grammar import REMAINDER, Command

GLOBALS = [[], ["--root", "/r", "-D"], ["--runroot=/x", "--storage-driver", "native"], ["-D", "--root=/r"]]


@pytest.fixture(scope="module")
def grammars() -> Iterator[dict[tuple[str | None, bool], tuple[Command, Parser]]]:
    """(command, whether argv names `container`) → the grammar main records for it, and its argparse."""
    cache: dict[tuple[str | None, bool], tuple[Command, Parser]] = {}
    saved = sys.argv
    yield cache
    sys.argv = saved


def readings(cache: dict[Any, tuple[Command, Parser]], argv: list[str]) -> tuple[Any, Any]:
    """(the quick reading, argparse's namespace or None where it exits) of argv, as main records them."""
    command = cli._command(argv)
    key = (command, "container" in argv)
    if key not in cache:
        sys.argv = ["pallet", *argv]  # containers.register records the `container` group only when named
        g = cli.grammar(command)
        cache[key] = g, build(cli.grammar(command))
    g, parser = cache[key]
    quick = g.parse(argv)
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            slow: Any = vars(parser.parse_args(argv))
    except SystemExit:
        slow = None
    return (None if quick is None else vars(quick)), slow


def same(quick: dict[str, Any], slow: dict[str, Any]) -> bool:
    """Equal namespaces; help_parser is the recorded group in one and its argparse parser in the other."""
    if ("help_parser" in quick) != ("help_parser" in slow):
        return False
    return {k: v for k, v in quick.items() if k != "help_parser"} == {
        k: v for k, v in slow.items() if k != "help_parser"
    }


# -- the corpus: every recorded verb, each argument in many spellings --------------------------------------


def verbs(cmd: Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Command]]:
    """Each recorded parser, with the words that reach it (aliases too)."""
    yield path, cmd
    if cmd.subcommands is not None:
        for name, child in cmd.subcommands.parsers:
            for word in [name, *child.kwargs.get("aliases", ())]:
                yield from verbs(child, (*path, word))


def arguments(cmd: Command) -> tuple[list[tuple[tuple[str, ...], dict[str, Any]]], list[dict[str, Any]]]:
    options: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    positionals: list[dict[str, Any]] = []
    if cmd.kwargs.get("add_help", True):
        options.append((("-h", "--help"), {"action": "help"}))
    for call, names, kwargs in cmd.calls:
        if call == "add_argument" and names[0].startswith("-"):
            options.append((names, kwargs))
        elif call == "add_argument":
            positionals.append(kwargs)
    return options, positionals


def positional_strings(positionals: list[dict[str, Any]], has_verbs: bool) -> list[list[str]]:
    """Strings for the positionals: the usual, the fewest, one too many, none."""
    usual: list[str] = []
    fewest: list[str] = []
    for i, kw in enumerate(positionals):
        nargs = kw.get("nargs")
        usual += {None: [f"p{i}"], "?": [f"p{i}"], "+": [f"p{i}", f"q{i}"], "*": [f"p{i}", f"q{i}"]}.get(
            nargs, ["sh", "-c", "echo -n --rm x"] if nargs == REMAINDER else []
        )
        fewest += [f"p{i}"] if nargs in (None, "+") else []
    if has_verbs:
        return [[]]
    return [usual, fewest, [*usual, "extra"], [], ["-5", *usual[1:]], ["a b", *usual[1:]]]


def spellings(names: tuple[str, ...], kwargs: dict[str, Any]) -> Iterator[tuple[list[str], bool]]:
    """Each way to give an option, and whether it is a plain one (read quickly when argparse takes it)."""
    action = kwargs.get("action", "store")
    value = "5" if kwargs.get("type") is int else (kwargs.get("choices") or ["v=1"])[0]
    for o in names:
        long = o.startswith("--")
        yield [o], action not in ("help", "version")
        if long:
            yield from (([o[:k]], True) for k in (3, 4, len(o) - 1))  # abbreviations, some ambiguous
        if action in ("store_true", "store_false", "help", "version"):
            yield from (([o + "=x"], True), ([o + "="], True), ([o, o], True))
            continue
        yield from (([o, value], True), ([o + "=" + value], True), ([o + "="], True), ([o, "-5"], True))
        yield from (([o, "--bogus"], True), ([o, "a b"], True), ([o, "--"], False), ([o, "bad"], True))
        yield from (([o, value, o, value + "0"], True), ([o, "x"], True))
        if not long:
            yield from (([o + value], True), ([o + "=" + value], True), ([o + "-x"], True))


def clusters(options: list[tuple[tuple[str, ...], dict[str, Any]]]) -> Iterator[list[str]]:
    """-it, -dit, -ie X=1, -ieX=1, -i=: short options run together."""
    flags = [n[1] for names, kw in options for n in names if len(n) == 2 and kw.get("action") == "store_true"]
    values = [
        n[1] for names, kw in options for n in names if len(n) == 2 and kw.get("action", "store") == "store"
    ]
    for a, b in itertools.permutations(flags[:4], 2):
        yield ["-" + a + b]
        yield ["-" + a + b + "x"]
    if len(flags) >= 3:
        yield ["-" + "".join(flags[:3])]
    for f in flags[:2]:
        for v in values[:3]:
            yield from (["-" + f + v, "X=1"], ["-" + f + v + "X=1"], ["-" + f + v + "=X"], ["-" + f + v])
        yield ["-" + f + "="]


def corpus() -> Iterator[tuple[list[str], bool]]:
    """(argv, whether it is plain): every verb's positionals in several counts, with and without
    global flags and "--"; then each of its options spelled every way, before and after the
    positionals (once for verbs registered twice: run and container run)."""
    sys.argv = ["pallet", "container"]
    done = set()
    for path, cmd in verbs(cli.grammar()):
        options, positionals = arguments(cmd)
        strings = positional_strings(positionals, cmd.subcommands is not None)
        for pos in strings:
            for g in GLOBALS if path else [[]]:
                yield [*g, *path, *pos], True
            for split in range(len(pos)):
                yield [*path, *pos[:split], "--", *pos[split:]], False
        if repr(options) in done:
            continue
        done.add(repr(options))
        pos = strings[0]
        for s, plain in itertools.chain(*(spellings(n, kw) for n, kw in options)):
            yield [*path, *s, *pos], plain
            yield [*path, *pos, *s], plain
            if len(pos) > 1:  # between two positionals: argparse may take them in two goes
                yield [*path, pos[0], *s, *pos[1:]], False
        for s in clusters(options):
            yield [*path, *s, *pos], True
        for stray in (
            "-x",
            "-x y",
            "--x y",
            "-",
            "",
            "-.5",
            "-5.",
            "--bogus=1",
        ):  # unknown options, or not options
            yield [*path, stray, *pos], True
            yield [*path, *pos, stray], True


EXTRA = [
    [],
    ["bogus"],
    ["--root"],
    ["--ro", "/r", "ps"],
    ["-Dv"],
    ["run", "--rm", "--network", "none", "busybox", "true"],
    [
        "run",
        "-it",
        "--rm",
        "-e",
        "A=1",
        "-eB=2",
        "--env=C",
        "-v/a:/b",
        "-p8080:80",
        "busybox",
        "sh",
        "-c",
        "x",
    ],
    ["run", "-dit", "--name", "web", "--restart=always", "-m512m", "-c", "512", "busybox"],
    ["run", "busybox", "ls", "--r"],  # argparse: ambiguous at the top level, even in the command
    ["run", "busybox", "grep", "--ne", "x"],
    ["run", "--oom-score-adj", "-500", "busybox"],
    ["run", "--log-driver", "syslog", "busybox"],
    ["run", "--health-retries", "x", "busybox"],
    ["run", "-h", "host", "busybox", "-h"],
    ["run", "--help"],
    ["create", "--name", "c", "busybox", "sleep", "60"],
    ["exec", "-it", "c", "sh", "-c", "echo -e x"],
    ["exec", "-e", "A=1", "-w", "/tmp", "-u", "0", "c"],
    ["ps", "-aq", "--no-trunc", "--format", "{{.Names}}", "-f", "status=exited", "-n", "-1"],
    ["logs", "-f", "--tail", "10", "c"],
    ["logs", "c", "-f", "-n", "5"],
    ["rm", "-fv", "c1", "c2"],
    ["rm", "c1", "-f", "c2"],  # argparse: c2 is unrecognized
    ["stop", "-t", "0", "c1"],
    ["stop", "--timeout=3", "c1", "c2"],
    ["port", "c", "80/tcp"],
    ["stats", "--no-stream"],
    ["container", "ls", "-a"],
    ["container", "run", "--rm", "busybox"],
    ["container"],
    ["image", "ls", "-q"],
    ["image"],
    ["images", "busybox", "-a"],
    ["history", "busybox"],
    ["history", "--no-human", "busybox"],
    ["system", "df", "-v"],
    ["system", "service", "-H", "unix:///tmp/x.sock", "-t", "5"],
    ["network", "create", "--subnet", "10.1.0.0/24", "n"],
    ["network", "connect", "--alias", "a", "n", "c"],
    ["volume", "create", "--name", "v"],
    ["volume", "ls", "-q"],
    ["pull", "-q", "busybox"],
    ["login", "-u", "me", "--password-stdin", "registry.example"],
    ["snapshot", "mount", "k", "/mnt"],
]


# what argparse takes and the quick reading leaves to it: "--" (argparse strips it or not by where it
# stands), a run of positionals split by an option (argparse matches them in two goes)
LEFT = [
    ["--", "ps"],
    ["ps", "--"],
    ["run", "busybox", "--", "x"],
    ["run", "--", "busybox", "x"],
    ["exec", "c", "--", "ls"],
    ["network", "connect", "n", "--alias", "a", "c"],
]
# verbs the quick reading leaves to argparse: history's --human is argparse.BooleanOptionalAction, the
# registry verbs' --tls-verify takes an optional value (nargs="?")
UNREAD = {"history", "pull", "push", "login"}


def test_the_quick_reading_is_argparses(grammars: dict[Any, tuple[Command, Parser]]) -> None:
    counts = {"read": 0, "refused": 0, "left": 0}
    for argv, plain in itertools.chain(((a, True) for a in EXTRA), ((a, False) for a in LEFT), corpus()):
        quick, slow = readings(grammars, argv)
        if quick is not None:
            assert slow is not None, f"argparse refuses {argv}, the quick reading took it: {quick}"
            assert same(quick, slow), f"{argv}: quick {quick} != argparse {slow}"
        elif slow is not None:
            # argparse takes it: only a spelling the quick reading leaves ("--", help, a split run of
            # positionals, a verb it does not read)
            assert not plain or UNREAD & set(argv) or {"-h", "--help", "-v", "--version"} & set(argv), argv
        counts["read" if quick else "refused" if slow is None else "left"] += 1
    print(counts)
    assert counts["read"] > 5000  # the quick reading is not merely refusing


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--rm", "busybox", "true"],
        ["run", "--help"],
        ["--version"],
        ["image"],
        ["bogus"],
        ["rm", "c1", "-f", "c2"],
    ],
)
def test_main_asks_argparse_whenever_the_quick_reading_cannot(
    argv: list[str], grammars: dict[Any, tuple[Command, Parser]], monkeypatch: pytest.MonkeyPatch
) -> None:
    quick, slow = readings(grammars, argv)
    if quick is not None and "func" in quick:
        args, parser = cli.parse(argv)
        assert parser is None and same(vars(args), quick)
        return
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        try:
            args, parser = cli.parse(argv)
        except SystemExit:  # argparse's help, version or error
            assert slow is None
            return
    assert parser is not None and same(vars(args), slow)
