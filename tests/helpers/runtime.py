"""Driving an OCI runtime binary (pallet-runtime, runc or crun) in tests, with its own --root."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any


class RuntimeCLI:
    def __init__(self, argv0: list[str], root: Path) -> None:
        self.argv0 = argv0
        self.root = root

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 60, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        # files, not pipes: a detached container inherits our stdout/stderr and would hold a pipe open
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run(
                [*self.argv0, "--root", str(self.root), *args], stdout=out, stderr=err, timeout=timeout, **kw
            )
            out.seek(0)
            err.seek(0)
            r = subprocess.CompletedProcess(p.args, p.returncode, out.read().decode(), err.read().decode())
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
        return r

    def state(self, cid: str) -> dict[str, Any]:
        return json.loads(self("state", cid).stdout)

    def cleanup(self, *ids: str) -> None:
        for cid in ids:
            self("delete", "--force", cid, check=False)


def set_config(bundle: Path, **changes: Any) -> dict[str, Any]:
    """Edit config.json: keys are dotted paths (process.args=...)."""
    path = bundle / "config.json"
    cfg = json.loads(path.read_text())
    for dotted, value in changes.items():
        node = cfg
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    path.write_text(json.dumps(cfg, indent=2))
    return cfg


def edit_config(bundle: Path) -> tuple[dict[str, Any], Any]:
    """(config, save) for free-form edits."""
    path = bundle / "config.json"
    cfg = json.loads(path.read_text())

    def save() -> None:
        path.write_text(json.dumps(cfg, indent=2))

    return cfg, save
