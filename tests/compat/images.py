"""Build container images without a registry: a layer tar from a rootfs, and an OCI image layout archive.

The archive is what `ctr images import` (and `docker load`, `podman load`) accept: an ``oci-layout``
file, ``index.json`` naming the image, and ``blobs/sha256/`` holding the layer, the config and the
manifest. The layer is left uncompressed; the image spec allows it and then diff ID == layer digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
import tarfile
import time
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def layer_tar(rootfs: Path, dest: Path) -> Path:
    """`tar -C rootfs -c .`: numeric owners, symlinks kept, as docker/podman `import` expect."""
    subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(dest), "."], check=True)
    return dest


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def oci_archive(layer: Path, dest: Path, name: str, cmd: list[str] | None = None) -> Path:
    """Write an OCI image layout tar holding one image, `name` (e.g. docker.io/library/x:latest)."""
    layer_bytes = layer.read_bytes()
    layer_desc = _descriptor(OCI_LAYER, layer_bytes)
    config = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "architecture": GOARCH.get(platform.machine(), platform.machine()),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd or ["sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        "history": [{"created_by": "tests/compat/images.py"}],
    }
    config_bytes = json.dumps(config).encode()
    config_desc = _descriptor(OCI_CONFIG, config_bytes)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": [layer_desc]}
    manifest_bytes = json.dumps(manifest).encode()
    manifest_desc = _descriptor(OCI_MANIFEST, manifest_bytes)
    tag = name.rpartition(":")[2] if ":" in name.rpartition("/")[2] else "latest"
    manifest_desc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": tag,
    }
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}

    with tarfile.open(dest, "w") as tar:

        def add(path: str, data: bytes) -> None:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps(index).encode())
        for desc, data in ((config_desc, config_bytes), (manifest_desc, manifest_bytes)):
            add("blobs/sha256/" + str(desc["digest"]).removeprefix("sha256:"), data)
        info = tarfile.TarInfo("blobs/sha256/" + str(layer_desc["digest"]).removeprefix("sha256:"))
        info.size = len(layer_bytes)
        info.mode = 0o644
        with layer.open("rb") as f:
            tar.addfile(info, f)
    return dest
