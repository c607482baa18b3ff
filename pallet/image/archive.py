"""Image archives in and out: docker-archive tars (``docker save``) and OCI image layouts, as a
directory or a tar (oci-archive).

Loading reads the archive in place (a tar is opened for random access, never extracted): every blob
goes through the content store's verified ingest, so a blob whose bytes do not match its digest, a
member path with ``..`` or a manifest naming a missing blob is refused before any image is recorded.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from pallet.errors import InvalidArgument, NotFound
from pallet.image.images import Image, Images, Lease
from pallet.image.layers import CappedTarInfo, LayerError, clean_name, compression_of, copy_uncompressed
from pallet.oci import image as oci
from pallet.oci.digest import Digest
from pallet.oci.reference import Reference, parse, parse_tagged

MAX_JSON = 32 << 20  # manifests, indexes and configs are small; a huge one is an attack


class _Source:
    """Named members of an archive, a tar or a directory, confined to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if path.is_dir():
            return
        try:
            self.tar = tarfile.open(path, "r:*", tarinfo=CappedTarInfo)  # no huge pax headers here either
            for m in self.tar.getmembers():
                self.members["/".join(p for p in m.name.split("/") if p not in ("", "."))] = m
        except LayerError:
            raise
        except (tarfile.TarError, EOFError, OSError) as e:
            raise InvalidArgument(
                f'archive "{path}": neither a tar archive nor an image layout directory'
            ) from e

    def _name(self, name: str) -> str:
        try:
            return "/".join(clean_name(name))
        except LayerError:
            raise InvalidArgument(f'archive "{self.path}": member "{name}" leaves the archive') from None

    def exists(self, name: str) -> bool:
        name = self._name(name)
        if self.tar is not None:
            return name in self.members
        return os.path.isfile(self._file(name))

    def _file(self, name: str) -> Path:
        real = os.path.realpath(self.path / name)
        if not real.startswith(os.path.realpath(self.path) + "/"):
            raise InvalidArgument(f'archive "{self.path}": member "{name}" leaves the archive')
        return Path(real)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        name = self._name(name)
        if self.tar is None:
            try:
                with open(self._file(name), "rb") as plain:
                    yield plain
            except FileNotFoundError:
                raise NotFound(f'archive "{self.path}": no file "{name}"') from None
            return
        m = self.members.get(name)
        member = self.tar.extractfile(m) if m is not None else None
        if member is None:
            raise NotFound(f'archive "{self.path}": no file "{name}"')
        with member:
            yield member

    def json(self, name: str) -> Any:
        with self.open(name) as f:
            data = f.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise InvalidArgument(f'archive "{self.path}": "{name}" is larger than {MAX_JSON} bytes')
        try:
            return json.loads(data)
        except ValueError as e:
            raise InvalidArgument(f'archive "{self.path}": "{name}" is not valid json: {e}') from e

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            data = f.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise InvalidArgument(f'archive "{self.path}": "{name}" is larger than {MAX_JSON} bytes')
        return data

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


@dataclass(frozen=True)
class Loaded:
    image: Image
    tags: list[Reference]


def _blob_path(d: Digest) -> str:
    return f"blobs/{d.algorithm}/{d.hex}"


def _ingest(images: Images, lease: Lease, src: _Source, desc: oci.Descriptor) -> None:
    if images.content.exists(desc.digest):
        return
    with src.open(_blob_path(desc.digest)) as f:
        lease.blobs.append(images.content.ingest(f, desc.digest, desc.size))


def _load_oci(images: Images, lease: Lease, src: _Source) -> list[Loaded]:
    index = oci.Index.parse(src.read("index.json"))
    platform = oci.Platform.host()
    out = []
    for top in index.manifests:
        desc = top
        while desc.media_type in oci.INDEX_TYPES:  # nested index: pick this machine's platform
            desc = oci.Index.parse(src.read(_blob_path(desc.digest)), desc.media_type).select(platform)
        if desc.media_type not in oci.MANIFEST_TYPES:
            raise InvalidArgument(f'archive "{src.path}": unsupported entry of type "{desc.media_type}"')
        _ingest(images, lease, src, desc)
        manifest = oci.Manifest.parse(images.content.read(desc.digest), desc.media_type)
        for blob in [manifest.config, *manifest.layers]:
            _ingest(images, lease, src, blob)
        tags = _oci_tags(top)
        out.append(Loaded(images.create(desc.digest, tags), tags))
    return out


def _oci_tags(desc: oci.Descriptor) -> list[Reference]:
    """containerd's full-name annotation, else ref.name when it is a whole reference, not a bare tag."""
    name = desc.annotations.get(oci.ANNOTATION_CONTAINERD_NAME) or desc.annotations.get(
        oci.ANNOTATION_REF_NAME, ""
    )
    if not name or ("/" not in name and ":" not in name):
        return []
    try:
        ref = parse_tagged(name)
    except InvalidArgument:
        return []
    return [ref] if ref.digest is None else []


def _load_docker(images: Images, lease: Lease, src: _Source) -> list[Loaded]:
    entries = src.json("manifest.json")
    if not isinstance(entries, list):
        raise InvalidArgument(f'archive "{src.path}": manifest.json is not a list')
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise InvalidArgument(f'archive "{src.path}": manifest.json entry without Config')
        config_bytes = src.read(entry["Config"])
        config_digest = _put(images, lease, config_bytes)
        layers = []
        for name in entry.get("Layers") or []:
            with src.open(str(name)) as f:
                digest = images.content.ingest(f)
            lease.blobs.append(digest)
            kind = compression_of(images.content.path(digest))
            media = {"": oci.DOCKER_LAYER, "gzip": oci.DOCKER_LAYER_GZIP, "zstd": oci.DOCKER_LAYER_ZSTD}[kind]
            layers.append(oci.Descriptor(media, digest, images.content.info(digest).size))
        config_desc = oci.Descriptor(oci.DOCKER_CONFIG, config_digest, len(config_bytes))
        manifest = oci.Manifest(oci.DOCKER_MANIFEST, config_desc, layers)
        manifest_digest = _put(images, lease, manifest.to_bytes())
        tags = [parse_tagged(t) for t in entry.get("RepoTags") or []]
        out.append(Loaded(images.create(manifest_digest, tags), tags))
    return out


def load(images: Images, path: Path) -> list[Loaded]:
    """Load every image in a docker-archive tar, an oci-archive tar or an OCI layout directory."""
    src = _Source(Path(path))
    try:
        with images.lease() as lease:
            if src.exists("oci-layout") and src.exists("index.json"):
                return _load_oci(images, lease, src)
            if src.exists("manifest.json"):
                return _load_docker(images, lease, src)
            raise InvalidArgument(
                f'archive "{path}": neither a docker archive (manifest.json) nor an OCI layout'
            )
    finally:
        src.close()


def _put(images: Images, lease: Lease, data: bytes) -> Digest:
    digest = Digest.of(data)
    if not images.content.exists(digest):
        lease.blobs.append(images.content.put(data))
    return digest


# -- saving ---------------------------------------------------------------------------------------


class _Sink:
    """Where a saved archive goes: a tar stream or a directory."""

    def __init__(self, tar: tarfile.TarFile | None, directory: Path | None) -> None:
        self.tar = tar
        self.dir = directory
        self.written: set[str] = set()

    def add_bytes(self, name: str, data: bytes) -> None:
        if name in self.written:
            return
        self.written.add(name)
        if self.dir is not None:
            (self.dir / name).parent.mkdir(parents=True, exist_ok=True)
            (self.dir / name).write_bytes(data)
            return
        assert self.tar is not None
        self._dirs(name)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        self.tar.addfile(info, io.BytesIO(data))

    def add_file(self, name: str, path: Path) -> None:
        if name in self.written:
            return
        self.written.add(name)
        if self.dir is not None:
            (self.dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.dir / name)
            return
        assert self.tar is not None
        self._dirs(name)
        info = tarfile.TarInfo(name)
        info.size = path.stat().st_size
        info.mode = 0o644
        with open(path, "rb") as f:
            self.tar.addfile(info, f)

    def _dirs(self, name: str) -> None:
        assert self.tar is not None
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d + "/" not in self.written:
                self.written.add(d + "/")
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                self.tar.addfile(info)


def _resolve(images: Images, names: list[str]) -> list[tuple[Image, list[Reference]]]:
    """Each named image with the tags to record: the tag it was named by, none when named by ID."""
    out: dict[Digest, tuple[Image, list[Reference]]] = {}
    for name in names:
        image = images.get(name)
        tags = out.get(image.id, (image, []))[1]
        try:
            ref = parse_tagged(name)
        except InvalidArgument:
            ref = None
        if ref is not None and ref in image.tags and ref not in tags:
            tags.append(ref)
        out[image.id] = (image, tags)
    return list(out.values())


def _save_docker(images: Images, chosen: list[tuple[Image, list[Reference]]], sink: _Sink, tmp: Path) -> None:
    entries = []
    for image, tags in chosen:
        config_name = f"{image.id.hex}.json"
        sink.add_bytes(config_name, image.config_bytes)
        layer_names = []
        for layer, diff_id in zip(image.manifest.layers, image.config.diff_ids, strict=True):
            name = f"{diff_id.hex}/layer.tar"
            layer_names.append(name)
            if name in sink.written:
                continue
            blob = images.content.path(layer.digest)
            if layer.digest == diff_id:
                sink.add_file(name, blob)
            else:  # docker-archive layers are uncompressed tars named by diffID
                plain = tmp / diff_id.hex
                with open(plain, "wb") as f:
                    copy_uncompressed(blob, f)
                sink.add_file(name, plain)
                plain.unlink()
        entries.append(
            {"Config": config_name, "RepoTags": [t.familiar() for t in tags], "Layers": layer_names}
        )
    sink.add_bytes("manifest.json", json.dumps(entries).encode())


def _save_oci(images: Images, chosen: list[tuple[Image, list[Reference]]], sink: _Sink) -> None:
    sink.add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    descs = []
    for image, tags in chosen:
        digest = image.record.manifest
        manifest_bytes = images.content.read(digest)
        for blob in [image.manifest.config, *image.manifest.layers]:
            sink.add_file(_blob_path(blob.digest), images.content.path(blob.digest))
        sink.add_bytes(_blob_path(digest), manifest_bytes)
        base = oci.Descriptor(image.manifest.media_type, digest, len(manifest_bytes))
        if not tags:
            descs.append(base)
        for t in tags:
            ann = {oci.ANNOTATION_CONTAINERD_NAME: str(t), oci.ANNOTATION_REF_NAME: t.tag or "latest"}
            descs.append(oci.Descriptor(base.media_type, digest, base.size, ann))
    index = oci.Index(oci.OCI_INDEX, descs)
    sink.add_bytes("index.json", index.to_bytes())


FORMATS = ("docker-archive", "oci-archive", "oci-dir")


def save(images: Images, names: list[str], output: Path | BinaryIO, fmt: str = "docker-archive") -> None:
    """Write the named images as ``fmt``; a file output appears whole or not at all."""
    if fmt not in FORMATS:
        raise InvalidArgument(f'unknown archive format "{fmt}" (have {", ".join(FORMATS)})')
    if not names:
        raise InvalidArgument("save: name at least one image")
    chosen = _resolve(images, names)
    tmp_root = images.root / "tmp"
    tmp_root.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
        if fmt == "oci-dir":
            if not isinstance(output, Path):
                raise InvalidArgument("save: oci-dir needs an output directory")
            if output.exists() and any(output.iterdir()):
                raise InvalidArgument(f'save: output directory "{output}" is not empty')
            staged = Path(tmp) / "layout"
            staged.mkdir()
            _save_oci(images, chosen, _Sink(None, staged))
            output.mkdir(parents=True, exist_ok=True)
            for item in staged.iterdir():
                shutil.move(item, output / item.name)
            return
        staged_tar = Path(tmp) / "out.tar"
        with (
            open(staged_tar, "wb") as f,
            tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):
            sink = _Sink(tar, None)
            if fmt == "docker-archive":
                _save_docker(images, chosen, sink, Path(tmp))
            else:
                _save_oci(images, chosen, sink)
        if isinstance(output, Path):
            shutil.move(staged_tar, output.with_name(f".{output.name}.tmp"))
            os.replace(output.with_name(f".{output.name}.tmp"), output)
        else:
            with open(staged_tar, "rb") as whole:
                shutil.copyfileobj(whole, output, 1 << 20)


__all__ = ["FORMATS", "Loaded", "load", "parse", "save"]
