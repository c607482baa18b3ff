"""Image endpoints: list, inspect, history, tag, remove, create (pull or import), push, load, get, prune,
commit. Each calls the image library as the CLI's verbs do and serialises docker's JSON."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pallet.api.server import Request
from pallet.engine.views import (
    IMAGE_CONFIG_KEYS,
    MOUNTPOINTS,
    image_has_label,
    image_inspect,
    image_ref_matches,
)
from pallet.errors import InvalidArgument, NotFound


def _ts(text: str) -> int:
    from pallet.image.images import parse_time

    t = parse_time(text)
    return int(t.timestamp()) if t else 0


def summary(imgs: Any, image: Any) -> dict[str, Any]:
    size = imgs.size(image)
    return {
        "Id": str(image.id),
        "ParentId": "",
        "RepoTags": [t.familiar() for t in image.tags] or None,
        "RepoDigests": [],
        "Created": _ts(image.config.created),
        "Size": size,
        "SharedSize": -1,
        "VirtualSize": size,
        "Labels": (image.config.config or {}).get("Labels") or {},
        "Containers": -1,
    }


def list_images(req: Request) -> list[dict[str, Any]]:
    imgs = req.engine.images
    filters = req.filters()
    if req.query.get("filter"):
        filters.setdefault("reference", []).append(req.query["filter"])
    for k in filters:
        if k not in ("dangling", "reference", "label"):
            raise InvalidArgument(f"invalid filter '{k}'")
    out = []
    for image in sorted(imgs.all(), key=lambda i: i.config.created, reverse=True):
        if "dangling" in filters and (filters["dangling"][-1] == "true") != (not image.tags):
            continue
        if not all(image_has_label(image, w) for w in filters.get("label", [])):
            continue
        if "reference" in filters and not any(image_ref_matches(t, filters["reference"]) for t in image.tags):
            continue
        out.append(summary(imgs, image))
    return out


def _get(req: Request, name: str) -> Any:
    try:
        return req.engine.images.get(name)
    except NotFound:
        raise NotFound(f"No such image: {name}") from None


def inspect(req: Request) -> dict[str, Any]:
    imgs = req.engine.images
    d = image_inspect(imgs, _get(req, req.args["name"]))
    d["ContainerConfig"] = d["Config"]
    d["DockerVersion"] = ""
    d["VirtualSize"] = d["Size"]
    d["GraphDriver"] = {"Name": imgs.snapshotter_name, "Data": {}}
    return d


def history(req: Request) -> list[dict[str, Any]]:
    from pallet.oci.image import History

    imgs = req.engine.images
    image = _get(req, req.args["name"])
    sizes = iter(imgs.layer_sizes(image))
    hist = image.config.history or [History(image.config.created) for _ in image.config.diff_ids]
    rows = []
    for i, h in enumerate(hist):
        last = i == len(hist) - 1
        rows.append(
            {
                "Id": str(image.id) if last else "<missing>",
                "Created": _ts(h.created),
                "CreatedBy": h.created_by,
                "Tags": [t.familiar() for t in image.tags] if last else None,
                "Size": 0 if h.empty_layer else next(sizes, 0),
                "Comment": h.comment,
            }
        )
    rows.reverse()
    return rows


def tag(req: Request) -> None:
    repo = req.query.get("repo") or ""
    if not repo:
        raise InvalidArgument("repository name must have at least one component")
    target = repo + (":" + req.query["tag"] if req.query.get("tag") else "")
    _get(req, req.args["name"])
    req.engine.images.tag(req.args["name"], target)
    req.send(201, b"", "text/plain")


def remove(req: Request) -> list[dict[str, str]]:
    _get(req, req.args["name"])
    report = req.engine.images.remove(req.args["name"], force=req.flag("force"))
    return [{verb: what} for verb, what in report]


def prune(req: Request) -> dict[str, Any]:
    filters = req.filters()
    all_unused = filters.get("dangling", ["true"])[-1] in ("false", "0")
    report, freed = req.engine.images.prune(all_unused=all_unused)
    return {"ImagesDeleted": [{verb: what} for verb, what in report] or None, "SpaceReclaimed": freed}


# -- bodies as files ---------------------------------------------------------------------------------------


def _spool(req: Request) -> Path:
    """A tar needs random access: the request body goes to a file under the image store first."""
    tmp_root = req.engine.images.root / "tmp"
    tmp_root.mkdir(exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="api-", dir=tmp_root)
    try:
        with os.fdopen(fd, "wb") as f:
            while chunk := req.body.read(1 << 20):
                f.write(chunk)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def load(req: Request) -> None:
    from pallet.image.archive import load as load_archive

    path = _spool(req)
    try:
        loaded = load_archive(req.engine.images, path)
    finally:
        path.unlink()
    out = req.stream()
    for item in loaded:
        for t in item.tags or [None]:  # type: ignore[list-item]
            line = f"Loaded image: {t.familiar()}\n" if t else f"Loaded image ID: {item.image.id}\n"
            out.json({"stream": line})
    out.close()


class _Writer:
    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        self.stream.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


def _save(req: Request, names: list[str]) -> None:
    from pallet.image.archive import save

    for n in names:
        _get(req, n)
    out = req.stream("application/x-tar")
    save(req.engine.images, names, _Writer(out))  # type: ignore[arg-type]
    out.close()


def get_one(req: Request) -> None:
    _save(req, [req.args["name"]])


def get_many(req: Request) -> None:
    names = req.queries.get("names") or []
    if not names:
        raise InvalidArgument("no image names given")
    _save(req, names)


# -- create (pull or import), push, commit --------------------------------------------------------------------


def _creds(req: Request) -> Any:
    raw = req.headers.get("X-Registry-Auth")
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        return None
    if not data or not data.get("username"):
        return None
    from pallet.image.registry.config import Credentials

    return Credentials(data["username"], data.get("password", ""))


def _registry(req: Request, domain: str) -> Any:
    from pallet.image.registry.client import Registry
    from pallet.image.registry.config import config_path, lookup
    from pallet.image.registry.transport import SYSTEM_CERTS_DIRS

    creds = _creds(req) or lookup(config_path(None), domain)
    host = domain.rsplit(":", 1)[0]
    # dockerd's rule: registries on the loopback may speak plain http
    insecure = host in ("localhost", "::1") or host.startswith("127.")
    return Registry(domain, creds, [req.server.root / "certs.d", *SYSTEM_CERTS_DIRS], insecure=insecure)


def _progress(out: Any) -> Any:
    def emit(event: Any) -> None:
        detail = {"current": event.current, "total": event.total} if getattr(event, "total", 0) else {}
        out.json({"status": event.status, "progressDetail": detail, "id": event.id})

    return emit


def create(req: Request) -> None:
    src = req.query.get("fromSrc")
    if src is not None:
        return _import(req, src)
    name = req.query.get("fromImage") or ""
    if not name:
        raise InvalidArgument("fromImage or fromSrc is required")
    if req.query.get("tag"):
        name += ("@" if req.query["tag"].startswith("sha256:") else ":") + req.query["tag"]
    from pallet.image.registry.pull import parse_platform, pull
    from pallet.oci.reference import parse_tagged

    ref = parse_tagged(name)
    platform = parse_platform(req.query["platform"]) if req.query.get("platform") else None
    registry = _registry(req, ref.domain)
    out = None
    try:
        out = req.stream()
        out.json({"status": f"Pulling from {ref.path}", "id": ref.tag or str(ref.digest)})
        try:
            result = pull(req.engine.images, registry, ref, platform, _progress(out))
        except Exception as e:  # noqa: BLE001 - after the 200 the error travels in the stream, as docker's
            out.json({"errorDetail": {"message": str(e)}, "error": str(e)})
            out.close()
            return
        out.json({"status": f"Digest: {result.digest}"})
        status = "Downloaded newer image" if result.updated else "Image is up to date"
        out.json({"status": f"Status: {status} for {ref.familiar()}"})
        out.close()
    finally:
        registry.close()


def _import(req: Request, src: str) -> None:
    from pallet.image.rootfs import import_rootfs

    if src != "-":
        raise InvalidArgument("import from a URL is not supported; send the tar as the request body")
    repo = req.query.get("repo") or ""
    tag_ = req.query.get("tag") or ""
    ref = (repo + (":" + tag_ if tag_ else "")) if repo else None
    path = _spool(req)
    try:
        image = import_rootfs(
            req.engine.images, path, ref, req.query.get("message") or "", req.queries.get("changes") or []
        )
    finally:
        path.unlink()
    out = req.stream()
    out.json({"status": str(image.id)})
    out.close()


def push(req: Request) -> None:
    from pallet.image.registry.push import push as push_image
    from pallet.oci.reference import parse_tagged

    name = req.args["name"] + (":" + req.query["tag"] if req.query.get("tag") else "")
    ref = parse_tagged(name)
    image = _get(req, name)
    registry = _registry(req, ref.domain)
    try:
        out = req.stream()
        out.json({"status": f"The push refers to repository [{ref.name}]"})
        try:
            result = push_image(req.engine.images, registry, image, ref, _progress(out))
        except Exception as e:  # noqa: BLE001 - as in create: the error goes in the stream
            out.json({"errorDetail": {"message": str(e)}, "error": str(e)})
            out.close()
            return
        out.json({"status": f"{result.tag}: digest: {result.digest} size: {result.size}"})
        out.json(
            {
                "progressDetail": {},
                "aux": {"Tag": result.tag, "Digest": str(result.digest), "Size": result.size},
            }
        )
        out.close()
    finally:
        registry.close()


def commit(req: Request) -> dict[str, str]:
    from pallet.image.rootfs import commit as commit_snapshot

    eng = req.engine
    rec = eng.get(req.query.get("container") or "")
    cfg = rec.config["Config"] | (req.body.json() or {})
    config = {k: cfg[k] for k in IMAGE_CONFIG_KEYS if cfg.get(k)}
    repo = req.query.get("repo") or ""
    ref = (repo + (":" + req.query["tag"] if req.query.get("tag") else "")) if repo else None
    image = commit_snapshot(
        eng.images,
        rec.id,
        ref,
        req.query.get("comment") or "",
        req.query.get("author") or "",
        req.queries.get("changes") or [],
        config,
        MOUNTPOINTS,
    )
    req.send(201, json.dumps({"Id": str(image.id)}).encode())
    return {"Id": str(image.id)}
