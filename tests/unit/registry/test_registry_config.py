from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pallet.errors import FailedPrecondition, InvalidArgument
from pallet.image.registry.config import (
    HUB_KEY,
    Credentials,
    config_path,
    lookup,
    normalize_host,
    remove,
    server_key,
    store,
)


def test_config_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert config_path() == tmp_path / "dc" / "config.json"
    assert config_path(tmp_path / "mine") == tmp_path / "mine" / "config.json"
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_path() == tmp_path / "home" / ".docker" / "config.json"


def test_keys_and_hosts() -> None:
    assert server_key("docker.io") == HUB_KEY
    assert server_key("index.docker.io") == HUB_KEY
    assert server_key("https://localhost:5000/v2/") == "localhost:5000"
    assert normalize_host(HUB_KEY) == "docker.io"
    assert normalize_host("http://Reg.Example:443") == "reg.example:443"


def test_store_lookup_remove_keep_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "d" / "config.json"
    path.parent.mkdir()
    path.write_text(
        json.dumps({"auths": {"other:1": {"auth": base64.b64encode(b"a:b").decode()}}, "psFormat": "x"})
    )
    store(path, "127.0.0.1:5000", Credentials("me", "pa:ss"))
    data = json.loads(path.read_text())
    assert data["psFormat"] == "x"
    assert data["auths"]["127.0.0.1:5000"] == {"auth": base64.b64encode(b"me:pa:ss").decode()}
    assert path.stat().st_mode & 0o777 == 0o600
    assert lookup(path, "127.0.0.1:5000") == Credentials("me", "pa:ss")
    assert lookup(path, "other:1") == Credentials("a", "b")
    assert lookup(path, "nowhere") is None
    assert remove(path, "127.0.0.1:5000") is True
    assert remove(path, "127.0.0.1:5000") is False
    assert lookup(path, "127.0.0.1:5000") is None
    assert "other:1" in json.loads(path.read_text())["auths"]


def test_docker_written_entries(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "auths": {
                    HUB_KEY: {"auth": base64.b64encode(b"hubuser:hubpw").decode()},
                    "https://reg.example:5000": {"username": "u", "password": "p"},
                }
            }
        )
    )
    assert lookup(path, "docker.io") == Credentials("hubuser", "hubpw")
    assert lookup(path, "reg.example:5000") == Credentials("u", "p")
    # docker.io login replaces the Hub entry, whichever alias was typed
    store(path, "index.docker.io", Credentials("new", "pw"))
    assert sorted(json.loads(path.read_text())["auths"]) == sorted([HUB_KEY, "https://reg.example:5000"])
    assert lookup(path, "docker.io") == Credentials("new", "pw")


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    assert lookup(tmp_path / "none.json", "x") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(InvalidArgument, match="invalid json"):
        lookup(bad, "x")
    bad.write_text(json.dumps({"auths": {"x": {"auth": "bm9jb2xvbg=="}}}))  # "nocolon"
    with pytest.raises(InvalidArgument, match='invalid auth for "x"'):
        lookup(bad, "x")


def _fake_helper(bindir: Path, store: Path) -> None:
    """docker-credential-fake: keeps secrets in a JSON file, speaks the helper protocol."""
    import sys

    script = bindir / "docker-credential-fake"
    script.write_text(
        f"""#!{sys.executable}
import json, sys
path = {str(store)!r}
try:
    db = json.load(open(path))
except FileNotFoundError:
    db = {{}}
verb, data = sys.argv[1], sys.stdin.read()
if verb == "store":
    d = json.loads(data)
    db[d["ServerURL"]] = [d["Username"], d["Secret"]]
elif verb == "get":
    if data.strip() not in db:
        print("credentials not found in native keychain")
        sys.exit(1)
    user, secret = db[data.strip()]
    print(json.dumps({{"ServerURL": data.strip(), "Username": user, "Secret": secret}}))
elif verb == "erase":
    db.pop(data.strip(), None)
json.dump(db, open(path, "w"))
"""
    )
    script.chmod(0o755)


def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    secrets = tmp_path / "secrets.json"
    _fake_helper(bindir, secrets)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"credsStore": "fake"}))
    assert lookup(path, "reg.example:5000") is None
    store(path, "reg.example:5000", Credentials("u", "s3"))
    assert json.loads(path.read_text())["auths"] == {"reg.example:5000": {}}  # no secret in the file
    assert json.loads(secrets.read_text()) == {"reg.example:5000": ["u", "s3"]}
    assert lookup(path, "reg.example:5000") == Credentials("u", "s3")
    assert remove(path, "reg.example:5000") is True
    assert json.loads(secrets.read_text()) == {}
    # a per-registry helper wins over the store; a missing one is a clear error
    path.write_text(json.dumps({"credsStore": "fake", "credHelpers": {"other:1": "absent"}}))
    with pytest.raises(
        FailedPrecondition, match='credential helper "docker-credential-absent" is not installed'
    ):
        lookup(path, "other:1")
