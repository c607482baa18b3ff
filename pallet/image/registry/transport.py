"""HTTP(S) to a registry: which scheme, which CAs, one kept-alive connection per thread and host.

TLS is verified against the system CAs plus every ``*.crt`` in ``<certs.d>/<host:port>/`` (docker's
``/etc/docker/certs.d``, podman's ``/etc/containers/certs.d`` and ``<root>/certs.d`` of the engine);
a ``client.cert``/``client.key`` pair there is presented as a client certificate. Plain HTTP is used
only when TLS is not spoken at all and the registry is local (localhost, 127.0.0.0/8, ::1) or marked
insecure; a certificate that fails verification is an error, except for an insecure registry
(``--tls-verify=false``), whose certificate is not checked.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import urllib.parse
from pathlib import Path
from typing import IO

from pallet.errors import FailedPrecondition

SYSTEM_CERTS_DIRS = (Path("/etc/docker/certs.d"), Path("/etc/containers/certs.d"))
TIMEOUT = 60.0
BLOCK = 1 << 20  # http.client sends file bodies in blocks of this size (its default is 8 KiB)
Body = bytes | IO[bytes] | None
USER_AGENT = "pallet/0.1"


class Unreachable(FailedPrecondition):
    """The registry could not be reached, or the connection broke: worth a retry, unlike a refusal."""


def api_host(domain: str) -> str:
    """Where a reference's domain is served: Docker Hub's API is not at docker.io."""
    return "registry-1.docker.io" if domain == "docker.io" else domain


def is_local(host: str) -> bool:
    name = urllib.parse.urlsplit("//" + host).hostname or host
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def tls_context(host: str, certs_dirs: list[Path], verify: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    for base in certs_dirs:
        d = base / host
        if not d.is_dir():
            continue
        for crt in sorted(d.glob("*.crt")):
            try:
                ctx.load_verify_locations(cafile=str(crt))
            except (ssl.SSLError, OSError) as e:
                raise FailedPrecondition(f'registry "{host}": cannot load CA "{crt}": {e}') from e
        for cert in sorted(d.glob("*.cert")):
            key = cert.with_suffix(".key")
            if not key.exists():
                raise FailedPrecondition(
                    f'registry "{host}": client certificate "{cert}" has no "{key.name}"'
                )
            ctx.load_cert_chain(str(cert), str(key))
    return ctx


def describe(host: str, e: BaseException) -> str:
    """One line for a failure to reach ``host``."""
    if isinstance(e, socket.gaierror):
        return f'registry "{host}": cannot resolve host: {e.strerror or e}'
    if isinstance(e, ConnectionRefusedError):
        return f'registry "{host}": connection refused'
    if isinstance(e, ssl.SSLCertVerificationError):
        return (
            f'registry "{host}": tls: {e.verify_message or e.reason}'
            f" (add its CA to certs.d/{host}/ca.crt, or use --tls-verify=false)"
        )
    if isinstance(e, TimeoutError | socket.timeout):
        return f'registry "{host}": timed out'
    if isinstance(e, http.client.IncompleteRead):
        return f'registry "{host}": connection closed after {len(e.partial)} bytes of the response'
    if isinstance(e, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return f'registry "{host}": connection closed by the registry'
    return f'registry "{host}": {getattr(e, "strerror", None) or e}'


class Transport:
    """Connections to one registry host and to the hosts it sends us to (token realms, redirects)."""

    def __init__(self, host: str, certs_dirs: list[Path], insecure: bool = False, timeout: float = TIMEOUT):
        self.host = host
        self.insecure = insecure
        self.timeout = timeout
        self.certs_dirs = certs_dirs
        self.scheme: str | None = None  # decided by the first request: "https", or "http" as a fallback
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._local = threading.local()
        self._lock = threading.Lock()

    def _context(self, host: str) -> ssl.SSLContext:
        with self._lock:
            if host not in self._contexts:
                verify = not (self.insecure and host == self.host)
                self._contexts[host] = tls_context(host, self.certs_dirs, verify)
            return self._contexts[host]

    def _conn(self, scheme: str, netloc: str, fresh: bool = False) -> http.client.HTTPConnection:
        conns: dict[tuple[str, str], http.client.HTTPConnection] = self._local.__dict__.setdefault("c", {})
        conn = conns.get((scheme, netloc))
        if conn is not None and fresh:
            conn.close()
            conn = None
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(
                    netloc, timeout=self.timeout, context=self._context(netloc), blocksize=BLOCK
                )
            else:
                conn = http.client.HTTPConnection(netloc, timeout=self.timeout, blocksize=BLOCK)
            conns[(scheme, netloc)] = conn
        return conn

    def close(self) -> None:
        for conn in self._local.__dict__.get("c", {}).values():
            conn.close()

    def url(self, path: str) -> str:
        """An absolute URL for a registry path, or a Location the registry gave (relative or not)."""
        base = f"{self.scheme or 'https'}://{self.host}"
        return urllib.parse.urljoin(base + "/", path)

    def resolve_scheme(self) -> None:
        """HTTPS unless the host does not speak TLS and may be reached over plain HTTP."""
        if self.scheme is not None:
            return
        try:
            conn = self._conn("https", self.host, fresh=True)
            conn.connect()
            self.scheme = "https"
        except ssl.SSLCertVerificationError as e:
            raise FailedPrecondition(describe(self.host, e)) from e
        except (ssl.SSLError, ConnectionResetError) as e:
            if not (is_local(self.host) or self.insecure):
                raise FailedPrecondition(
                    f'registry "{self.host}": tls handshake failed ({getattr(e, "reason", None) or e});'
                    " plain http is used only for localhost or with --tls-verify=false"
                ) from e
            self._conn("https", self.host).close()
            self.scheme = "http"
        except OSError as e:
            raise Unreachable(describe(self.host, e)) from e

    def send(
        self, method: str, url: str, headers: dict[str, str], body: Body = None
    ) -> http.client.HTTPResponse:
        """One request; a kept-alive connection the server dropped meanwhile is retried once, fresh.
        The caller reads the response to its end (or closes it) before the next request."""
        parts = urllib.parse.urlsplit(url)
        headers = {"User-Agent": USER_AGENT, **headers}
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        start = body.tell() if body is not None and not isinstance(body, bytes) else 0
        for attempt in (0, 1):
            conn = self._conn(parts.scheme, parts.netloc, fresh=attempt > 0)
            reused = conn.sock is not None
            self._local.last = conn
            try:
                conn.request(method, target or "/", body=body, headers=headers)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn.close()
                if not reused or attempt:
                    raise Unreachable(describe(parts.netloc, e)) from e
                if body is not None and not isinstance(body, bytes):
                    body.seek(start)
            except ssl.SSLCertVerificationError as e:
                conn.close()
                raise FailedPrecondition(describe(parts.netloc, e)) from e
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise Unreachable(describe(parts.netloc, e)) from e
        raise AssertionError("unreachable")

    def abandon(self) -> None:
        """Close the connection of this thread's last request: its response was not read to the end."""
        conn = getattr(self._local, "last", None)
        if conn is not None:
            conn.close()
