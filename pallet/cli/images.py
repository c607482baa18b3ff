"""Image verbs: images, image ls|inspect|history|tag|rm|prune|load|save|import, load, save, import,
export, commit, diff, system df, and ``snapshot`` (ctr's snapshot verbs, for using commit, diff and
export on a writable snapshot before containers exist). Each verb calls the library and prints.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from pallet.cli.format import ellipsis, human_size, print_inspect, print_rows, since
from pallet.cli.grammar import Command
from pallet.cli.parsing import add_verb as _verb
from pallet.cli.parsing import confirm
from pallet.engine.views import (
    IMAGE_CONFIG_KEYS,
    MOUNTPOINTS,
    image_has_label,
    image_inspect,
    image_ref_matches,
)
from pallet.errors import InvalidArgument, PalletError

IMAGES_TABLE = "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{.CreatedSince}}\\t{{.Size}}"
IMAGES_DIGESTS = "table {{.Repository}}\\t{{.Tag}}\\t{{.Digest}}\\t{{.ID}}\\t{{.CreatedSince}}\\t{{.Size}}"
IMAGES_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Digest": "DIGEST"}
IMAGES_HEADERS |= {
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
    "Containers": "CONTAINERS",
}
HISTORY_TABLE = "table {{.ID}}\\t{{.CreatedSince}}\\t{{.CreatedBy}}\\t{{.Size}}\\t{{.Comment}}"
HISTORY_HEADERS = {
    "ID": "IMAGE",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "CreatedBy": "CREATED BY",
}
HISTORY_HEADERS |= {"Size": "SIZE", "Comment": "COMMENT"}


def _short(digest: Any, no_trunc: bool) -> str:
    return str(digest) if no_trunc else digest.short()


def _created(image: Any) -> Any:
    from pallet.image.images import parse_time

    return parse_time(image.config.created)


# -- images / image ls --------------------------------------------------------------------------------


def _filters(values: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in values:
        key, eq, val = v.partition("=")
        if not eq or key not in ("dangling", "reference", "label"):
            raise InvalidArgument(f'invalid filter "{v}" (have dangling=, reference=, label=)')
        out.setdefault(key, []).append(val)
    return out


def cmd_images(ctx: Any, args: argparse.Namespace) -> int:
    imgs = ctx.images
    filters = _filters(args.filter)
    if args.repository:
        filters.setdefault("reference", []).append(args.repository)
    rows = []
    for image in sorted(imgs.all(), key=lambda i: i.config.created, reverse=True):
        created = _created(image)
        size = human_size(imgs.size(image), 3)
        tags = image.tags or [None]
        if "dangling" in filters and (filters["dangling"][-1] == "true") != (not image.tags):
            continue
        if not all(image_has_label(image, want) for want in filters.get("label", [])):
            continue
        for ref in tags:
            if "reference" in filters and not (ref and image_ref_matches(ref, filters["reference"])):
                continue
            rows.append(
                {
                    "Containers": "N/A",
                    "CreatedAt": created.strftime("%Y-%m-%d %H:%M:%S +0000 UTC") if created else "",
                    "CreatedSince": since(created),
                    "Digest": "<none>",
                    "ID": _short(image.id, args.no_trunc),
                    "Repository": ref.familiar_name() if ref else "<none>",
                    "SharedSize": "N/A",
                    "Size": size,
                    "Tag": (ref.tag or "<none>") if ref else "<none>",
                    "UniqueSize": "N/A",
                    "VirtualSize": size,
                }
            )
    if args.quiet:
        seen: list[str] = []
        for r in rows:
            if r["ID"] not in seen:
                seen.append(r["ID"])
        sys.stdout.write("".join(i + "\n" for i in seen))
        return 0
    default = IMAGES_DIGESTS if args.digests else IMAGES_TABLE
    sys.stdout.write(print_rows(args.format, default, IMAGES_HEADERS, rows))
    return 0


# -- inspect / history / tag / rm / prune ---------------------------------------------------------------


def cmd_inspect(ctx: Any, args: argparse.Namespace) -> int:
    out = [image_inspect(ctx.images, ctx.images.get(name)) for name in args.images]
    print_inspect(args.format, out)
    return 0


def cmd_history(ctx: Any, args: argparse.Namespace) -> int:
    imgs = ctx.images
    image = imgs.get(args.image)
    from pallet.image.images import parse_time
    from pallet.oci.image import History

    sizes = iter(imgs.layer_sizes(image))
    rows = []
    # an image without history (some importers write none) still shows one row per layer
    history = image.config.history or [History(image.config.created) for _ in image.config.diff_ids]
    for i, h in enumerate(history):
        size = 0 if h.empty_layer else next(sizes, 0)
        created = parse_time(h.created)
        created_by = h.created_by if args.no_trunc else ellipsis(h.created_by, 45)
        rows.append(
            {
                "ID": _short(image.id, args.no_trunc) if i == len(history) - 1 else "<missing>",
                "CreatedSince": since(created) if args.human else h.created,
                "CreatedAt": h.created,
                "CreatedBy": created_by,
                "Size": human_size(size, 3) if args.human else str(size),
                "Comment": h.comment,
            }
        )
    rows.reverse()
    if args.quiet:
        sys.stdout.write("".join(r["ID"] + "\n" for r in rows))
        return 0
    sys.stdout.write(print_rows(args.format, HISTORY_TABLE, HISTORY_HEADERS, rows))
    return 0


def cmd_tag(ctx: Any, args: argparse.Namespace) -> int:
    ctx.images.tag(args.source, args.target)
    return 0


def cmd_rm(ctx: Any, args: argparse.Namespace) -> int:
    status = 0
    for name in args.images:
        try:
            for verb, what in ctx.images.remove(name, force=args.force):
                print(f"{verb}: {what}")
        except PalletError as e:  # docker goes on with the other names and fails at the end
            print(f"Error: {e}", file=sys.stderr)
            status = 125
    return status


def cmd_prune(ctx: Any, args: argparse.Namespace) -> int:
    what = (
        "all images without at least one container associated to them" if args.all else "all dangling images"
    )
    if not args.force and not confirm(f"WARNING! This will remove {what}."):
        return 0
    report, freed = ctx.images.prune(all_unused=args.all)
    if report:
        print("Deleted Images:")
        for verb, item in report:
            print(f"{verb}: {item}")
        print()
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


# -- load / save / import / export / commit / diff ----------------------------------------------------------


def _spool_stdin(ctx: Any) -> Path:
    """docker load/import read stdin; a tar needs random access, so it is spooled to a file first."""
    tmp_root = ctx.images.root / "tmp"
    tmp_root.mkdir(exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="stdin-", dir=tmp_root)
    with os.fdopen(fd, "wb") as f:
        while chunk := sys.stdin.buffer.read(1 << 20):
            f.write(chunk)
    return Path(name)


def cmd_load(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.image.archive import load

    if args.input is None and sys.stdin.isatty():
        raise InvalidArgument("requested load from stdin, but stdin is empty")
    path = Path(args.input) if args.input else _spool_stdin(ctx)
    try:
        loaded = load(ctx.images, path)
    finally:
        if args.input is None:
            path.unlink()
    for item in loaded:
        if item.tags:
            for t in item.tags:
                print(f"Loaded image: {t.familiar()}")
        else:
            print(f"Loaded image ID: {item.image.id}")
    return 0


def cmd_save(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.image.archive import save

    if args.output is None and args.format != "oci-dir" and sys.stdout.isatty():
        raise InvalidArgument("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    if args.output is None:
        sys.stdout.flush()
        save(ctx.images, args.images, sys.stdout.buffer, args.format)
    else:
        save(ctx.images, args.images, Path(args.output), args.format)
    return 0


def cmd_import(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.image.rootfs import import_rootfs

    path = _spool_stdin(ctx) if args.file == "-" else Path(args.file)
    try:
        image = import_rootfs(ctx.images, path, args.reference, args.message or "", args.change)
    finally:
        if args.file == "-":
            path.unlink()
    print(image.id)
    return 0


def _snapshot_of(ctx: Any, name: str) -> tuple[str, dict[str, Any] | None]:
    """A container (by name or id) gives its writable snapshot and its config; else ``name`` is a key."""
    db = ctx.root / "engine" / "containers.db"
    if db.exists():
        from pallet.engine.store import ContainerStore

        store = ContainerStore(db)
        try:
            rec = store.get(name)
        except PalletError:
            return name, None
        finally:
            store.close()
        cfg = rec.config["Config"]
        return rec.id, {k: cfg[k] for k in IMAGE_CONFIG_KEYS if cfg.get(k)}
    return name, None


def cmd_export(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.image.rootfs import export

    if args.output is None:
        if sys.stdout.isatty():
            raise InvalidArgument("cowardly refusing to save to a terminal. Use the -o flag or redirect")
        sys.stdout.flush()
        export(ctx.images, _snapshot_of(ctx, args.snapshot)[0], sys.stdout.buffer)
        return 0
    out = Path(args.output)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            export(ctx.images, _snapshot_of(ctx, args.snapshot)[0], f)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return 0


def cmd_commit(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.image.rootfs import commit

    key, config = _snapshot_of(ctx, args.snapshot)
    image = commit(
        ctx.images,
        key,
        args.reference,
        args.message or "",
        args.author or "",
        args.change,
        config,
        MOUNTPOINTS if config is not None else frozenset(),
    )
    print(image.id)
    return 0


def cmd_diff(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.image.rootfs import diff

    key, config = _snapshot_of(ctx, args.snapshot)
    for kind, path in diff(ctx.images, key, MOUNTPOINTS if config is not None else frozenset()):
        print(f"{kind} {path}")
    return 0


# -- system df ----------------------------------------------------------------------------------------------


def cmd_df(ctx: Any, args: argparse.Namespace) -> int:
    imgs = ctx.images
    usage = imgs.disk_usage()
    writable = imgs.writable_snapshots()
    layers: dict[Any, int] = {}
    in_use: set[Any] = set()
    for u in usage:
        layers |= u.layers
        if u.containers:
            in_use |= set(u.layers)
    total = sum(layers.values())
    reclaim = sum(size for chain, size in layers.items() if chain not in in_use)
    if args.verbose:
        print("Images space usage:\n")
        rows = [
            ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"]
        ]
        for u in usage:
            for ref in u.image.tags or [None]:
                rows.append(
                    [
                        ref.familiar_name() if ref else "<none>",
                        (ref.tag or "<none>") if ref else "<none>",
                        u.image.id.short(),
                        since(_created(u.image)),
                        human_size(u.size),
                        human_size(u.shared),
                        human_size(u.unique),
                        str(u.containers),
                    ]
                )
        sys.stdout.write(_table(rows))
        print("\nContainers space usage:\n")
        rows = [["SNAPSHOT", "SIZE"]] + [[key, human_size(size)] for key, size in writable]
        sys.stdout.write(_table(rows))
        return 0
    pct = f" ({round(100 * reclaim / total)}%)" if total else ""
    written = sum(size for _, size in writable)
    rows = [
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
        [
            "Images",
            str(len(usage)),
            str(sum(1 for u in usage if u.containers)),
            human_size(total),
            human_size(reclaim) + pct,
        ],
        # until the engine runs containers, a container is a writable snapshot; none is known to be running
        [
            "Containers",
            str(len(writable)),
            "0",
            human_size(written),
            human_size(written) + (" (100%)" if written else ""),
        ],
    ]
    sys.stdout.write(_table(rows))
    return 0


def _table(rows: list[list[str]]) -> str:
    from pallet.cli.format import tabwrite

    return tabwrite(rows)


# -- snapshot (ctr-like) ------------------------------------------------------------------------------------


def cmd_snapshot_ls(ctx: Any, args: argparse.Namespace) -> int:
    rows = [["KEY", "PARENT", "KIND"]]
    rows += [[i.name, i.parent, i.kind.capitalize()] for i in ctx.images.snapshots.walk()]
    sys.stdout.write(_table(rows))
    return 0


def cmd_snapshot_prepare(ctx: Any, args: argparse.Namespace) -> int:
    mounts = ctx.images.prepare(args.key, args.image)
    _print_mounts(mounts)
    return 0


def cmd_snapshot_mounts(ctx: Any, args: argparse.Namespace) -> int:
    _print_mounts(ctx.images.snapshots.mounts(args.key))
    return 0


def _print_mounts(mounts: list[Any]) -> None:
    for m in mounts:
        print(f"mount -t {m.type} {m.source} <target> -o {','.join(m.options)}")


def cmd_snapshot_mount(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.image.mount import mount_all

    mount_all(ctx.images.snapshots.mounts(args.key), Path(args.target))
    return 0


def cmd_snapshot_unmount(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.image.mount import unmount_all

    unmount_all(Path(args.target))
    return 0


def cmd_snapshot_rm(ctx: Any, args: argparse.Namespace) -> int:
    for key in args.keys:
        ctx.images.snapshots.remove(key)
    return 0


# -- registration -------------------------------------------------------------------------------------------


def _images_args(p: Command) -> None:
    p.add_argument("repository", nargs="?", help="REPOSITORY[:TAG]")
    p.add_argument("-a", "--all", action="store_true", help="show all images (no intermediate images exist)")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        help="dangling=true|false, reference=PATTERN, label=KEY[=VALUE]",
    )
    p.add_argument("--format", help="table (default), json, or a Go template")
    p.set_defaults(func=cmd_images)


def _add_image_verbs(sub: Any, top: bool) -> None:
    """Verbs docker has both as ``image X`` and as top-level ``X`` (rmi for rm)."""
    p = _verb(sub, "rmi" if top else "rm", cmd_rm, "remove images", [] if top else ["remove"])
    p.add_argument("-f", "--force", action="store_true", help="force removal")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p = _verb(sub, "tag", cmd_tag, "tag an image")
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    p = _verb(sub, "load", cmd_load, "load images from a docker-archive or OCI archive")
    p.add_argument("-i", "--input", help="read from a tar archive file or OCI layout directory, not stdin")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the load output")
    p = _verb(sub, "save", cmd_save, "save images to a tar archive")
    p.add_argument("-o", "--output", help="write to a file, not stdout")
    p.add_argument(
        "--format", default="docker-archive", help="docker-archive (default), oci-archive, oci-dir"
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p = _verb(sub, "import", cmd_import, "import a rootfs tarball as an image")
    p.add_argument("-c", "--change", action="append", default=[], help="apply a Dockerfile instruction")
    p.add_argument("-m", "--message", help="commit message")
    p.add_argument("file", metavar="file|-")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")


def register(sub: Any) -> None:
    _images_args(_verb(sub, "images", cmd_images, "list images"))
    _add_image_verbs(sub, top=True)

    image = sub.add_parser("image", help="manage images")
    image.set_defaults(help_parser=image)
    isub = image.add_subparsers(dest="image_command", metavar="COMMAND", parser_class=type(image))
    _images_args(_verb(isub, "ls", cmd_images, "list images", ["list"]))
    _add_image_verbs(isub, top=False)
    p = _verb(isub, "inspect", cmd_inspect, "show details of images")
    p.add_argument("-f", "--format", help="a Go template")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p = _verb(isub, "history", cmd_history, "show the history of an image")
    p.add_argument("-H", "--human", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--format")
    p.add_argument("image")
    p = _verb(isub, "prune", cmd_prune, "remove unused images")
    p.add_argument(
        "-a",
        "--all",
        action="store_true",
        help="remove all images not used by a snapshot, not just dangling ones",
    )
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")

    sp = sub.add_parser("history", help="show the history of an image")
    sp.set_defaults(func=cmd_history)
    sp.add_argument("-H", "--human", action=argparse.BooleanOptionalAction, default=True)
    sp.add_argument("--no-trunc", action="store_true")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.add_argument("--format")
    sp.add_argument("image")

    p = _verb(sub, "export", cmd_export, "export a container's (or a snapshot's) filesystem as a tar archive")
    p.add_argument("-o", "--output", help="write to a file, not stdout")
    p.add_argument("snapshot", metavar="CONTAINER")
    p = _verb(sub, "commit", cmd_commit, "create a new image from a container's (or a snapshot's) changes")
    p.add_argument("-a", "--author")
    p.add_argument("-m", "--message")
    p.add_argument("-c", "--change", action="append", default=[])
    p.add_argument("snapshot", metavar="CONTAINER")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p = _verb(sub, "diff", cmd_diff, "list the changes in a container's (or a snapshot's) filesystem")
    p.add_argument("snapshot", metavar="CONTAINER")

    system = sub.add_parser("system", help="manage pallet")
    system.set_defaults(help_parser=system)
    ssub = system.add_subparsers(dest="system_command", metavar="COMMAND", parser_class=type(system))
    p = _verb(ssub, "df", cmd_df, "show disk usage")
    p.add_argument("-v", "--verbose", action="store_true")

    snap = sub.add_parser("snapshot", help="manage snapshots (writable layers)")
    snap.set_defaults(help_parser=snap)
    nsub = snap.add_subparsers(dest="snapshot_command", metavar="COMMAND", parser_class=type(snap))
    _verb(nsub, "ls", cmd_snapshot_ls, "list snapshots")
    p = _verb(nsub, "prepare", cmd_snapshot_prepare, "make a writable snapshot of an image")
    p.add_argument("key")
    p.add_argument("image")
    p = _verb(nsub, "mounts", cmd_snapshot_mounts, "print a snapshot's mounts")
    p.add_argument("key")
    p = _verb(nsub, "mount", cmd_snapshot_mount, "mount a snapshot on a directory")
    p.add_argument("key")
    p.add_argument("target")
    p = _verb(nsub, "unmount", cmd_snapshot_unmount, "unmount a directory")
    p.add_argument("target")
    p = _verb(nsub, "rm", cmd_snapshot_rm, "remove snapshots")
    p.add_argument("keys", nargs="+", metavar="KEY")
