"""Images as the engine and the CLI see them: create from a manifest, look up, tag, remove, prune,
unpack into snapshots (once per chain ID), prepare a container's writable snapshot, and collect
garbage in the content store and the snapshotters.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pallet.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from pallet.image.content import ContentStore
from pallet.image.snapshots import (
    ACTIVE,
    COMMITTED,
    Mount,
    Snapshotter,
    default_snapshotter_name,
    open_snapshotter,
)
from pallet.image.store import ImageRecord, ImageStore
from pallet.oci.digest import Digest
from pallet.oci.image import ImageConfig, Manifest, chain_ids
from pallet.oci.reference import Reference, parse, parse_tagged
from pallet.oci.value import Value

IMAGE_LABEL = "pallet.image"  # on a container's snapshot: the image it was made from
SIZE_LABEL = "pallet.layer.size"  # on a layer's snapshot: its content size, the same in every snapshotter
_HEXPREFIX = re.compile(r"[a-f0-9]{1,64}")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime | None:
    """RFC 3339 as docker writes it, nanoseconds included (Python keeps microseconds)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value)
    if not m:
        return None
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}")


class Image(Value):
    __slots__ = ("record", "manifest", "config", "config_bytes")

    def __init__(
        self, record: ImageRecord, manifest: Manifest, config: ImageConfig, config_bytes: bytes
    ) -> None:
        self.record = record
        self.manifest = manifest
        self.config = config
        self.config_bytes = config_bytes

    @property
    def id(self) -> Digest:
        return self.record.id

    @property
    def tags(self) -> list[Reference]:
        return self.record.tags

    def chain_ids(self) -> list[Digest]:
        return chain_ids(self.config.diff_ids)


class ImageUsage(Value):
    __slots__ = ("image", "size", "shared", "unique", "containers", "layers")

    def __init__(
        self, image: Image, size: int, shared: int, unique: int, containers: int, layers: dict[Digest, int]
    ) -> None:
        self.image = image
        self.size = size
        self.shared = shared
        self.unique = unique
        self.containers = containers
        self.layers = layers  # chain ID -> unpacked size


class Lease:
    """Blobs made by one operation that no image references yet (containerd's leases, in one process)."""

    def __init__(self) -> None:
        self.blobs: list[Digest] = []


class Images:
    def __init__(self, root: Path, snapshotter: str | None = None) -> None:
        self.root = Path(root)
        self.content = ContentStore(self.root / "content")
        self.store = ImageStore(self.root / "image" / "metadata.db")
        self.snapshotter_name = snapshotter or default_snapshotter_name()
        self._snapshots: Snapshotter | None = None
        self._others: dict[str, Snapshotter] = {}
        self._lease_fd: int | None = None
        self._lease_depth = 0

    @property
    def snapshots(self) -> Snapshotter:
        if self._snapshots is None:
            self._snapshots = open_snapshotter(self.snapshotter_name, self.root / "snapshots")
        return self._snapshots

    def close(self) -> None:
        self.store.close()
        for sn in [self._snapshots, *self._others.values()]:
            if sn is not None:
                sn.close()

    # -- reading ----------------------------------------------------------------------------------
    def _load(self, record: ImageRecord) -> Image:
        manifest = Manifest.parse(self.content.read(record.manifest))
        config_bytes = self.content.read(manifest.config.digest)
        return Image(record, manifest, ImageConfig.parse(config_bytes), config_bytes)

    def get(self, name: str) -> Image:
        """Find an image as docker does: full ID, then reference, then unique ID prefix."""
        if name.startswith("sha256:"):
            digest = Digest.parse(name) if len(name) == 71 else None
            if digest is None:
                return self._by_prefix(name, name[len("sha256:") :])
            try:
                return self._load(self.store.get(digest))
            except NotFound:
                found = self.store.by_manifest(digest)
                if found:
                    return self._load(found[0])
                raise
        try:
            ref = parse_tagged(name)
        except InvalidArgument:
            ref = None
        if ref is not None:
            if ref.digest is not None:
                found = self.store.by_manifest(ref.digest)
                if found:
                    return self._load(found[0])
            else:
                record = self.store.by_tag(ref)
                if record is not None:
                    return self._load(record)
        if _HEXPREFIX.fullmatch(name):
            return self._by_prefix(name, name)
        raise NotFound(f'image "{name}": not found')

    def _by_prefix(self, name: str, prefix: str) -> Image:
        found = self.store.by_prefix(prefix)
        if not found:
            raise NotFound(f'image "{name}": not found')
        if len(found) > 1:
            raise InvalidArgument(f'image "{name}": ambiguous, matches {len(found)} images')
        return self._load(found[0])

    def all(self) -> list[Image]:
        return [self._load(r) for r in self.store.all()]

    # -- leases -----------------------------------------------------------------------------------
    def _lock(self, mode: int) -> int:
        fd = os.open(self.root / "image" / "gc.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, mode)
        return fd

    @contextlib.contextmanager
    def lease(self) -> Iterator[Lease]:
        """Held while blobs and layer snapshots are made but not yet referenced by an image: gc waits
        for every lease (a shared flock against its exclusive one), and a failed operation discards
        the blobs it made, so neither a concurrent gc nor a failure leaves half an image."""
        if self._lease_depth == 0:
            self._lease_fd = self._lock(fcntl.LOCK_SH)
        self._lease_depth += 1
        lease = Lease()
        try:
            yield lease
        except BaseException:
            self._discard(lease.blobs)
            raise
        finally:
            self._lease_depth -= 1
            if self._lease_depth == 0 and self._lease_fd is not None:
                os.close(self._lease_fd)
                self._lease_fd = None

    def _discard(self, blobs: list[Digest]) -> None:
        used = self._referenced()[0]
        for digest in blobs:
            if digest not in used:
                self.content.path(digest).unlink(missing_ok=True)

    # -- creating -------------------------------------------------------------------------------
    def create(self, manifest_digest: Digest, tags: list[Reference], unpack: bool = True) -> Image:
        """Record an image whose manifest, config and layers are already in the content store."""
        manifest = Manifest.parse(self.content.read(manifest_digest))
        config = ImageConfig.parse(self.content.read(manifest.config.digest))
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidArgument(
                f'image "{manifest.config.digest}": {len(manifest.layers)} layers but {len(config.diff_ids)} diff_ids'
            )
        for layer in manifest.layers:
            if not self.content.exists(layer.digest):
                raise NotFound(f'image "{manifest.config.digest}": layer "{layer.digest}" is missing')
        for ref in tags:
            if ref.digest is not None:
                raise InvalidArgument(f'cannot tag "{ref}": a tag cannot contain a digest')
        if unpack:
            with self.lease():
                self.unpack(manifest, config)
        self.store.add(manifest.config.digest, manifest_digest, config.created, tags)
        return self._load(self.store.get(manifest.config.digest))

    def unpack(self, manifest: Manifest, config: ImageConfig) -> None:
        """Apply each layer once into a committed snapshot named by its chain ID; existing ones are shared."""
        sn = self.snapshots
        parent = ""
        for layer, diff_id, chain in zip(
            manifest.layers, config.diff_ids, chain_ids(config.diff_ids), strict=True
        ):
            name = str(chain)
            if self._exists(name):
                parent = name
                continue
            from pallet.image.layers import LayerError, apply_layer  # tarfile, gzip: for unpacking only

            key = f"extract-{os.urandom(6).hex()} {name}"
            sn.prepare(key, parent)
            try:
                target, whiteouts = sn.apply_dir(key)
                result = apply_layer(target, self.content.path(layer.digest), whiteouts, sn.lower_dirs(key))
                if result.diff_id != diff_id:
                    raise LayerError(
                        f'layer "{layer.digest}": content has diffID {result.diff_id}, config says {diff_id}'
                    )
                try:
                    sn.commit(
                        name, key, {"pallet.diff_id": str(diff_id), SIZE_LABEL: str(result.content_size)}
                    )
                except AlreadyExists:
                    sn.remove(key)  # another process unpacked the same layer first; share theirs
            except BaseException:
                if self._exists(key):
                    sn.remove(key)
                raise
            parent = name

    def _exists(self, key: str) -> bool:
        try:
            self.snapshots.stat(key)
        except NotFound:
            return False
        return True

    def tag(self, name: str, target: str) -> Reference:
        image = self.get(name)
        ref = parse_tagged(target)
        if ref.digest is not None:
            raise InvalidArgument(f'cannot tag "{target}": refusing to create a tag with a digest reference')
        self.store.add(image.id, image.record.manifest, image.config.created, [ref])
        return ref

    # -- containers' snapshots ----------------------------------------------------------------------
    def prepare(self, key: str, image: Image | str) -> list[Mount]:
        """A writable snapshot on top of an image (or the image named so): a container's rootfs
        (mount it, then run)."""
        image = self.get(image) if isinstance(image, str) else image
        chain = image.chain_ids()
        with self.lease():
            if chain and not self._exists(str(chain[-1])):
                self.unpack(image.manifest, image.config)
            return self.snapshots.prepare(key, str(chain[-1]) if chain else "", {IMAGE_LABEL: str(image.id)})

    def users(self, image: Image) -> list[str]:
        """Keys of the active and view snapshots made from ``image``, in any snapshotter: its containers."""
        return [
            i.name
            for sn in self._all_snapshotters()
            for i in sn.walk()
            if i.kind != COMMITTED and i.labels.get(IMAGE_LABEL) == str(image.id)
        ]

    def _all_snapshotters(self) -> list[Snapshotter]:
        """The one in use and every other one that holds state under this root (a root may have been
        used with --storage-driver native once); their layers count for gc and their snapshots for rmi."""
        out = [self.snapshots]
        for d in sorted((self.root / "snapshots").iterdir()):
            if d.name != self.snapshots.name and (d / "metadata.db").exists():
                if d.name not in self._others:
                    self._others[d.name] = open_snapshotter(d.name, self.root / "snapshots")
                out.append(self._others[d.name])
        return out

    # -- sizes ------------------------------------------------------------------------------------
    def layer_sizes(self, image: Image) -> list[int]:
        """Each layer's unpacked size; a layer not unpacked in this snapshotter counts its blob size."""
        out = []
        for chain, layer in zip(image.chain_ids(), image.manifest.layers, strict=True):
            try:
                info = self.snapshots.stat(str(chain))
            except NotFound:
                out.append(layer.size)
                continue
            size = info.labels.get(SIZE_LABEL)
            out.append(int(size) if size is not None else self.snapshots.usage(str(chain)).size)
        return out

    def size(self, image: Image) -> int:
        return sum(self.layer_sizes(image))

    def disk_usage(self) -> list[ImageUsage]:
        """Each image's size split into layers it shares with other images and its own (docker system df -v)."""
        all_images = self.all()
        users = {image.id: 0 for image in all_images}
        for info in self.snapshots.walk():
            label = info.labels.get(IMAGE_LABEL)
            if info.kind != COMMITTED and label is not None:
                for image in all_images:
                    if str(image.id) == label:
                        users[image.id] += 1
        count: dict[Digest, int] = {}
        for image in all_images:
            for chain in set(image.chain_ids()):
                count[chain] = count.get(chain, 0) + 1
        out = []
        for image in all_images:
            sizes = dict(zip(image.chain_ids(), self.layer_sizes(image), strict=True))
            shared = sum(size for chain, size in sizes.items() if count[chain] > 1)
            total = sum(sizes.values())
            out.append(ImageUsage(image, total, shared, total - shared, users[image.id], sizes))
        return out

    def writable_snapshots(self) -> list[tuple[str, int]]:
        """(key, bytes written) of every writable snapshot made from an image: the containers' layers."""
        sn = self.snapshots
        return [
            (i.name, sn.usage(i.name).size) for i in sn.walk() if i.kind == ACTIVE and IMAGE_LABEL in i.labels
        ]

    # -- removing -----------------------------------------------------------------------------------
    def remove(self, name: str, force: bool = False) -> list[tuple[str, str]]:
        """docker rmi: untag, and delete the image once nothing names it; returns docker's report lines."""
        image = self.get(name)
        users = self.users(image)
        ref = _matching_tag(name, image)
        if ref is not None:  # by tag: only that tag goes, unless it was the last one
            if users and len(image.tags) == 1 and not force:
                raise Conflict(
                    f'unable to remove repository reference "{name}" (must force) - '
                    f'snapshot "{users[0]}" is using its referenced image {image.id.short()}'
                )
            if len(image.tags) > 1 or users:
                self.store.untag(ref)
                return [("Untagged", ref.familiar())]
        elif not force:  # by ID
            if len(image.tags) > 1:
                raise Conflict(
                    f"unable to delete {image.id.short()} (must be forced) - image is referenced in multiple repositories"
                )
            if users:
                raise Conflict(
                    f'unable to delete {image.id.short()} (must be forced) - image is being used by snapshot "{users[0]}"'
                )
        report = []
        for tag in image.tags:
            self.store.untag(tag)
            report.append(("Untagged", tag.familiar()))
        self.store.delete(image.id)
        report.append(("Deleted", str(image.id)))
        self.gc()
        return report

    def prune(self, all_unused: bool = False) -> tuple[list[tuple[str, str]], int]:
        """Remove dangling images (untagged), or with ``all_unused`` every image no snapshot uses."""
        report: list[tuple[str, str]] = []
        for image in self.all():
            if image.tags and not all_unused:
                continue
            if self.users(image):
                continue
            for ref in image.tags:
                self.store.untag(ref)
                report.append(("untagged", ref.familiar()))
            self.store.delete(image.id)
            report.append(("deleted", str(image.id)))
        return report, self.gc()

    def _referenced(self) -> tuple[set[Digest], set[str]]:
        """(blobs, layer snapshot names) that some image uses."""
        keep: set[Digest] = set()
        chains: set[str] = set()
        for record in self.store.all():
            try:
                image = self._load(record)
            except NotFound:
                continue
            keep |= {record.manifest, image.manifest.config.digest}
            keep |= {layer.digest for layer in image.manifest.layers}
            chains |= {str(c) for c in image.chain_ids()}
        return keep, chains

    def gc(self) -> int:
        """Delete blobs and layer snapshots that no image uses; returns the bytes reclaimed."""
        if self._lease_depth:
            raise RuntimeError("gc inside a lease would wait for itself")
        fd = self._lock(fcntl.LOCK_EX)
        try:
            return self._gc()
        finally:
            os.close(fd)

    def _gc(self) -> int:
        keep, chains = self._referenced()
        freed = sum(info.size for info in self.content.gc(keep))
        for sn in self._all_snapshotters():
            freed += _gc_snapshots(sn, chains)
        return freed


def _gc_snapshots(sn: Snapshotter, chains: set[str]) -> int:
    """Remove layer snapshots no image uses, and unpacks a crash left behind; leaves first."""
    freed = 0
    while True:
        infos = list(sn.walk())
        parents = {i.parent for i in infos}
        doomed = [i for i in infos if i.name not in parents and i.name not in chains and i.kind == COMMITTED]
        doomed += [
            i for i in infos if i.name not in parents and i.kind == ACTIVE and i.name.startswith("extract-")
        ]
        if not doomed:
            return freed
        for info in doomed:
            freed += sn.usage(info.name).size
            sn.remove(info.name)


def _matching_tag(name: str, image: Image) -> Reference | None:
    try:
        ref = parse_tagged(name)
    except InvalidArgument:
        return None
    return ref if ref in image.tags else None


__all__ = ["IMAGE_LABEL", "Image", "Images", "now_rfc3339", "parse", "parse_time"]
