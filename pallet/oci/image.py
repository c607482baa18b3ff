"""The OCI image spec and Docker's v2.2 schema as typed data: descriptors, manifests, indexes,
configs, platforms, diffIDs and chain IDs.

Parsers keep the raw bytes' meaning and never re-serialise what they read: a manifest's digest is
the digest of the bytes it came in, so callers store the bytes and use these types as views.
"""

from __future__ import annotations

import json
import os

from pallet.errors import InvalidArgument
from pallet.oci.digest import Digest
from pallet.oci.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any

# OCI image spec media types
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_ND_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
# Docker image manifest v2, schema 2
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
# layer media type -> compression ("" for none)
LAYER_COMPRESSION = {
    OCI_LAYER: "",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_ND: "",
    OCI_LAYER_ND_GZIP: "gzip",
    OCI_LAYER_ND_ZSTD: "zstd",
    DOCKER_LAYER: "",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_FOREIGN: "gzip",
    DOCKER_LAYER_ZSTD: "zstd",
}
OCI_LAYER_BY_COMPRESSION = {"": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"

# uname -m -> GOARCH, with the variant docker assumes when none is given
_ARCH = {
    "x86_64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
}
_ARCH |= {"i686": ("386", ""), "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", "")}


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"invalid {what}: not a json object")
    return value


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        return _obj(json.loads(data), what)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"invalid {what}: {e}") from e


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    m = _obj(value, what)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
        raise InvalidArgument(f"invalid {what}: values must be strings")
    return dict(m)


class Platform(Value):
    __slots__ = ("os", "architecture", "variant", "os_version")

    def __init__(self, os: str, architecture: str, variant: str = "", os_version: str = "") -> None:
        self.os = os
        self.architecture = architecture
        self.variant = variant
        self.os_version = os_version

    @classmethod
    def host(cls) -> Platform:
        arch, variant = _ARCH.get(os.uname().machine, (os.uname().machine, ""))
        return cls("linux", arch, variant)

    @classmethod
    def from_dict(cls, d: Any) -> Platform:
        d = _obj(d, "platform")
        osname, arch = d.get("os"), d.get("architecture")
        if not isinstance(osname, str) or not isinstance(arch, str):
            raise InvalidArgument("invalid platform: os and architecture must be strings")
        return cls(osname, arch, str(d.get("variant") or ""), str(d.get("os.version") or ""))

    def to_dict(self) -> dict[str, str]:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        if self.os_version:
            d["os.version"] = self.os_version
        return d

    def normalized(self) -> Platform:
        """arm64 means arm64/v8 and arm means arm/v7, as containerd's platforms package says."""
        variant = self.variant
        if self.architecture == "arm64" and variant in ("", "v8"):
            variant = "v8"
        elif self.architecture == "arm" and variant == "":
            variant = "v7"
        return Platform(self.os, self.architecture, variant)

    def matches(self, other: Platform) -> bool:
        a, b = self.normalized(), other.normalized()
        return a.os == b.os and a.architecture == b.architecture and a.variant == b.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


class Descriptor(Value):
    __slots__ = ("media_type", "digest", "size", "annotations", "platform", "urls")

    def __init__(
        self,
        media_type: str,
        digest: Digest,
        size: int,
        annotations: dict[str, str] | None = None,
        platform: Platform | None = None,
        urls: tuple[str, ...] = (),
    ) -> None:
        self.media_type = media_type
        self.digest = digest
        self.size = size
        self.annotations = {} if annotations is None else annotations
        self.platform = platform
        self.urls = urls

    @classmethod
    def from_dict(cls, d: Any) -> Descriptor:
        d = _obj(d, "descriptor")
        mt, dg, size = d.get("mediaType"), d.get("digest"), d.get("size")
        if not isinstance(mt, str) or not isinstance(dg, str):
            raise InvalidArgument("invalid descriptor: mediaType and digest must be strings")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f'invalid descriptor "{dg}": size must be a non-negative integer')
        platform = Platform.from_dict(d["platform"]) if d.get("platform") is not None else None
        urls = d.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise InvalidArgument(f'invalid descriptor "{dg}": urls must be strings')
        return cls(
            mt, Digest.parse(dg), size, _str_map(d.get("annotations"), "annotations"), platform, tuple(urls)
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform is not None:
            d["platform"] = self.platform.to_dict()
        return d


def _descriptors(value: Any, what: str) -> list[Descriptor]:
    if not isinstance(value, list):
        raise InvalidArgument(f"invalid {what}: want a list of descriptors")
    return [Descriptor.from_dict(x) for x in value]


def _schema2(d: dict[str, Any], what: str) -> None:
    if d.get("schemaVersion") != 2:
        raise InvalidArgument(f"invalid {what}: schemaVersion must be 2")


class Manifest(Value):
    __slots__ = ("media_type", "config", "layers", "annotations")

    def __init__(
        self,
        media_type: str,
        config: Descriptor,
        layers: list[Descriptor],
        annotations: dict[str, str] | None = None,
    ) -> None:
        self.media_type = media_type
        self.config = config
        self.layers = layers
        self.annotations = {} if annotations is None else annotations

    @classmethod
    def parse(cls, data: bytes, media_type: str = "") -> Manifest:
        d = _load(data, "manifest")
        _schema2(d, "manifest")
        mt = str(d.get("mediaType") or media_type or OCI_MANIFEST)
        if mt not in MANIFEST_TYPES:
            raise InvalidArgument(f'invalid manifest: unsupported media type "{mt}"')
        if "config" not in d:
            raise InvalidArgument("invalid manifest: no config")
        layers = _descriptors(d.get("layers", []), "manifest layers")
        for layer in layers:
            if layer.media_type not in LAYER_COMPRESSION:
                raise InvalidArgument(f'invalid manifest: unsupported layer media type "{layer.media_type}"')
        return cls(
            mt, Descriptor.from_dict(d["config"]), layers, _str_map(d.get("annotations"), "annotations")
        )

    def to_bytes(self) -> bytes:
        d: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_dict(),
        }
        d["layers"] = [x.to_dict() for x in self.layers]
        if self.annotations:
            d["annotations"] = self.annotations
        return json.dumps(d, indent=2).encode()


class Index(Value):
    __slots__ = ("media_type", "manifests", "annotations")

    def __init__(
        self, media_type: str, manifests: list[Descriptor], annotations: dict[str, str] | None = None
    ) -> None:
        self.media_type = media_type
        self.manifests = manifests
        self.annotations = {} if annotations is None else annotations

    @classmethod
    def parse(cls, data: bytes, media_type: str = "") -> Index:
        d = _load(data, "index")
        _schema2(d, "index")
        mt = str(d.get("mediaType") or media_type or OCI_INDEX)
        if mt not in INDEX_TYPES:
            raise InvalidArgument(f'invalid index: unsupported media type "{mt}"')
        return cls(
            mt,
            _descriptors(d.get("manifests", []), "index manifests"),
            _str_map(d.get("annotations"), "annotations"),
        )

    def to_bytes(self) -> bytes:
        d: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type}
        d["manifests"] = [x.to_dict() for x in self.manifests]
        if self.annotations:
            d["annotations"] = self.annotations
        return json.dumps(d, indent=2).encode()

    def select(self, platform: Platform) -> Descriptor:
        """The first entry for ``platform``; entries without a platform match any (OCI layouts)."""
        for desc in self.manifests:
            if desc.platform is None or desc.platform.matches(platform):
                return desc
        have = ", ".join(str(d.platform) for d in self.manifests) or "none"
        raise InvalidArgument(f"no manifest for platform {platform} (have {have})")


class History(Value):
    __slots__ = ("created", "created_by", "author", "comment", "empty_layer")

    def __init__(
        self,
        created: str = "",
        created_by: str = "",
        author: str = "",
        comment: str = "",
        empty_layer: bool = False,
    ) -> None:
        self.created = created
        self.created_by = created_by
        self.author = author
        self.comment = comment
        self.empty_layer = empty_layer

    @classmethod
    def from_dict(cls, d: Any) -> History:
        d = _obj(d, "history entry")
        return cls(
            str(d.get("created") or ""),
            str(d.get("created_by") or ""),
            str(d.get("author") or ""),
            str(d.get("comment") or ""),
            bool(d.get("empty_layer", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for key in ("created", "created_by", "author", "comment"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        if self.empty_layer:
            d["empty_layer"] = True
        return d


class ImageConfig(Value):
    """An image config; ``config`` is the container config (Env, Cmd, ...) kept as docker writes it."""

    __slots__ = ("architecture", "os", "diff_ids", "config", "history", "created", "author", "variant")

    def __init__(
        self,
        architecture: str,
        os: str,
        diff_ids: list[Digest],
        config: dict[str, Any] | None = None,
        history: list[History] | None = None,
        created: str = "",
        author: str = "",
        variant: str = "",
    ) -> None:
        self.architecture = architecture
        self.os = os
        self.diff_ids = diff_ids
        self.config = {} if config is None else config
        self.history = [] if history is None else history
        self.created = created
        self.author = author
        self.variant = variant

    @classmethod
    def parse(cls, data: bytes) -> ImageConfig:
        d = _load(data, "image config")
        rootfs = _obj(d.get("rootfs"), "image config rootfs")
        if rootfs.get("type") != "layers":
            raise InvalidArgument('invalid image config: rootfs type must be "layers"')
        ids = rootfs.get("diff_ids", [])
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            raise InvalidArgument("invalid image config: diff_ids must be strings")
        hist = d.get("history") or []
        if not isinstance(hist, list):
            raise InvalidArgument("invalid image config: history must be a list")
        cfg = d.get("config") or {}
        return cls(
            str(d.get("architecture") or ""),
            str(d.get("os") or ""),
            [Digest.parse(x) for x in ids],
            _obj(cfg, "container config"),
            [History.from_dict(h) for h in hist],
            str(d.get("created") or ""),
            str(d.get("author") or ""),
            str(d.get("variant") or ""),
        )

    def to_bytes(self) -> bytes:
        d: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        if self.created:
            d["created"] = self.created
        if self.author:
            d["author"] = self.author
        d["config"] = self.config
        d["rootfs"] = {"type": "layers", "diff_ids": [str(x) for x in self.diff_ids]}
        d["history"] = [h.to_dict() for h in self.history]
        return json.dumps(d, separators=(",", ":")).encode()

    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)


def chain_ids(diff_ids: list[Digest]) -> list[Digest]:
    """ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)) (image spec)."""
    out: list[Digest] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            import hashlib  # only from the second layer on: a one-layer image needs no OpenSSL

            text = f"{out[-1]} {diff_id}".encode()
            out.append(Digest("sha256", hashlib.sha256(text).hexdigest()))
    return out
