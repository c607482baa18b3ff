"""The CNI chain runner against fake plugins that log what they were given."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pallet.engine.network import cni
from pallet.errors import FailedPrecondition

FAKE = """#!{python}
import json, os, sys
conf = json.load(sys.stdin)
with open({log!r}, "a") as f:
    f.write(json.dumps({{"cmd": os.environ["CNI_COMMAND"], "type": conf["type"], "prev": conf.get("prevResult"),
                        "rc": conf.get("runtimeConfig"), "netns": os.environ["CNI_NETNS"],
                        "id": os.environ["CNI_CONTAINERID"], "if": os.environ["CNI_IFNAME"]}}) + "\\n")
if os.environ["CNI_COMMAND"] == "ADD":
    if conf.get("fail"):
        print(json.dumps({{"code": 11, "msg": "no luck", "details": "at all"}}))
        sys.exit(1)
    result = conf.get("prevResult") or {{"cniVersion": "1.0.0", "ips": [{{"address": "10.0.0.2/24"}}]}}
    result.setdefault("seen", []).append(conf["type"])
    print(json.dumps(result))
"""


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "log"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("one", "two"):
        p = bindir / name
        p.write_text(FAKE.format(python=sys.executable, log=str(log)))
        p.chmod(0o755)
    monkeypatch.setattr(cni, "CNI_PATH", str(bindir))
    return log


def _log(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _chain(tmp_path: Path, second: dict[str, object] | None = None) -> cni.Chain:
    conflist = {"cniVersion": "1.0.0", "name": "n1",
                "plugins": [{"type": "one", "capabilities": {"portMappings": True}}, {"type": "two", **(second or {})}]}  # fmt: skip
    return cni.Chain(conflist, tmp_path / "cache")


def test_add_chains_prev_result_and_del_runs_backwards_with_the_cached_result(
    plugins: Path, tmp_path: Path
) -> None:
    chain = _chain(tmp_path)
    result = chain.add("c1", "/run/netns/x", "eth0", {"portMappings": [{"hostPort": 1}], "ips": ["10.0.0.9"]})
    assert result["seen"] == ["one", "two"]
    log = _log(plugins)
    assert [(e["cmd"], e["type"]) for e in log] == [("ADD", "one"), ("ADD", "two")]
    assert log[0]["prev"] is None and log[1]["prev"] == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.0.0.2/24"}],
        "seen": ["one"],
    }
    # capabilities: only what a plugin declares reaches it as runtimeConfig
    assert log[0]["rc"] == {"portMappings": [{"hostPort": 1}]} and log[1]["rc"] is None
    assert log[0]["id"] == "c1" and log[0]["if"] == "eth0" and log[0]["netns"] == "/run/netns/x"
    chain.check("c1", "eth0")
    plugins.write_text("")
    chain.delete("c1", "eth0")
    log = _log(plugins)
    assert [(e["cmd"], e["type"]) for e in log] == [("DEL", "two"), ("DEL", "one")]
    assert all(e["prev"] == result for e in log)
    assert not list((tmp_path / "cache").iterdir())
    chain.delete("c1", "eth0")  # idempotent: nothing cached, nothing run
    assert len(_log(plugins)) == 2


def test_a_failed_add_is_one_clear_error_and_undone(plugins: Path, tmp_path: Path) -> None:
    chain = _chain(tmp_path, {"fail": True})
    with pytest.raises(FailedPrecondition, match='network "n1": plugin two ADD failed: no luck: at all'):
        chain.add("c2", "/run/netns/y", "eth0", {})
    cmds = [(e["cmd"], e["type"]) for e in _log(plugins)]
    assert cmds == [("ADD", "one"), ("ADD", "two"), ("DEL", "two"), ("DEL", "one")]
    assert not list((tmp_path / "cache").iterdir())


def test_a_missing_plugin_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cni, "CNI_PATH", str(tmp_path))
    with pytest.raises(FailedPrecondition, match='CNI plugin "one" not found'):
        _chain(tmp_path).add("c3", "/x", "eth0", {})
