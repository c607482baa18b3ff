"""docker's output conventions: human sizes and durations (go-units), tab-aligned tables
(text/tabwriter with docker's settings) and a small subset of Go templates for ``--format``.

Supported template actions: ``{{.Field}}``, ``{{.A.B}}``, ``{{json .}}``, ``{{json .Field}}``,
``{{.}}``; a leading ``table`` prints a header row; ``\\t`` in a format is a tab, as in docker.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable

# docker's duration words live with the engine's views; the CLI's templates use them from here
from pallet.engine.views import human_duration as human_duration
from pallet.engine.views import since as since
from pallet.errors import InvalidArgument, PalletError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any

_DECIMAL = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
# compiled on first use (re caches it): ~0.8 ms that `pallet run` would pay for ps's --format
_ACTION = r"\{\{\s*(json\s+)?(\.[\w.]*)\s*\}\}"


def human_size(size: float, precision: int = 4) -> str:
    """go-units HumanSizeWithPrecision: decimal units, ``precision`` significant digits."""
    i = 0
    while size >= 1000 and i < len(_DECIMAL) - 1:
        size /= 1000
        i += 1
    return f"{size:.{precision}g}{_DECIMAL[i]}"


def ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def tabwrite(rows: list[list[str]]) -> str:
    """text/tabwriter as docker configures it: minwidth 10, padding 3; the last column is not padded."""
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = [0] * ncols
    for r in rows:
        for i, cell in enumerate(r[:-1]):
            widths[i] = max(widths[i], len(cell) + 3, 10)
    lines = []
    for r in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(r[:-1])] + r[-1:]
        lines.append("".join(cells).rstrip() if not r[-1] else "".join(cells))
    return "\n".join(lines) + "\n"


def _lookup(obj: Any, path: str) -> Any:
    for part in [p for p in path.split(".") if p]:
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        else:
            raise InvalidArgument(f'template: can\'t evaluate field "{part}"')
    return obj


def _text(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_text(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def render(template: str, obj: Any) -> str:
    """Execute the supported Go-template subset against a dict."""
    if "{{" in re.sub(_ACTION, "", template):
        raise InvalidArgument(f'template: unsupported action in "{template}"')

    def action(m: re.Match[str]) -> str:
        value = _lookup(obj, m.group(2))
        return json.dumps(value) if m.group(1) else _text(value)

    return re.sub(_ACTION, action, template.replace("\\t", "\t").replace("\\n", "\n"))


def print_rows(fmt: str | None, default: str, headers: dict[str, str], rows: list[dict[str, Any]]) -> str:
    """Rows as docker prints them for ``--format``: ``table …`` (default), ``json`` or a template."""
    fmt = fmt or default
    if fmt == "json":
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    if fmt.startswith("table"):
        body = fmt[len("table") :].strip() or default[len("table") :].strip()
        header = re.sub(
            _ACTION, lambda m: headers.get(m.group(2).lstrip("."), m.group(2).lstrip(".").upper()), body
        )
        lines = [header.replace("\\t", "\t")] + [render(body, r) for r in rows]
        return tabwrite([line.split("\t") for line in lines])
    return "".join(render(fmt, r) + "\n" for r in rows)


def print_inspect(fmt: str | None, objs: list[Any]) -> None:
    """docker's `inspect` output: each object through --format, else one JSON array indented by 4."""
    if fmt:
        for o in objs:
            print(render(fmt, o))
    else:
        print(json.dumps(objs, indent=4))


def inspect_each(fmt: str | None, refs: list[str], get: Callable[[str], Any], failed_code: int = 1) -> int:
    """docker's ``inspect`` of several objects: each one found is printed, each one not is an
    ``Error:`` line, and the exit is ``failed_code`` if any was not."""
    out, failed = [], 0
    for ref in refs:
        try:
            out.append(get(ref))
        except PalletError as e:
            print(f"Error: {e}", file=sys.stderr)
            failed = failed_code
    print_inspect(fmt, out)
    return failed
