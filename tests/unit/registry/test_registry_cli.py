from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pallet.cli.main import main
from pallet.cli.registry import Progress
from pallet.image.registry.pull import Event, parse_platform


def test_plain_progress_prints_each_status_once() -> None:
    out = io.StringIO()
    p = Progress(out, tty=False)
    for e in [
        Event("aaa", "Pulling fs layer"),
        Event("aaa", "Downloading", 1, 10),
        Event("aaa", "Downloading", 5, 10),
        Event("bbb", "Already exists"),
        Event("aaa", "Download complete"),
    ]:
        p(e)
    p.finish()
    assert out.getvalue() == (
        "aaa: Pulling fs layer\naaa: Downloading\nbbb: Already exists\naaa: Download complete\n"
    )


def test_terminal_progress_redraws_in_place() -> None:
    out = io.StringIO()
    p = Progress(out, tty=True)
    p(Event("aaa", "Pulling fs layer"))
    p(Event("bbb", "Pulling fs layer"))
    p.last_draw = 0.0
    p(Event("aaa", "Downloading", 5 << 20, 10 << 20))
    p.finish()
    text = out.getvalue()
    assert "\x1b[2A" in text  # back up over both lines before redrawing them
    bar = "=" * 24 + ">" + " " * 25
    assert f"\x1b[2Kaaa: Downloading [{bar}]  5.243MB/10.49MB\n" in text
    assert text.endswith("bbb: Pulling fs layer\n")


def test_parse_platform() -> None:
    assert str(parse_platform("linux/arm64/v8")) == "linux/arm64/v8"
    with pytest.raises(Exception, match="want os/arch"):
        parse_platform("linux")


def test_logout_and_login_usage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    root = ["--root", str(tmp_path / "root")]
    assert main([*root, "logout"]) == 0
    assert capsys.readouterr().out == "Not logged in to https://index.docker.io/v1/\n"
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(
        json.dumps({"auths": {"reg.example:5000": {"auth": "dTpw"}}})
    )
    assert main([*root, "logout", "reg.example:5000"]) == 0
    assert capsys.readouterr().out == "Removing login credentials for reg.example:5000\n"
    assert json.loads((tmp_path / "cfg" / "config.json").read_text())["auths"] == {}
    assert main([*root, "login", "--password-stdin", "reg.example:5000"]) == 125
    assert "must provide --username with --password-stdin" in capsys.readouterr().err
