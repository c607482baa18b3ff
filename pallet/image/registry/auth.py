"""Registry authentication: ``WWW-Authenticate`` challenges, scopes, and tokens reused per scope.

The dance (distribution's token spec): a request without credentials gets ``401`` with
``WWW-Authenticate: Bearer realm="…",service="…",scope="…"``; the client asks the realm for a token
for that service and scope (with basic credentials when it has them) and repeats the request with
``Authorization: Bearer <token>``. A ``Basic`` challenge means sending the credentials themselves.
Tokens are kept per scope set until shortly before they expire, so a pull of many layers asks once.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# auth-param = token "=" ( token / quoted-string ), RFC 7235
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(?:,|$)')
_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9_.-]*)(?:\s+|$)")
DEFAULT_EXPIRY = 60.0  # the token spec's default lifetime when a realm names none
EARLY = 5.0  # refresh this many seconds before the token expires


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "basic" or "bearer"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenges(header: str) -> list[Challenge]:
    """Every challenge in one ``WWW-Authenticate`` value, e.g. ``Bearer realm="x",scope="a,b"``."""
    out: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = _SCHEME.match(header, pos)
        if m is None:
            break
        scheme, pos = m.group(1).lower(), m.end()
        params: dict[str, str] = {}
        while pos < len(header):
            p = _PARAM.match(header, pos)
            if p is None:
                break
            value = p.group(2) if p.group(2) is not None else p.group(3)
            params[p.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            pos = p.end()
        out.append(Challenge(scheme, params))
        while pos < len(header) and header[pos] in ", ":
            pos += 1
    return out


def repository_scope(repository: str, *actions: str) -> str:
    """``repository:library/busybox:pull,push``; the repository is the path, without the host."""
    return f"repository:{repository}:{','.join(actions)}"


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class TokenCache:
    """Bearer tokens by (realm, service, scopes); shared by the threads of one pull or push."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._tokens: dict[tuple[str, str, tuple[str, ...]], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    @staticmethod
    def key(realm: str, service: str, scopes: list[str]) -> tuple[str, str, tuple[str, ...]]:
        return realm, service, tuple(sorted(set(scopes)))

    def get(self, key: tuple[str, str, tuple[str, ...]]) -> str | None:
        with self._lock:
            found = self._tokens.get(key)
            if found is None or found[1] <= self._clock():
                return None
            return found[0]

    def put(self, key: tuple[str, str, tuple[str, ...]], token: str, expires_in: float | None) -> None:
        life = expires_in if expires_in and expires_in > 0 else DEFAULT_EXPIRY
        with self._lock:
            self._tokens[key] = (token, self._clock() + max(life - EARLY, 1.0))

    def drop(self, key: tuple[str, str, tuple[str, ...]]) -> None:
        with self._lock:
            self._tokens.pop(key, None)
