"""``pull``: resolve a reference on its registry, fetch the manifest (choosing a platform from an
index), download the config, then the layers concurrently into the content store while unpacking
each in order as soon as it is in, and last record the image and tag it.

Every blob goes through the content store's ingest, named by its digest, hashed as it streams and
committed only when digest and size match the manifest: a tampered blob never lands. A download cut
short is retried from where it stopped (``Range: bytes=<offset>-``); when the retries run out the
ingest is kept, so the next pull of any image holding that blob resumes it. The image is recorded
and tagged last, so a failure leaves no image and no tag; verified blobs stay for the next try until
gc. Concurrent pulls of one blob take turns on a per-blob lock instead of appending to one ingest.
"""

from __future__ import annotations

import fcntl
import http.client
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pallet.errors import FailedPrecondition, InvalidArgument, NotFound, PalletError
from pallet.image.content import CHUNK, ContentStore, Writer
from pallet.image.images import Image, Images
from pallet.image.registry.auth import repository_scope
from pallet.image.registry.client import Registry
from pallet.image.registry.sources import BlobSources
from pallet.image.registry.transport import Unreachable, describe
from pallet.oci.digest import Digest
from pallet.oci.image import INDEX_TYPES, MANIFEST_TYPES, Descriptor, ImageConfig, Index, Manifest, Platform
from pallet.oci.reference import Reference

RETRIES = 3  # attempts per blob after the first, each resuming at the bytes already written
CONCURRENCY = 3  # docker's max-concurrent-downloads
BACKOFF = 0.25  # seconds times the attempt number before retrying a broken download


@dataclass(frozen=True)
class Event:
    """One progress report: ``id`` is the layer's short digest, ``status`` docker's word for it."""

    id: str
    status: str
    current: int = 0
    total: int = 0


Progress = Callable[[Event], None]


def no_progress(event: Event) -> None:
    pass


@dataclass
class PullResult:
    reference: Reference
    digest: Digest  # of what the reference resolved to: an index or a manifest
    image: Image
    updated: bool  # False when the tag already named this image


def parse_platform(value: str) -> Platform:
    parts = value.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidArgument(f'invalid platform "{value}": want os/arch[/variant]')
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def pull(
    images: Images,
    registry: Registry,
    ref: Reference,
    platform: Platform | None = None,
    progress: Progress = no_progress,
    concurrency: int = CONCURRENCY,
) -> PullResult:
    repo = ref.path
    scopes = [repository_scope(repo, "pull")]
    what = ref.familiar()
    target = str(ref.digest) if ref.digest is not None else (ref.tag or "latest")
    try:
        top = registry.get_manifest(repo, target, scopes)
    except NotFound as e:
        raise NotFound(f'manifest for "{what}" not found: {e}') from None
    except PalletError as e:
        raise type(e)(f'pull "{what}": {e}') from e
    manifest_bytes, manifest_digest, media_type = top.data, top.digest, top.media_type
    if media_type in INDEX_TYPES:
        index = Index.parse(top.data, media_type)
        chosen = index.select(platform or Platform.host())
        try:
            inner = registry.get_manifest(repo, str(chosen.digest), scopes)
        except PalletError as e:
            raise type(e)(f'pull "{what}": manifest "{chosen.digest}": {e}') from e
        manifest_bytes, manifest_digest, media_type = inner.data, inner.digest, inner.media_type
    if media_type not in MANIFEST_TYPES:
        raise InvalidArgument(f'pull "{what}": unsupported manifest type "{media_type or "none"}"')
    manifest = Manifest.parse(manifest_bytes, media_type)

    content = images.content
    locks = content.root / "locks"
    locks.mkdir(exist_ok=True)
    previous = images.store.by_tag(ref) if ref.digest is None else None
    with images.lease():
        fetch = _Fetcher(registry, repo, scopes, content, locks, progress)
        fetch.blob(manifest.config, quiet=True)
        config = ImageConfig.parse(content.read(manifest.config.digest))
        if platform is not None and not config.platform().matches(platform):
            raise InvalidArgument(
                f'pull "{what}": image is for {config.platform()}, not the requested {platform}'
            )
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidArgument(
                f'pull "{what}": {len(manifest.layers)} layers but {len(config.diff_ids)} diff_ids in the config'
            )
        fetch.layers(manifest, config, concurrency, images.unpack)
        with _blob_lock(locks, manifest_digest):  # put() restarts its ingest: never under another's feet
            content.put(manifest_bytes, manifest_digest)
        tags = [] if ref.digest is not None else [ref]
        image = images.create(manifest_digest, tags)  # every layer is unpacked by now: records and tags
    record_sources(images.root, registry.domain, repo, [manifest.config, *manifest.layers])
    updated = previous is None or previous.id != image.id
    return PullResult(ref, top.digest, image, updated)


def record_sources(root: Path, domain: str, repo: str, descs: list[Descriptor]) -> None:
    sources = BlobSources(root / "image" / "sources.db")
    try:
        sources.add([d.digest for d in descs], domain, repo)
    finally:
        sources.close()


@contextmanager
def _blob_lock(locks: Path, digest: Digest) -> Iterator[None]:
    fd = os.open(locks / digest.hex, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class _Interrupted(Exception):
    """The registry stopped sending before the blob's end; what came is in the ingest."""


class _Fetcher:
    def __init__(
        self,
        registry: Registry,
        repo: str,
        scopes: list[str],
        content: ContentStore,
        locks: Path,
        progress: Progress,
    ) -> None:
        self.registry = registry
        self.repo = repo
        self.scopes = scopes
        self.content = content
        self.locks = locks
        self.progress = progress
        self.stop = threading.Event()

    def layers(
        self,
        manifest: Manifest,
        config: ImageConfig,
        concurrency: int,
        unpack: Callable[[Manifest, ImageConfig], None],
    ) -> None:
        """Download the layers concurrently and unpack each, in order, as soon as it and the ones
        below it are in: extraction overlaps the downloads still running."""
        layers = manifest.layers
        todo: list[Descriptor] = []
        for layer in layers:
            if self.content.exists(layer.digest):
                self.progress(Event(layer.digest.hex[:12], "Already exists"))
            elif layer not in todo:
                todo.append(layer)
                self.progress(Event(layer.digest.hex[:12], "Pulling fs layer"))
        pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(todo))))
        futures: dict[Digest, Future[None]] = {d.digest: pool.submit(self.blob, d) for d in todo}
        try:
            for k, layer in enumerate(layers):
                future = futures.get(layer.digest)
                if future is not None:
                    future.result()
                m, c = manifest, config  # the image up to this layer
                unpack(
                    Manifest(m.media_type, m.config, layers[: k + 1], m.annotations),
                    ImageConfig(
                        c.architecture,
                        c.os,
                        c.diff_ids[: k + 1],
                        c.config,
                        c.history,
                        c.created,
                        c.author,
                        c.variant,
                    ),
                )
                self.progress(Event(layer.digest.hex[:12], "Pull complete"))
        except BaseException:
            self.stop.set()  # the other downloads stop at their next chunk, keeping their ingests
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def blob(self, desc: Descriptor, quiet: bool = False) -> None:
        short = desc.digest.hex[:12]
        report = no_progress if quiet else self.progress
        if self.content.exists(desc.digest):
            return
        with _blob_lock(self.locks, desc.digest):
            if self.content.exists(desc.digest):  # another pull fetched it while we waited
                report(Event(short, "Download complete"))
                return
            writer = self.content.writer(str(desc.digest))
            if writer.offset > desc.size:
                writer.abort()
                writer = self.content.writer(str(desc.digest))
            attempt = 0
            try:
                while writer.offset < desc.size:
                    if self.stop.is_set():
                        break
                    try:
                        writer = self._download(desc, writer, report)
                    except _Interrupted as e:
                        attempt += 1
                        if attempt > RETRIES:
                            raise FailedPrecondition(
                                f'pull: blob "{desc.digest}": {e}; '
                                f"{writer.offset} of {desc.size} bytes kept to resume from"
                            ) from None
                        report(Event(short, "Retrying", writer.offset, desc.size))
                        time.sleep(BACKOFF * attempt)
                if self.stop.is_set():
                    writer.close()
                    return
                report(Event(short, "Verifying Checksum", desc.size, desc.size))
                try:
                    writer.commit(desc.digest, desc.size)
                except InvalidArgument as e:
                    raise InvalidArgument(f"pull: digest mismatch: {e}") from None
                report(Event(short, "Download complete", desc.size, desc.size))
            except InvalidArgument:
                writer.abort()  # wrong content is not worth resuming
                raise
            except BaseException:
                if writer.offset:
                    writer.close()  # keep it: the next pull resumes here
                else:
                    writer.abort()
                raise

    def _download(self, desc: Descriptor, writer: Writer, report: Progress) -> Writer:
        """One GET from the writer's offset on; returns the writer to go on with (a fresh one when the
        registry ignored the range). Raises _Interrupted when the stream ends or breaks early."""
        short = desc.digest.hex[:12]
        try:
            resp = self.registry.get_blob(self.repo, desc.digest, self.scopes, writer.offset)
        except Unreachable as e:
            raise _Interrupted(str(e)) from e
        if writer.offset and (resp.status == 200 or not _range_starts_at(resp, writer.offset)):
            writer.abort()  # the registry sent the whole blob: start over
            writer = self.content.writer(str(desc.digest))
        buf = memoryview(bytearray(CHUNK))  # one buffer for the whole blob: no fresh pages per chunk
        try:
            while not self.stop.is_set():
                n = resp.readinto(buf)
                if not n:
                    break
                chunk = buf[:n]
                if writer.offset + n > desc.size:
                    self.registry.transport.abandon()
                    raise InvalidArgument(
                        f'pull: blob "{desc.digest}": registry sent more than the {desc.size} bytes the manifest names'
                    )
                writer.write(chunk)
                report(Event(short, "Downloading", writer.offset, desc.size))
        except (OSError, http.client.HTTPException) as e:
            self.registry.transport.abandon()
            raise _Interrupted(describe(self.registry.domain, e)) from None
        if self.stop.is_set():
            self.registry.transport.abandon()
        elif writer.offset < desc.size:
            self.registry.transport.abandon()
            raise _Interrupted(
                f'registry "{self.registry.domain}" closed the connection after {writer.offset} of {desc.size} bytes'
            )
        return writer


def _range_starts_at(resp: http.client.HTTPResponse, offset: int) -> bool:
    """``Content-Range: bytes <start>-<end>/<size>`` of a 206 starts where we asked."""
    value = resp.getheader("Content-Range") or ""
    unit, _, spec = value.partition(" ")
    return unit == "bytes" and spec.partition("-")[0].strip() == str(offset)
