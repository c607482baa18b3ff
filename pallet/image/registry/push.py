"""``push``: send an image's blobs, then its manifest, to a registry.

Each blob (config and layers, concurrently) is first checked with ``HEAD``; a blob the registry
already has is skipped, one that another repository of the same registry holds (known from
earlier pulls and pushes) is mounted from there; the rest are uploaded: in one ``PUT`` when small,
in ``PATCH`` chunks then a closing ``PUT`` when large. The manifest goes last, as the very bytes
stored locally, so a pushed image keeps the digest it was pulled or built with.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pallet.errors import FailedPrecondition, InvalidArgument, PalletError
from pallet.image.images import Image, Images
from pallet.image.registry.auth import repository_scope
from pallet.image.registry.client import Registry
from pallet.image.registry.pull import Event, Progress, no_progress, record_sources
from pallet.image.registry.sources import BlobSources
from pallet.oci.digest import Digest
from pallet.oci.image import Descriptor
from pallet.oci.reference import Reference

CHUNK_SIZE = 32 << 20  # blobs up to this go in one PUT; bigger ones in PATCH chunks of this size
CONCURRENCY = 5  # docker's max-concurrent-uploads


@dataclass(frozen=True)
class PushResult:
    tag: str
    digest: Digest
    size: int


def push(
    images: Images,
    registry: Registry,
    image: Image,
    ref: Reference,
    progress: Progress = no_progress,
    chunk_size: int = CHUNK_SIZE,
    concurrency: int = CONCURRENCY,
) -> PushResult:
    if ref.digest is not None:
        raise InvalidArgument(f'push "{ref.familiar()}": cannot push to a digest reference')
    repo = ref.path
    tag = ref.tag or "latest"
    manifest_bytes = images.content.read(image.record.manifest)
    blobs = [image.manifest.config, *image.manifest.layers]
    sources = BlobSources(images.root / "image" / "sources.db")
    try:
        mounts = {d.digest: sources.repositories(d.digest, registry.domain) for d in blobs}
    finally:
        sources.close()
    uploader = _Uploader(images, registry, repo, progress, chunk_size)
    unique = list({d.digest: d for d in blobs}.values())
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(unique)))) as pool:
        futures = [
            pool.submit(uploader.blob, d, [r for r in mounts[d.digest] if r != repo], d != blobs[0])
            for d in unique
        ]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]
    scopes = [repository_scope(repo, "pull", "push")]
    try:
        got = registry.put_manifest(repo, tag, image.manifest.media_type, manifest_bytes, scopes)
    except PalletError as e:
        raise type(e)(f'push "{ref.familiar()}": manifest: {e}') from e
    if got is not None and got != image.record.manifest:
        raise FailedPrecondition(
            f'push "{ref.familiar()}": registry stored the manifest as {got}, not {image.record.manifest}'
        )
    record_sources(images.root, registry.domain, repo, blobs)
    return PushResult(tag, image.record.manifest, len(manifest_bytes))


class _Uploader:
    def __init__(
        self, images: Images, registry: Registry, repo: str, progress: Progress, chunk_size: int
    ) -> None:
        self.content = images.content
        self.registry = registry
        self.repo = repo
        self.progress = progress
        self.chunk_size = chunk_size
        self.scopes = [repository_scope(repo, "pull", "push")]

    def blob(self, desc: Descriptor, mount_from: list[str], visible: bool) -> None:
        short = desc.digest.hex[:12]
        report = self.progress if visible else no_progress
        try:
            self._blob(desc, mount_from, report, short)
        except PalletError as e:
            raise type(e)(f'push: blob "{desc.digest}": {e}') from e

    def _blob(self, desc: Descriptor, mount_from: list[str], report: Progress, short: str) -> None:
        report(Event(short, "Preparing"))
        if self.registry.blob_exists(self.repo, desc.digest, self.scopes):
            report(Event(short, "Layer already exists"))
            return
        source = mount_from[0] if mount_from else None
        scopes = self.scopes + ([repository_scope(source, "pull")] if source else [])
        started = self.registry.start_upload(self.repo, scopes, desc.digest if source else None, source or "")
        if started is None:
            report(Event(short, f"Mounted from {source}"))
            return
        location = started
        size = self.content.info(desc.digest).size
        with self.content.open(desc.digest) as f:
            if size <= self.chunk_size:
                report(Event(short, "Pushing", 0, size))
                self.registry.finish_upload(location, desc.digest, self.scopes, f, size)
            else:
                offset = 0
                while chunk := f.read(self.chunk_size):
                    location = self.registry.upload_chunk(location, chunk, offset, self.scopes)
                    offset += len(chunk)
                    report(Event(short, "Pushing", offset, size))
                self.registry.finish_upload(location, desc.digest, self.scopes)
        report(Event(short, "Pushed", size, size))
