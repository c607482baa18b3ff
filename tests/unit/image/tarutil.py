"""Building layer tars in tests, hostile ones included: names are written exactly as given."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path


def entry(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    mode: int = 0o644,
    link: str = "",
    uid: int = 0,
    gid: int = 0,
    mtime: int = 1_600_000_000,
    xattrs: dict[str, bytes] | None = None,
    dev: tuple[int, int] = (0, 0),
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.uid, info.gid = uid, gid
    info.mtime = mtime
    info.devmajor, info.devminor = dev
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if xattrs:
        info.pax_headers = {
            f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()
        }
    return info, data


def f(name: str, data: bytes = b"", **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.REGTYPE, data, **kw)  # type: ignore[arg-type]


def d(name: str, mode: int = 0o755, **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.DIRTYPE, mode=mode, **kw)  # type: ignore[arg-type]


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.SYMTYPE, mode=0o777, link=target)


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.LNKTYPE, link=target)


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def write_layer(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]], compression: str = "") -> Path:
    data = tar_bytes(entries)
    if compression == "gzip":
        data = gzip.compress(data)
    elif compression == "zstd":
        data = subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    path.write_bytes(data)
    return path


def tree(root: Path) -> dict[str, str]:
    """A comparable picture of a tree: path -> type, mode and content or link target."""
    import os
    import stat

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "l " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = f"d {stat.S_IMODE(st.st_mode):o}"
            elif stat.S_ISREG(st.st_mode):
                out[rel] = f"f {stat.S_IMODE(st.st_mode):o} {p.read_bytes()[:64]!r}"
            else:
                out[rel] = f"o {st.st_mode:o} {st.st_rdev}"
    return out


def oci_layout(dest: Path, layers: list[bytes], tag: str = "", compress: bool = False) -> dict[str, str]:
    """Write an OCI image layout holding one image made of ``layers`` (uncompressed tars)."""
    import hashlib

    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        return "sha256:" + h, len(data)

    diff_ids = ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]
    descs = []
    for x in layers:
        blob = gzip.compress(x, mtime=0) if compress else x
        dg, size = put(blob)
        mt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
        descs.append({"mediaType": mt, "digest": dg, "size": size})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05.123456789Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }
    cdg, csize = put(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdg, "size": csize},
        "layers": descs,
    }
    mdg, msize = put(json.dumps(manifest).encode())
    desc: dict[str, object] = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": mdg,
        "size": msize,
    }
    if tag:
        desc["annotations"] = {
            "io.containerd.image.name": tag,
            "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[-1],
        }
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return {"config": cdg, "manifest": mdg}


def docker_archive(dest: Path, layers: list[bytes], tags: list[str]) -> str:
    """Write a docker-archive tar (the pre-25 `docker save` layout); returns the image ID."""
    import hashlib

    diff_ids = ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-02T03:04:05Z",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
        }
    ).encode()
    cid = hashlib.sha256(config).hexdigest()
    members = [(f"{cid}.json", config)]
    names = []
    for did, x in zip(diff_ids, layers, strict=True):
        names.append(f"{did[7:]}/layer.tar")
        members.append((names[-1], x))
    members.append(
        ("manifest.json", json.dumps([{"Config": f"{cid}.json", "RepoTags": tags, "Layers": names}]).encode())
    )
    with tarfile.open(dest, "w") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return "sha256:" + cid
