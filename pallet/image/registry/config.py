"""Credentials in docker's ``config.json``: ``{"auths": {"<server>": {"auth": base64("user:pass")}}}``.

The file is docker's own (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``) unless a
directory is given, so ``docker login`` and ``pallet login`` see each other's credentials. Keys are
the server as the user typed it; Docker Hub's is ``https://index.docker.io/v1/``, and lookups also
accept keys written as URLs (``https://host:5000``) the way docker's own lookup does. Other keys in
the file (proxies, formats, …) are kept untouched on write.

Credential helpers work as docker's do: ``credHelpers[<host>]`` or else ``credsStore`` names a
``docker-credential-<name>`` program that is run with ``get``/``store``/``erase`` and speaks JSON on
its stdin and stdout; the file then keeps only an empty ``auths`` entry for the server.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pallet.errors import FailedPrecondition, InvalidArgument

HUB_DOMAIN = "docker.io"
HUB_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def config_path(directory: str | Path | None = None) -> Path:
    """config.json in ``directory``, else in $DOCKER_CONFIG, else in ~/.docker."""
    if directory is None:
        directory = os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker"
    return Path(directory) / "config.json"


def server_key(server: str) -> str:
    """The config.json key for a server as given to login/logout: Docker Hub's aliases become its key."""
    host = normalize_host(server)
    return HUB_KEY if host in _HUB_ALIASES else host


def normalize_host(server: str) -> str:
    """``https://host:5000/v2/`` → ``host:5000``; ``index.docker.io`` → ``docker.io``."""
    s = server.strip()
    for prefix in ("https://", "http://"):
        if s.startswith(prefix):
            s = s[len(prefix) :]
    host = s.split("/", 1)[0].lower()
    return HUB_DOMAIN if host in _HUB_ALIASES else host


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise InvalidArgument(f'config file "{path}": invalid json: {e}') from None
    if not isinstance(data, dict):
        raise InvalidArgument(f'config file "{path}": not a json object')
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    """Atomically, private to the user (it holds passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent="\t") + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _helper(data: dict[str, Any], host: str) -> str | None:
    helpers = data.get("credHelpers")
    if isinstance(helpers, dict) and isinstance(helpers.get(host), str):
        return str(helpers[host])
    store = data.get("credsStore")
    return store if isinstance(store, str) and store else None


def _run_helper(name: str, verb: str, payload: str) -> str | None:
    """Run ``docker-credential-<name> <verb>``; None when it knows no credentials for the server."""
    program = f"docker-credential-{name}"
    try:
        p = subprocess.run([program, verb], input=payload, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise FailedPrecondition(f'credential helper "{program}" is not installed') from None
    if p.returncode != 0:
        message = (p.stdout.strip() or p.stderr.strip()).splitlines()
        if message and "credentials not found" in message[0].lower():
            return None
        raise FailedPrecondition(
            f'credential helper "{program}" {verb}: {message[0] if message else p.returncode}'
        )
    return p.stdout


def lookup(path: Path, host: str) -> Credentials | None:
    """The credentials stored for a registry host (``docker.io``, ``localhost:5000``), if any."""
    data = _read(path)
    want = normalize_host(host)
    helper = _helper(data, want)
    if helper is not None:
        out = _run_helper(helper, "get", HUB_KEY if want == HUB_DOMAIN else want)
        if out is None:
            return None
        try:
            answer = json.loads(out)
            return Credentials(str(answer["Username"]), str(answer["Secret"]))
        except (ValueError, KeyError, TypeError):
            raise FailedPrecondition(
                f'credential helper "docker-credential-{helper}" get: invalid answer'
            ) from None
    auths = data.get("auths")
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if not isinstance(entry, dict) or normalize_host(key) != want:
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise InvalidArgument(f'config file "{path}": invalid auth for "{key}"') from None
            if not sep:
                raise InvalidArgument(f'config file "{path}": invalid auth for "{key}"')
            return Credentials(user, password)
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"])
    return None


def store(path: Path, server: str, creds: Credentials) -> None:
    data = _read(path)
    auths = data.get("auths")
    if not isinstance(auths, dict):
        auths = data["auths"] = {}
    key = server_key(server)
    for old in [k for k in auths if normalize_host(k) == normalize_host(key) and k != key]:
        del auths[old]
    helper = _helper(data, normalize_host(key))
    if helper is not None:
        payload = {"ServerURL": key, "Username": creds.username, "Secret": creds.password}
        _run_helper(helper, "store", json.dumps(payload))
        auths[key] = {}
    else:
        auths[key] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    _write(path, data)


def remove(path: Path, server: str) -> bool:
    """Forget a server's credentials; False when there were none."""
    data = _read(path)
    auths = data.get("auths")
    if not isinstance(auths, dict):
        return False
    want = normalize_host(server_key(server))
    gone = [k for k in auths if normalize_host(k) == want]
    helper = _helper(data, want)
    for k in gone:
        if helper is not None:
            _run_helper(helper, "erase", k)
        del auths[k]
    if gone:
        _write(path, data)
    return bool(gone)
