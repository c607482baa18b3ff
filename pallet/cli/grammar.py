"""The verbs' grammar, recorded, and a quick reading of a plain command line by it.

Each command module registers its verbs with argparse's calls (``add_subparsers``, ``add_parser``,
``add_argument``, ``set_defaults``). A Command records those calls instead of building argparse's
parsers (importing argparse and building ``run``'s 80 flags cost ~4 ms of every start), and reads argv
as argparse's ``parse_args`` would, into the same namespace. Whatever it does not take on returns
None: help, a version, every error, and the spellings it leaves (``--``, a group of positionals
split by options, an argument kind it does not know); pallet.cli.argparser then replays the same calls
into argparse, which answers exactly as it always has. tests/unit/test_cli_grammar.py holds the two
readings equal over every command and many spellings.

The reading follows argparse 3.11's ``_parse_known_args``: each parser first sorts its strings into
options (what they name) and positional strings, then takes options in turn; a run of positional strings
goes to the positionals left, each as many as it can, and a REMAINDER or subcommand positional takes
every string after it, options too.
"""

from __future__ import annotations

from types import SimpleNamespace

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported by a start
    from typing import Any

_SUPPRESS = "==SUPPRESS=="  # argparse.SUPPRESS: as a default, the argument stays out of the namespace
REMAINDER = "..."  # argparse.REMAINDER: every string from here on (a container's command)
_SUBCOMMAND = "A..."  # argparse.PARSER: a verb, then every string after it for the verb's parser
_ARGUMENT_KEYS = {"action", "dest", "default", "type", "choices", "help", "metavar", "nargs", "version"}
_PARSER_KEYS = {"help", "aliases", "add_help", "description", "prog"}
_SUBPARSERS_KEYS = {"dest", "metavar", "parser_class", "help", "title", "description", "required"}


class _Unsupported(Exception):
    """What the quick reading leaves to argparse."""


class Command:
    """A parser, recorded: ``kwargs`` as given to ``add_parser`` (or ArgumentParser), then its calls."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[str, tuple[str, ...], dict[str, Any]]] = []
        self.subcommands: Subcommands | None = None
        self._table: _Table | None = None

    def add_argument(self, *names: str, **kwargs: Any) -> None:
        self.calls.append(("add_argument", names, kwargs))

    def set_defaults(self, **kwargs: Any) -> None:
        self.calls.append(("set_defaults", (), kwargs))

    def add_subparsers(self, **kwargs: Any) -> Subcommands:
        self.calls.append(("add_subparsers", (), kwargs))
        self.subcommands = Subcommands()
        return self.subcommands

    def parse(self, argv: list[str]) -> SimpleNamespace | None:
        """argv as argparse reads it, or None where argparse must answer."""
        try:
            return SimpleNamespace(**self._read(argv))
        except _Unsupported:
            return None

    def _read(self, args: list[str]) -> dict[str, Any]:
        if self._table is None:
            self._table = _Table(self)
        return self._table.read(args)


class Subcommands:
    """``add_subparsers()``, recorded; with ``only`` set, the other verbs' registrations go to a sink
    (a start reads one verb, and replaying all of them into argparse costs ~0.4 ms a verb)."""

    def __init__(self) -> None:
        self.parsers: list[tuple[str, Command]] = []
        self.choices: dict[str, Command] = {}
        self.only: str | None = None

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if self.only is not None and name != self.only:
            return _Sink()
        p = Command(**kwargs)
        self.parsers.append((name, p))
        for alias in [name, *kwargs.get("aliases", ())]:
            self.choices[alias] = p
        return p


class _Sink:
    """A verb this start does not read: it takes every call."""

    def __getattr__(self, name: str) -> Any:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self


class _Action:
    """One argument as argparse makes it: where it goes, how many strings it takes, what it does."""

    def __init__(self, kind: str, dest: str, nargs: Any, default: Any) -> None:
        self.kind, self.dest, self.nargs, self.default = kind, dest, nargs, default
        self.type: Any = None
        self.choices: Any = None
        self.subcommands: Subcommands | None = None
        # how many positional strings it takes at least and at most (argparse's nargs patterns)
        self.least = 1 if nargs in (None, "+", _SUBCOMMAND) else 0
        self.most = 1 if nargs in (None, "?") else 1 << 30

    def value(self, text: str) -> Any:
        try:
            value = self.type(text) if self.type else text
        except Exception:  # argparse's "invalid int value" (or whatever the type raises)
            raise _Unsupported from None
        if self.choices is not None and value not in self.choices:
            raise _Unsupported  # argparse's "invalid choice"
        return value


_FLAG_KINDS = {"store_true": False, "store_false": True, "help": None, "version": None}


class _Table:
    """A Command's calls as argparse's parser holds them: its actions, option strings and defaults."""

    def __init__(self, cmd: Command) -> None:
        if set(cmd.kwargs) - _PARSER_KEYS:
            raise _Unsupported
        self.actions: list[_Action] = []
        self.options: dict[str, _Action] = {}
        self.positionals: list[_Action] = []
        self.defaults: dict[str, Any] = {}
        if cmd.kwargs.get("add_help", True):
            self._add(("-h", "--help"), {"action": "help"})
        for call, names, kwargs in cmd.calls:
            if call == "add_argument":
                self._add(names, kwargs)
            elif call == "set_defaults":
                # argparse: a parser default, and the new default of an argument of that dest
                self.defaults.update(kwargs)
                for a in self.actions:
                    if a.dest in kwargs:
                        a.default = kwargs[a.dest]
            else:
                if set(kwargs) - _SUBPARSERS_KEYS or kwargs.get("required"):
                    raise _Unsupported
                a = _Action("subcommands", kwargs.get("dest", ""), _SUBCOMMAND, None)
                a.subcommands = cmd.subcommands
                self.actions.append(a)
                self.positionals.append(a)
        if any(_negative_number(o) for o in self.options):
            raise _Unsupported  # argparse then reads "-1" as an option, not a value

    def _add(self, names: tuple[str, ...], kwargs: dict[str, Any]) -> None:
        kind = kwargs.get("action", "store")
        if set(kwargs) - _ARGUMENT_KEYS or not isinstance(kind, str) or kwargs.get("default") == _SUPPRESS:
            raise _Unsupported  # e.g. argparse.BooleanOptionalAction
        if len(names) == 1 and not names[0].startswith("-"):
            if kind != "store" or set(kwargs) - {"nargs", "default", "help", "metavar"}:
                raise _Unsupported
            if kwargs.get("nargs") not in (None, "?", "*", "+", REMAINDER):
                raise _Unsupported
            a = _Action(kind, names[0], kwargs.get("nargs"), kwargs.get("default"))
            self.positionals.append(a)
        else:
            if kind not in ("store", "append", *_FLAG_KINDS) or "nargs" in kwargs:
                raise _Unsupported
            longs = [n for n in names if n[1:2] == "-"]
            dest = kwargs.get("dest") or (longs or names)[0].lstrip("-").replace("-", "_")
            if kind in ("help", "version"):
                dest = ""  # argparse.SUPPRESS: not in the namespace
            default = (
                kwargs["default"] if "default" in kwargs else self.defaults.get(dest, _FLAG_KINDS.get(kind))
            )
            a = _Action(kind, dest, 0 if kind in _FLAG_KINDS else None, default)
            for n in names:
                self.options[n] = a
        a.type, a.choices = kwargs.get("type"), kwargs.get("choices")
        self.actions.append(a)

    def find(self, arg: str) -> tuple[_Action | None, str, str | None] | None:
        """argparse's ``_parse_optional``: the option a string names (None: an unknown one), with a
        value given in the same string; None for a positional string."""
        if not arg or arg[0] != "-":
            return None
        if arg in self.options:
            return self.options[arg], arg, None
        if len(arg) == 1:
            return None
        name, eq, value = arg.partition("=")
        if eq and name in self.options:
            return self.options[name], name, value
        if arg[1] == "-":  # a long option's unique prefix stands for it (allow_abbrev)
            found = [(o, value if eq else None) for o in self.options if o.startswith(name)]
        else:  # -eFOO, -it: a short option and what follows it
            found = [
                (o, arg[2:] if o == arg[:2] else None)
                for o in self.options
                if o == arg[:2] or o.startswith(arg)
            ]
        if len(found) > 1:
            raise _Unsupported  # argparse's "ambiguous option", even for a string a positional would take
        if found:
            return self.options[found[0][0]], found[0][0], found[0][1]
        if _negative_number(arg) or " " in arg:
            return None
        return None, arg, None

    def read(self, args: list[str]) -> dict[str, Any]:
        ns: dict[str, Any] = {}
        for a in self.actions:  # argparse: each argument's default, then the parser's
            if a.dest and a.dest not in ns:
                ns[a.dest] = a.default
        for dest, value in self.defaults.items():
            ns.setdefault(dest, value)
        # argparse's first pass: what each string is, up to "--" (every string after it is positional)
        found = []
        for arg in args:
            if arg == "--":
                break
            found.append(self.find(arg))
        seen: set[_Action] = set()
        positionals = list(self.positionals)
        i = 0
        while i < len(args):
            if i == len(found):
                raise _Unsupported  # "--" where argparse would strip it: left to argparse
            if found[i] is not None:
                i = self._take_option(found, args, i, ns, seen)
                continue
            # a run of positional strings: argparse gives each positional left as many as it can
            end = i
            while end < len(found) and found[end] is None:
                end += 1
            left = end - i
            for n, p in enumerate(positionals):
                if p.nargs in (REMAINDER, _SUBCOMMAND):  # the last positional: every string from here
                    if p.least > left or args[i : i + 1] == ["--"]:
                        raise _Unsupported  # argparse strips a "--" before it
                    self._take(p, args[i:], ns, seen)
                    return self._finish(ns, seen)
                take = min(p.most, left - sum(q.least for q in positionals[n + 1 :]))
                if take < p.least:
                    raise _Unsupported  # argparse then takes fewer positionals now and the rest later
                self._take(p, args[i : i + take], ns, seen)
                i, left = i + take, left - take
            if left or not positionals:
                raise _Unsupported  # strings no positional takes: argparse's "unrecognized arguments"
            positionals = []
        for n, p in enumerate(positionals):  # none given: those that take no string get their empty value
            if p.least:
                if p.nargs != _SUBCOMMAND or n < len(positionals) - 1:
                    raise _Unsupported  # argparse's "the following arguments are required"
                break  # `pallet image` alone: no verb, main prints the group's help
            self._take(p, [], ns, seen)
        return self._finish(ns, seen)

    def _take_option(
        self, found: list[Any], args: list[str], i: int, ns: dict[str, Any], seen: set[_Action]
    ) -> int:
        """argparse's ``consume_optional``: the option at ``i`` (each of a cluster like -it), with its
        value; the index after it."""
        action, option, value = found[i]
        while True:
            if action is None:
                raise _Unsupported  # an unknown option, or "ignored explicit argument"
            if value is None:
                if action.nargs == 0:
                    self._apply(action, None, ns, seen)
                    return i + 1
                if i + 1 >= len(found) or found[i + 1] is not None:
                    raise _Unsupported  # argparse's "expected one argument"
                self._apply(action, args[i + 1], ns, seen)
                return i + 2
            if action.nargs is None:
                self._apply(action, value, ns, seen)
                return i + 1
            if option[1] == "-" or not value:
                raise _Unsupported  # --rm=x: argparse's "ignored explicit argument"
            self._apply(action, None, ns, seen)
            option, value = "-" + value[0], value[1:] or None
            action = self.options.get(option)

    def _apply(self, action: _Action, text: str | None, ns: dict[str, Any], seen: set[_Action]) -> None:
        seen.add(action)
        if action.kind in ("help", "version"):
            raise _Unsupported  # argparse prints them
        if action.kind in ("store_true", "store_false"):
            ns[action.dest] = action.kind == "store_true"
        elif action.kind == "store":
            ns[action.dest] = action.value(str(text))
        else:  # append: argparse copies the list it finds (the default), then adds to the copy
            items = ns.get(action.dest)
            if items is not None and type(items) is not list:
                raise _Unsupported
            ns[action.dest] = [*(items or []), action.value(str(text))]

    def _take(self, p: _Action, strings: list[str], ns: dict[str, Any], seen: set[_Action]) -> None:
        """A positional and its strings, as argparse's ``_get_values`` makes its value."""
        seen.add(p)
        if p.nargs == _SUBCOMMAND:
            verb, rest = strings[0], strings[1:]
            assert p.subcommands is not None
            if verb not in p.subcommands.choices:
                raise _Unsupported  # argparse's "invalid choice"
            if p.dest:
                ns[p.dest] = verb
            ns.update(p.subcommands.choices[verb]._read(rest))  # the verb's own namespace wins
        elif p.nargs in (None, "?") and strings:
            ns[p.dest] = strings[0]
        elif p.nargs == "?":
            ns[p.dest] = p.default
        elif p.nargs == "*" and not strings and p.default is not None:
            ns[p.dest] = p.default
        else:
            ns[p.dest] = list(strings)

    def _finish(self, ns: dict[str, Any], seen: set[_Action]) -> dict[str, Any]:
        for a in self.actions:  # argparse: a string default of an argument not given goes through its type
            if a.type and a not in seen and isinstance(a.default, str) and ns.get(a.dest) is a.default:
                try:
                    ns[a.dest] = a.type(a.default)
                except Exception:
                    raise _Unsupported from None
        return ns


def _negative_number(text: str) -> bool:
    """argparse's ``^-\\d+$|^-\\d*\\.\\d+$`` (without importing re)."""
    whole, dot, frac = text[1:].partition(".")
    return text[:1] == "-" and (
        whole.isdecimal() if not dot else (not whole or whole.isdecimal()) and frac.isdecimal()
    )
