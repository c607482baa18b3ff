"""Volumes as docker's ``local`` driver keeps them: ``<root>/volumes/<name>/_data`` with the record
beside it (``meta.json``: labels, options, created, anonymous or named), and the mounts a container asks
for — ``-v``, ``--mount``, ``--volumes-from`` and the image's VOLUME — turned into docker's Mounts.

A volume is in use while any container record mounts it; ``rm`` refuses it then. ``rm -v`` of a
container removes its anonymous volumes only (named ones outlive it, as in docker). A volume made
for a container starts empty and is filled from the image at its path on first start ("copy-up"),
resolving that path inside the container's root without following its symlinks out of it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from pallet.errors import Conflict, InvalidArgument, NotFound

_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_PROPAGATION = ("shared", "slave", "private", "rshared", "rslave", "rprivate")


class Volumes:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / "volumes"

    # -- records ------------------------------------------------------------------------------------
    def _meta(self, name: str) -> Path:
        return self.dir / name / "meta.json"

    def create(
        self,
        name: str = "",
        labels: dict[str, str] | None = None,
        driver: str = "local",
        opts: dict[str, str] | None = None,
        anonymous: bool = False,
    ) -> dict[str, Any]:
        if driver != "local":
            raise InvalidArgument(f'error looking up volume plugin {driver}: plugin "{driver}" not found')
        if opts:
            raise InvalidArgument(f"invalid option for the local driver: {', '.join(opts)}")
        name = name or os.urandom(32).hex()
        if len(name) < 2 or not name[0].isalnum() or set(name) - _NAME_OK:
            raise InvalidArgument(
                f'create {name}: "{name}" includes invalid characters for a local volume name, '
                'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed'
            )
        if self._meta(name).exists():
            return self.get(name)  # docker: creating an existing volume returns it
        d = self.dir / name
        (d / "_data").mkdir(parents=True, exist_ok=True)
        meta = {"CreatedAt": _now(), "Labels": labels or {}, "Options": {}, "Anonymous": anonymous}
        tmp = d / ".meta.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self._meta(name))  # the record appears last: a crash leaves no half volume
        return self.get(name)

    def get(self, name: str) -> dict[str, Any]:
        try:
            meta = json.loads(self._meta(name).read_text())
        except (OSError, ValueError):
            raise NotFound(f"get {name}: no such volume") from None
        return {
            "CreatedAt": meta["CreatedAt"],
            "Driver": "local",
            "Labels": meta.get("Labels") or {},
            "Mountpoint": str(self.dir / name / "_data"),
            "Name": name,
            "Options": meta.get("Options") or {},
            "Scope": "local",
            "Anonymous": bool(meta.get("Anonymous")),
        }

    def all(self) -> list[dict[str, Any]]:
        if not self.dir.is_dir():
            return []
        return [self.get(p.name) for p in sorted(self.dir.iterdir()) if (p / "meta.json").exists()]

    def users(self, name: str) -> list[str]:
        """Ids of the containers whose records mount ``name``."""
        db = self.root / "engine" / "containers.db"
        if not db.exists():
            return []
        from pallet.engine.store import ContainerStore

        store = ContainerStore(db)
        try:
            return [
                r.id
                for r in store.all()
                if any(
                    m.get("Type") == "volume" and m.get("Name") == name for m in r.config.get("Mounts") or []
                )
            ]
        finally:
            store.close()

    def remove(self, name: str, force: bool = False) -> None:
        self.get(name)
        used = self.users(name)
        if used:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(used)}]")
        # the record goes first: a crash midway leaves a directory no one lists, never a record of nothing
        self._meta(name).unlink()
        shutil.rmtree(self.dir / name, ignore_errors=True)

    def prune(self, all_volumes: bool = False, labels: list[str] | None = None) -> tuple[list[str], int]:
        """Unused volumes (anonymous only unless ``all_volumes``, as docker 23+); names and bytes freed."""
        gone, freed = [], 0
        for v in self.all():
            if not (all_volumes or v["Anonymous"]) or not _labels_match(v["Labels"], labels or []):
                continue
            if self.users(v["Name"]):
                continue
            freed += _du(Path(v["Mountpoint"]))
            self.remove(v["Name"])
            gone.append(v["Name"])
        return gone, freed

    # -- a container's mounts --------------------------------------------------------------------------
    def mounts(
        self, cfg: dict[str, Any], host: dict[str, Any], others: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """docker's Mounts for a new container: ``-v`` (host["Binds"]), ``--mount`` (host["MountSpecs"]),
        ``--volumes-from`` (``others``: those containers' Mounts, each with "Mode" ro/rw), then the image's
        VOLUME where nothing else is mounted. Volumes made here are removed again if a later one fails."""
        made: list[str] = []
        out: list[dict[str, Any]] = []
        try:
            for v in host.get("Binds") or []:
                out.append(self._from_bind(v, made))
            for spec in host.get("MountSpecs") or []:
                m = self._from_mount(spec, made)
                if m is not None:
                    out.append(m)
            for src in others:
                for m in src["Mounts"]:
                    if any(o["Destination"] == m["Destination"] for o in out):
                        continue
                    ro = src["Mode"] == "ro" or (src["Mode"] != "rw" and not m.get("RW", True))
                    out.append(m | {"RW": not ro, "ReadOnly": ro, "CopyUp": False})
            for target in cfg.get("Volumes") or {}:
                if not any(o["Destination"] == target for o in out):
                    out.append(self._volume("", target, False, made, copy=True))
            seen: set[str] = set()
            for o in out:
                if o["Destination"] in seen:
                    raise InvalidArgument(f"Duplicate mount point: {o['Destination']}")
                seen.add(o["Destination"])
        except BaseException:
            for name in made:
                shutil.rmtree(self.dir / name, ignore_errors=True)
            raise
        return out

    def _volume(
        self,
        name: str,
        target: str,
        ro: bool,
        made: list[str],
        copy: bool,
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        existed = bool(name) and self._meta(name).exists()
        v = self.create(name, labels, anonymous=not name)
        if not existed:
            made.append(v["Name"])
        return {
            "Type": "volume", "Name": v["Name"], "Source": v["Mountpoint"], "Destination": target,
            "Target": target, "Driver": "local", "Mode": "", "RW": not ro, "ReadOnly": ro,
            "Propagation": "", "CopyUp": copy, "Anonymous": not name,
        }  # fmt: skip

    def _from_bind(self, spec: str, made: list[str]) -> dict[str, Any]:
        parts = spec.split(":")
        if len(parts) == 1:
            src, dst, mode = "", parts[0], ""
        elif len(parts) in (2, 3):
            src, dst, mode = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
        else:
            raise InvalidArgument(f"invalid volume specification: '{spec}'")
        if not dst.startswith("/") or dst == "/":
            raise InvalidArgument(
                f"invalid volume specification: '{spec}': invalid mount config: bad destination"
            )
        opts = [o for o in mode.split(",") if o]
        for o in opts:
            if o not in ("ro", "rw", "z", "Z", "nocopy", *_PROPAGATION):
                raise InvalidArgument(f"invalid mode: {o}")
        ro = "ro" in opts
        prop = next((o for o in opts if o in _PROPAGATION), "")
        if src.startswith("/") or src.startswith("."):
            return _bind(os.path.abspath(src), dst, ro, prop, spec)
        if prop:
            raise InvalidArgument(f"invalid mode: {prop}: propagation applies to bind mounts only")
        return self._volume(src, dst, ro, made, copy="nocopy" not in opts)

    def _from_mount(self, spec: str, made: list[str]) -> dict[str, Any] | None:
        kv: dict[str, str] = {}
        for field in spec.split(","):
            k, eq, v = field.partition("=")
            kv[k.strip().lower()] = v if eq else "true"
        kind = kv.pop("type", "volume")
        src = kv.pop("source", kv.pop("src", ""))
        dst = kv.pop("target", kv.pop("destination", kv.pop("dst", "")))
        ro = kv.pop("readonly", kv.pop("ro", "false")) in ("true", "1")
        if not dst.startswith("/"):
            raise InvalidArgument(f'invalid argument "{spec}" for "--mount" flag: target is required')
        if kind == "bind":
            prop = kv.pop("bind-propagation", "")
            if prop and prop not in _PROPAGATION:
                raise InvalidArgument(f"invalid bind-propagation: {prop}")
            kv.pop("bind-nonrecursive", None)
            _no_more(kv, spec)
            if not src:
                raise InvalidArgument(f'invalid argument "{spec}" for "--mount" flag: source is required')
            return _bind(src, dst, ro, prop, spec, create=False)
        if kind == "volume":
            nocopy = kv.pop("volume-nocopy", "false") in ("true", "1")
            label = kv.pop("volume-label", "")
            if "volume-opt" in kv or "volume-driver" in kv:
                raise InvalidArgument(
                    f'invalid argument "{spec}" for "--mount" flag: the local driver takes no options'
                )
            _no_more(kv, spec)
            key, _, value = label.partition("=")
            labels = {key: value} if label else None
            return self._volume(src, dst, ro, made, copy=not nocopy, labels=labels)
        if kind == "tmpfs":
            if src:
                raise InvalidArgument('invalid mount config for type "tmpfs": source must not be set')
            opts = [f"size={kv.pop('tmpfs-size')}"] if "tmpfs-size" in kv else []
            if "tmpfs-mode" in kv:
                opts.append(f"mode={kv.pop('tmpfs-mode')}")
            _no_more(kv, spec)
            return {"Type": "tmpfs", "Source": "", "Destination": dst, "Target": dst, "RW": not ro,
                    "ReadOnly": ro, "Options": opts, "Propagation": ""}  # fmt: skip
        raise InvalidArgument(f'invalid argument "{spec}" for "--mount" flag: unknown mount type "{kind}"')

    def release(self, cid: str, mounts: list[dict[str, Any]]) -> None:
        """``rm -v`` of container ``cid``: its anonymous volumes that no other container mounts."""
        for m in mounts:
            if m.get("Type") == "volume" and m.get("Anonymous", True) and _is_hex64(m.get("Name", "")):
                if not [c for c in self.users(m["Name"]) if c != cid]:
                    shutil.rmtree(self.dir / m["Name"], ignore_errors=True)


def copy_up(rootfs: Path, mounts: list[dict[str, Any]]) -> None:
    """Fill each new, still empty volume from the image's content at its path (docker's copy-up),
    owners, modes and symlinks kept; a path that passes through a symlink is left alone (it could
    point out of the container's root)."""
    for m in mounts:
        if m.get("Type") != "volume" or not m.get("CopyUp"):
            continue
        data = Path(m["Source"])
        if any(data.iterdir()):
            continue
        src = rootfs
        for part in Path(m["Destination"]).parts[1:]:
            src = src / part
            if src.is_symlink() or not src.exists():
                break
        else:
            if src.is_dir():
                st = src.stat()
                os.chown(data, st.st_uid, st.st_gid)
                os.chmod(data, st.st_mode & 0o7777)
                for entry in src.iterdir():
                    _copy(entry, data / entry.name)


def _copy(src: Path, dst: Path) -> None:
    st = src.lstat()
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        dst.mkdir()
        for entry in src.iterdir():
            _copy(entry, dst / entry.name)
        os.chmod(dst, st.st_mode & 0o7777)
    elif src.is_file():
        shutil.copyfile(src, dst, follow_symlinks=False)
        os.chmod(dst, st.st_mode & 0o7777)
    else:
        return  # devices, fifos, sockets: docker copies them; a volume rarely wants one
    os.lchown(dst, st.st_uid, st.st_gid)


def _bind(src: str, dst: str, ro: bool, prop: str, spec: str, create: bool = True) -> dict[str, Any]:
    if not os.path.exists(src):
        if not create:
            raise InvalidArgument(
                f'invalid mount config for type "bind": bind source path does not exist: {src}'
            )
        os.makedirs(src, exist_ok=True)  # docker's -v makes a missing host directory
    return {"Type": "bind", "Source": src, "Destination": dst, "Target": dst, "Mode": "", "RW": not ro,
            "ReadOnly": ro, "Propagation": prop or "rprivate"}  # fmt: skip


def _no_more(kv: dict[str, str], spec: str) -> None:
    if kv:
        raise InvalidArgument(
            f'invalid argument "{spec}" for "--mount" flag: unexpected key \'{next(iter(kv))}\''
        )


def _is_hex64(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _labels_match(labels: dict[str, str], filters: list[str]) -> bool:
    for f in filters:
        k, eq, v = f.partition("=")
        if k not in labels or (eq and labels[k] != v):
            return False
    return True


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
