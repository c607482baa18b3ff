"""Image references, normalised the way docker does (distribution/reference's grammar).

``busybox`` → ``docker.io/library/busybox:latest``; ``localhost:5000/app@sha256:…`` keeps its
registry, port and digest. The familiar form (what ``docker images`` prints) drops
``docker.io/`` and ``library/`` again.
"""

from __future__ import annotations

import re

from pallet.errors import InvalidArgument
from pallet.oci.digest import Digest
from pallet.oci.value import Value

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?P<name>(?:(?P<domain>{_DOMAIN})/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_ID = re.compile(r"[a-f0-9]{64}")
_TAG_ONLY = re.compile(_TAG)


class Reference(Value):
    __slots__ = ("domain", "path", "tag", "digest")

    def __init__(self, domain: str, path: str, tag: str | None = None, digest: Digest | None = None) -> None:
        self.domain = domain
        self.path = path
        self.tag = tag
        self.digest = digest

    @property
    def name(self) -> str:
        """The repository: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    def familiar_name(self) -> str:
        """The repository as docker prints it: ``busybox``, ``quay.io/x/y``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        path = self.path
        if path.startswith(OFFICIAL_PREFIX) and "/" not in path[len(OFFICIAL_PREFIX) :]:
            path = path[len(OFFICIAL_PREFIX) :]
        return path

    def familiar(self) -> str:
        return self._render(self.familiar_name())

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_ONLY.fullmatch(tag):
            raise InvalidArgument(f'invalid tag "{tag}"')
        return Reference(self.domain, self.path, tag, None)

    def __str__(self) -> str:
        return self._render(self.name)

    def _render(self, name: str) -> str:
        s = name
        if self.tag is not None:
            s += ":" + self.tag
        if self.digest is not None:
            s += "@" + str(self.digest)
        return s


def _split_domain(value: str) -> tuple[str, str]:
    first, sep, rest = value.partition("/")
    is_host = sep and (any(c in first for c in ".:") or first == "localhost" or first.lower() != first)
    if not is_host:
        domain, remainder = DEFAULT_DOMAIN, value
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse(value: str) -> Reference:
    """Parse and normalise a reference; a tag-less, digest-less one stays without a tag."""
    if _ID.fullmatch(value):
        raise InvalidArgument(
            f'invalid repository name "{value}": cannot specify 64-byte hexadecimal strings'
        )
    domain, remainder = _split_domain(value)
    repo = remainder.partition("@")[0]
    repo = repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo
    if repo.lower() != repo:
        raise InvalidArgument(f'invalid reference "{value}": repository name must be lowercase')
    m = _REFERENCE.fullmatch(f"{domain}/{remainder}")
    if m is None:
        raise InvalidArgument(f'invalid reference format "{value}"')
    name = m.group("name")
    if len(name) > NAME_MAX:
        raise InvalidArgument(
            f'invalid reference "{value}": repository name longer than {NAME_MAX} characters'
        )
    digest = Digest.parse(m.group("digest")) if m.group("digest") else None
    return Reference(domain, name[len(domain) + 1 :], m.group("tag"), digest)


def parse_tagged(value: str) -> Reference:
    """Parse, adding the ``latest`` tag when the reference names neither a tag nor a digest."""
    ref = parse(value)
    if ref.tag is None and ref.digest is None:
        ref = Reference(ref.domain, ref.path, DEFAULT_TAG, ref.digest)
    return ref
