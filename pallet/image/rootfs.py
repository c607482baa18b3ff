"""Root filesystems in and out of images, and a writable snapshot turned into a layer:
``import`` (rootfs tar → one-layer image), ``export`` (snapshot → rootfs tar), ``commit`` and ``diff``.

``commit``, ``diff`` and ``export`` take a snapshot key; a container is one such key (its writable
snapshot, labelled with its image), so the engine passes its container's key here.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from pallet.errors import InvalidArgument, NotFound
from pallet.image.diff import Change, dir_changes, write_tar
from pallet.image.images import IMAGE_LABEL, Image, Images, Lease, now_rfc3339
from pallet.image.layers import compression_of, uncompressed_digest
from pallet.image.mount import mounted
from pallet.oci import image as oci
from pallet.oci.digest import Digest
from pallet.oci.reference import Reference, parse_tagged

# the Dockerfile instructions docker accepts in `import -c` and `commit -c`
CHANGE_KEYS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "WORKDIR", "VOLUME", "STOPSIGNAL")


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """A container config with Dockerfile-style changes applied (``CMD ["sh"]``, ``ENV A=b``, ...)."""
    cfg: dict[str, Any] = json.loads(json.dumps(config))
    for change in changes:
        word, _, rest = change.strip().partition(" ")
        word, rest = word.upper(), rest.strip()
        if word not in CHANGE_KEYS or not rest:
            raise InvalidArgument(
                f'invalid change "{change}": want one of {", ".join(CHANGE_KEYS)} with a value'
            )
        if word in ("CMD", "ENTRYPOINT"):
            if rest.startswith("["):
                try:
                    argv = json.loads(rest)
                except ValueError as e:
                    raise InvalidArgument(f'invalid change "{change}": {e}') from e
                if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                    raise InvalidArgument(f'invalid change "{change}": want a list of strings')
            else:
                argv = ["/bin/sh", "-c", rest]
            cfg["Cmd" if word == "CMD" else "Entrypoint"] = argv
        elif word in ("ENV", "LABEL"):
            pairs = shlex.split(rest)
            if word == "ENV" and len(pairs) == 2 and "=" not in pairs[0]:
                pairs = [f"{pairs[0]}={pairs[1]}"]  # the old `ENV KEY value` form
            for pair in pairs:
                k, eq, v = pair.partition("=")
                if not eq or not k:
                    raise InvalidArgument(f'invalid change "{change}": want KEY=value')
                if word == "ENV":
                    env = [e for e in cfg.get("Env") or [] if not e.startswith(k + "=")]
                    cfg["Env"] = [*env, f"{k}={v}"]
                else:
                    cfg["Labels"] = (cfg.get("Labels") or {}) | {k: v}
        elif word in ("EXPOSE", "VOLUME"):
            field = "ExposedPorts" if word == "EXPOSE" else "Volumes"
            items = json.loads(rest) if rest.startswith("[") else rest.split()
            for item in items:
                name = str(item) if word == "VOLUME" or "/" in str(item) else f"{item}/tcp"
                cfg[field] = (cfg.get(field) or {}) | {name: {}}
        else:
            cfg[{"USER": "User", "WORKDIR": "WorkingDir", "STOPSIGNAL": "StopSignal"}[word]] = rest
    return cfg


def _put(images: Images, lease: Lease, data: bytes) -> Digest:
    digest = Digest.of(data)
    if not images.content.exists(digest):
        lease.blobs.append(images.content.put(data))
    return digest


def _record(
    images: Images,
    lease: Lease,
    parent: Image | None,
    layer: oci.Descriptor,
    diff_id: Digest,
    history: oci.History,
    container_config: dict[str, Any],
    tags: list[Reference],
) -> Image:
    """Write config and manifest for ``parent``'s layers plus one new one, and record the image."""
    platform = oci.Platform.host()
    base = parent.config if parent is not None else None
    config = oci.ImageConfig(
        architecture=base.architecture if base else platform.architecture,
        os=base.os if base else platform.os,
        diff_ids=[*(base.diff_ids if base else []), diff_id],
        config=container_config,
        history=[*(base.history if base else []), history],
        created=history.created,
        author=history.author,
        variant=base.variant if base else platform.variant,
    )
    config_bytes = config.to_bytes()
    docker = parent is not None and parent.manifest.media_type == oci.DOCKER_MANIFEST
    config_type = oci.DOCKER_CONFIG if docker else oci.OCI_CONFIG
    config_desc = oci.Descriptor(config_type, _put(images, lease, config_bytes), len(config_bytes))
    layers = [*(parent.manifest.layers if parent else []), layer]
    manifest = oci.Manifest(oci.DOCKER_MANIFEST if docker else oci.OCI_MANIFEST, config_desc, layers)
    return images.create(_put(images, lease, manifest.to_bytes()), tags)


def import_rootfs(
    images: Images, source: Path, tag: str | None = None, message: str = "", changes: list[str] | None = None
) -> Image:
    """docker import: a rootfs tar (plain, gzip or zstd) becomes a one-layer image."""
    tags = [parse_tagged(tag)] if tag else []
    cfg = apply_changes({}, changes or [])
    media = oci.OCI_LAYER_BY_COMPRESSION[compression_of(source)]
    with images.lease() as lease:
        with open(source, "rb") as f:
            blob = images.content.ingest(f)
        lease.blobs.append(blob)
        diff_id, _ = uncompressed_digest(images.content.path(blob))
        history = oci.History(
            now_rfc3339(), "pallet import", comment=message or f"Imported from {source.name}"
        )
        layer = oci.Descriptor(media, blob, images.content.info(blob).size)
        return _record(images, lease, None, layer, diff_id, history, cfg, tags)


def _image_of(images: Images, key: str) -> Image | None:
    image_id = images.snapshots.stat(key).labels.get(IMAGE_LABEL)
    if image_id is None:
        return None
    try:
        return images.get(image_id)
    except NotFound:
        return None


def commit(
    images: Images,
    key: str,
    tag: str | None = None,
    message: str = "",
    author: str = "",
    changes: list[str] | None = None,
    config: dict[str, Any] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Image:
    """docker commit: the snapshot's changes (deletions as whiteouts) become a layer on its image;
    ``config`` (a container's) replaces the image's config, as docker commits a container's."""
    tags = [parse_tagged(tag)] if tag else []
    parent = _image_of(images, key)
    base = config if config is not None else (parent.config.config if parent else {})
    cfg = apply_changes(base, changes or [])
    root, found = images.snapshots.changes(key)
    found = _without(found, exclude)
    with images.lease() as lease:
        images.content.writer(f"commit-{key}").abort()  # never resume a half-written diff
        with images.content.writer(f"commit-{key}") as w:
            write_tar(found, root, w)  # type: ignore[arg-type]
            blob = w.commit()
        lease.blobs.append(blob)
        history = oci.History(now_rfc3339(), "pallet commit", author, message)
        docker = parent is not None and parent.manifest.media_type == oci.DOCKER_MANIFEST
        layer = oci.Descriptor(
            oci.DOCKER_LAYER if docker else oci.OCI_LAYER, blob, images.content.info(blob).size
        )
        return _record(images, lease, parent, layer, blob, history, cfg, tags)


def _without(found: list[Change], exclude: frozenset[str]) -> list[Change]:
    """Changes less the ``exclude`` paths (a container's mountpoints: /etc/hosts, …, docker's init
    layer) and the parent directories changed only by making them."""
    if not exclude:
        return found
    kept = [c for c in found if c.path not in exclude]
    mountpoint_dirs = {p.rsplit("/", 1)[0] for p in exclude if "/" in p}
    return [
        c
        for c in kept
        if not (
            c.kind == "C"
            and c.path in mountpoint_dirs
            and not any(o.path.startswith(c.path + "/") for o in kept)
        )
    ]


def diff(images: Images, key: str, exclude: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """docker diff: (A|C|D, /path) for each change in the snapshot."""
    _, found = images.snapshots.changes(key)
    return [(c.kind, "/" + c.path) for c in _without(found, exclude)]


def export(images: Images, key: str, out: BinaryIO) -> None:
    """docker export: the snapshot's whole filesystem as one tar."""
    mounts = images.snapshots.mounts(key)
    if len(mounts) == 1 and mounts[0].type == "bind":
        root = Path(mounts[0].source)  # a plain directory already: no need to mount
        write_tar(dir_changes(None, root), root, out)
        return
    tmp_root = images.root / "tmp"
    tmp_root.mkdir(exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="export-", dir=tmp_root))
    try:
        with mounted(mounts, target):
            write_tar(dir_changes(None, target), target, out)
    finally:
        shutil.rmtree(target, ignore_errors=True)
