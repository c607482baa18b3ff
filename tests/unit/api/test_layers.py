"""DESIGN.md: front ends import only downward; the API serialises through pallet.engine.views, never
through the CLI's modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pallet

ROOT = Path(pallet.__file__).parent


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_api_and_engine_never_import_the_cli() -> None:
    bad = {
        f"{p.relative_to(ROOT)}: {m}"
        for layer in ("api", "engine")
        for p in (ROOT / layer).rglob("*.py")
        for m in _imports(p)
        if m == "pallet.cli" or m.startswith("pallet.cli.")
    }
    assert not bad
