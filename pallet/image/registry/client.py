"""The distribution spec's endpoints on one registry, with authentication.

Endpoints (https://github.com/opencontainers/distribution-spec/blob/main/spec.md):
``GET /v2/`` (ping: learns the auth challenge), ``GET|HEAD|PUT /v2/<name>/manifests/<ref>``,
``GET|HEAD /v2/<name>/blobs/<digest>`` (``Range`` resumes; may redirect to storage),
``POST /v2/<name>/blobs/uploads/[?mount=<digest>&from=<repo>]`` then ``PATCH`` chunks and a final
``PUT <location>?digest=<digest>``. Errors come back as ``{"errors": [{"code", "message"}]}``.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from pallet.errors import FailedPrecondition, InvalidArgument, NotFound, PalletError, PermissionDenied
from pallet.image.registry.auth import Challenge, TokenCache, basic_header, parse_challenges
from pallet.image.registry.config import Credentials
from pallet.image.registry.transport import Body, Transport, api_host, describe
from pallet.oci.digest import Digest
from pallet.oci.image import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST

MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
MAX_MANIFEST = 4 << 20  # the spec lets registries refuse bigger ones; so do we
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Fetched:
    media_type: str
    data: bytes
    digest: Digest


def error_message(body: bytes, status: int, reason: str) -> str:
    """The registry's own words: ``manifest unknown``, ``authentication required``, …"""
    try:
        errors = json.loads(body).get("errors") or []
        msgs = [str(e.get("message") or e.get("code") or "").lower() for e in errors if isinstance(e, dict)]
        msgs = [m for m in msgs if m]
        if msgs:
            return "; ".join(dict.fromkeys(msgs))
    except (ValueError, AttributeError):
        pass
    return f"{status} {reason}".strip().lower()


class Registry:
    """A client for one registry host (``127.0.0.1:5000``, ``docker.io``); safe to share between threads."""

    def __init__(
        self,
        domain: str,
        credentials: Credentials | None = None,
        certs_dirs: list[Path] | None = None,
        insecure: bool = False,
        tokens: TokenCache | None = None,
    ) -> None:
        self.domain = domain
        self.host = api_host(domain)
        self.credentials = credentials
        self.transport = Transport(self.host, certs_dirs or [], insecure)
        self.tokens = tokens or TokenCache()
        self.challenge: Challenge | None = None
        self._pinged = False
        self._lock = threading.Lock()
        self._token_lock = threading.Lock()
        self.token_requests = 0  # how many times a realm was asked (tests check reuse)

    def close(self) -> None:
        self.transport.close()

    # -- authentication -----------------------------------------------------------------------------
    def ping(self) -> None:
        """``GET /v2/`` once: chooses the scheme and learns how the registry wants us to authenticate."""
        with self._lock:
            if self._pinged:
                return
            self.transport.resolve_scheme()
            url = self.transport.url("/v2/")
            resp = self.transport.send("GET", url, {})
            body = resp.read()
            if resp.status == 401:
                self.challenge = _pick(parse_challenges(resp.getheader("WWW-Authenticate") or ""))
            elif resp.status != 200:
                raise FailedPrecondition(
                    f'registry "{self.domain}": not a registry: GET /v2/ returned '
                    f"{error_message(body, resp.status, resp.reason)}"
                )
            self._pinged = True

    def _token(self, challenge: Challenge, scopes: list[str], refresh: bool = False) -> str:
        realm, service = challenge.realm, challenge.params.get("service", "")
        key = TokenCache.key(realm, service, scopes)
        if not refresh and (token := self.tokens.get(key)) is not None:
            return token
        with self._token_lock:  # one fetch at a time: threads that asked meanwhile reuse its token
            if not refresh and (token := self.tokens.get(key)) is not None:
                return token
            return self._fetch_token(realm, service, key)

    def _fetch_token(self, realm: str, service: str, key: tuple[str, str, tuple[str, ...]]) -> str:
        if not realm:
            raise FailedPrecondition(f'registry "{self.domain}": bearer challenge without a realm')
        query = [("service", service)] if service else []
        query += [("scope", s) for s in key[2]]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {}
        if self.credentials is not None:
            headers["Authorization"] = basic_header(self.credentials.username, self.credentials.password)
        self.token_requests += 1
        resp = self.transport.send("GET", url, headers)
        body = resp.read()
        if resp.status in (401, 403):
            what = "incorrect username or password" if self.credentials else "authentication required"
            raise PermissionDenied(f'registry "{self.domain}": unauthorized: {what}')
        if resp.status != 200:
            raise FailedPrecondition(
                f'registry "{self.domain}": token server returned {error_message(body, resp.status, resp.reason)}'
            )
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise FailedPrecondition(f'registry "{self.domain}": token server sent no token')
        expires = answer.get("expires_in")
        self.tokens.put(key, token, float(expires) if isinstance(expires, int | float) else None)
        return token

    def _authorization(self, scopes: list[str], refresh: bool = False) -> dict[str, str]:
        ch = self.challenge
        if ch is None:
            return {}
        if ch.scheme == "bearer":
            return {"Authorization": "Bearer " + self._token(ch, scopes, refresh)}
        if ch.scheme == "basic" and self.credentials is not None:
            return {"Authorization": basic_header(self.credentials.username, self.credentials.password)}
        return {}

    def login(self) -> None:
        """Check the credentials: a token for no scope (bearer), or an authorised ``GET /v2/`` (basic)."""
        self.ping()
        if self.challenge is None:
            return
        if self.challenge.scheme == "bearer":
            self._token(self.challenge, [], refresh=True)
            return
        resp = self.transport.send("GET", self.transport.url("/v2/"), self._authorization([]))
        body = resp.read()
        if resp.status == 401:
            what = "incorrect username or password" if self.credentials else "authentication required"
            raise PermissionDenied(f'registry "{self.domain}": unauthorized: {what}')
        if resp.status != 200:
            raise FailedPrecondition(
                f'registry "{self.domain}": login: {error_message(body, resp.status, resp.reason)}'
            )

    # -- requests ------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        scopes: list[str],
        headers: dict[str, str] | None = None,
        body: Body = None,
        ok: tuple[int, ...] = (200,),
    ) -> http.client.HTTPResponse:
        """Send with authorisation, answering one fresh 401 challenge; follows redirects for GET/HEAD
        (without our credentials when they lead elsewhere). A status outside ``ok`` raises, with the
        registry's message. The caller reads the returned response to its end."""
        self.ping()
        url = self.transport.url(path)
        own = urllib.parse.urlsplit(url).netloc
        start = body.tell() if body is not None and not isinstance(body, bytes) else 0
        refresh = False
        for _ in range(MAX_REDIRECTS + 2):
            h = dict(headers or {})
            if urllib.parse.urlsplit(url).netloc == own:
                h.update(self._authorization(scopes, refresh))
            resp = self.transport.send(method, url, h, body)
            if resp.status == 401 and not refresh:
                resp.read()
                fresh = _pick(parse_challenges(resp.getheader("WWW-Authenticate") or ""))
                if fresh is not None:
                    self.challenge = fresh
                    extra = fresh.params.get("scope")
                    if extra and extra not in scopes:
                        scopes = [*scopes, extra]
                ch = self.challenge
                if ch is not None and (ch.scheme == "bearer" or self.credentials is not None):
                    refresh = True
                    if body is not None and not isinstance(body, bytes):
                        body.seek(start)
                    continue
                raise PermissionDenied("unauthorized: authentication required")
            if resp.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                resp.read()
                location = resp.getheader("Location")
                if not location:
                    break
                url = urllib.parse.urljoin(url, location)
                continue
            if resp.status not in ok:
                raise self._error(method, resp)
            return resp
        raise FailedPrecondition(f'registry "{self.domain}": too many redirects or auth retries for {path}')

    def _error(self, method: str, resp: http.client.HTTPResponse) -> PalletError:
        body = b"" if method == "HEAD" else self.read_capped(resp, 64 << 10)
        msg = error_message(body, resp.status, resp.reason)
        if resp.status == 401:
            return PermissionDenied(f"unauthorized: {msg}")
        if resp.status == 403:
            return PermissionDenied(f"denied: {msg}")
        if resp.status == 404:
            return NotFound(msg)
        return FailedPrecondition(f'registry "{self.domain}" returned {msg}')

    def read_capped(self, resp: http.client.HTTPResponse, limit: int) -> bytes:
        """At most ``limit`` bytes; a connection with more left unread is not reused."""
        try:
            data = resp.read(limit)
        except (OSError, http.client.HTTPException) as e:
            self.transport.abandon()
            raise FailedPrecondition(describe(self.domain, e)) from e
        if not resp.isclosed():
            self.transport.abandon()
        return data

    # -- manifests -----------------------------------------------------------------------------------
    def get_manifest(self, repository: str, reference: str, scopes: list[str]) -> Fetched:
        """A manifest or index by tag or digest, verified against the digest when asked by digest."""
        resp = self.request(
            "GET", f"/v2/{repository}/manifests/{reference}", scopes, {"Accept": MANIFEST_ACCEPT}
        )
        data = self.read_capped(resp, MAX_MANIFEST + 1)
        if len(data) > MAX_MANIFEST:
            raise InvalidArgument(f'manifest "{repository}:{reference}": larger than {MAX_MANIFEST} bytes')
        media_type = (resp.getheader("Content-Type") or "").split(";")[0].strip()
        try:
            embedded = json.loads(data).get("mediaType")  # the document's own word wins over the header
        except (ValueError, AttributeError):
            raise InvalidArgument(f'manifest "{repository}:{reference}": not json') from None
        if isinstance(embedded, str) and embedded:
            media_type = embedded
        elif media_type not in (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST):
            # an OCI document may leave mediaType out and be served as application/json
            media_type = (
                OCI_INDEX if b'"manifests"' in data else OCI_MANIFEST if b'"config"' in data else media_type
            )
        if reference.startswith("sha") and ":" in reference:
            want = Digest.parse(reference)
            got = Digest.of(data, want.algorithm)
            if got != want:
                raise InvalidArgument(
                    f'manifest "{repository}@{want}": registry sent content with digest {got}'
                )
            return Fetched(media_type, data, want)
        return Fetched(media_type, data, Digest.of(data))

    def put_manifest(
        self, repository: str, reference: str, media_type: str, data: bytes, scopes: list[str]
    ) -> Digest | None:
        resp = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scopes,
            {"Content-Type": media_type, "Content-Length": str(len(data))},
            data,
            ok=(200, 201, 202),
        )
        resp.read()
        header = resp.getheader("Docker-Content-Digest")
        return Digest.parse(header) if header else None

    # -- blobs ---------------------------------------------------------------------------------------
    def blob_exists(self, repository: str, digest: Digest, scopes: list[str]) -> bool:
        resp = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scopes, ok=(200, 404))
        resp.read()
        return resp.status == 200

    def get_blob(
        self, repository: str, digest: Digest, scopes: list[str], offset: int = 0
    ) -> http.client.HTTPResponse:
        """The blob from ``offset`` on: check ``status`` (206 when the range was honoured, 200 for all)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            return self.request("GET", f"/v2/{repository}/blobs/{digest}", scopes, headers, ok=(200, 206))
        except NotFound as e:
            raise NotFound(f'blob "{digest}": {e}') from e

    def start_upload(
        self, repository: str, scopes: list[str], mount: Digest | None = None, source: str = ""
    ) -> str | None:
        """``POST`` an upload; returns its location, or None when the blob was mounted from ``source``."""
        path = f"/v2/{repository}/blobs/uploads/"
        if mount is not None:
            path += "?" + urllib.parse.urlencode({"mount": str(mount), "from": source})
        resp = self.request("POST", path, scopes, {"Content-Length": "0"}, b"", ok=(201, 202))
        resp.read()
        if resp.status == 201 and mount is not None:
            return None
        location = resp.getheader("Location")
        if not location:
            raise FailedPrecondition(f'registry "{self.domain}": upload started without a location')
        return location

    def upload_chunk(self, location: str, data: bytes, offset: int, scopes: list[str]) -> str:
        resp = self.request(
            "PATCH",
            location,
            scopes,
            {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(data) - 1}",
                "Content-Length": str(len(data)),
            },
            data,
            ok=(202,),
        )
        resp.read()
        return resp.getheader("Location") or location

    def finish_upload(
        self, location: str, digest: Digest, scopes: list[str], body: Body = None, size: int = 0
    ) -> None:
        parts = urllib.parse.urlsplit(location)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + [("digest", str(digest))]
        url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size if body else 0)}
        resp = self.request("PUT", url, scopes, headers, body if body is not None else b"", ok=(201, 204))
        resp.read()


def _pick(challenges: list[Challenge]) -> Challenge | None:
    """Bearer over basic when a registry offers both, as docker does."""
    for scheme in ("bearer", "basic"):
        for ch in challenges:
            if ch.scheme == scheme:
                return ch
    return None
