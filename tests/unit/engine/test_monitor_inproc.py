"""The monitor's in-process pallet-runtime verbs fail with the binary's words and exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pallet.engine.monitor.inproc import run_verb


def _last_error(log: Path) -> str:
    return [json.loads(line) for line in log.read_text().splitlines()][-1]["msg"]


def test_errors_as_the_binary_reports_them(tmp_path: Path) -> None:
    bundle = tmp_path / "no-such-bundle"
    for verb in (["create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid")], ["start"]):
        a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
        a_log.unlink(missing_ok=True)
        b_log.unlink(missing_ok=True)
        code = run_verb(str(tmp_path / "a"), str(a_log), [*verb, "web"])
        cli = subprocess.run(
            [sys.executable, "-m", "pallet.cli.runtime", "--root", str(tmp_path / "b"), "--log", str(b_log)]
            + ["--log-format", "json", *verb, "web"],
            capture_output=True,
            text=True,
        )
        assert (code, _last_error(a_log)) == (cli.returncode, _last_error(b_log))
        assert code == 1
        assert cli.stderr.strip() == f"pallet-runtime: {_last_error(a_log)}"


def test_delete_force_of_an_unknown_container_succeeds(tmp_path: Path) -> None:
    assert run_verb(str(tmp_path), str(tmp_path / "log"), ["delete", "--force", "web"]) == 0
    assert run_verb(str(tmp_path), str(tmp_path / "log"), ["delete", "web"]) == 1
    assert "web" in _last_error(tmp_path / "log")
