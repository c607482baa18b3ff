"""The container's root filesystem, built inside its new mount namespace by the init (stage 2).

Every mount destination is resolved inside the rootfs with symlinks evaluated relative to it and
`..` clamped at its root (runc's securejoin), then opened O_PATH and checked once more before
mounting onto /proc/self/fd/N, so a symlink swapped in between cannot redirect the mount
(CVE-2021-30465). proc and sysfs may only be mounted on real directories, judged by the destination
as written, before any symlink is followed (CVE-2019-16884, CVE-2023-27561, CVE-2023-28642); nothing
but a proc filesystem may cover /proc, and nothing inside it but the files lxcfs emulates, so the
AppArmor and LSM attributes under /proc/self/attr always reach the kernel.
"""

from __future__ import annotations

import errno
import os
import stat

from pallet.linux import syscalls as s
from pallet.runtime import mountopts

TYPE_CHECKING = False
if TYPE_CHECKING:  # the init imports this module at every container start: annotations only
    from typing import Any

DEFAULT_DEVICES = [
    {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666},
    {"path": "/dev/zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666},
    {"path": "/dev/full", "type": "c", "major": 1, "minor": 7, "fileMode": 0o666},
    {"path": "/dev/random", "type": "c", "major": 1, "minor": 8, "fileMode": 0o666},
    {"path": "/dev/urandom", "type": "c", "major": 1, "minor": 9, "fileMode": 0o666},
    {"path": "/dev/tty", "type": "c", "major": 5, "minor": 0, "fileMode": 0o666},
]
_MAX_SYMLINKS = 255
# what may be mounted inside /proc: the files lxcfs emulates (the same list as runc's checkProcMount)
LXCFS_PROC_FILES = frozenset(
    ["/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps", "/proc/uptime",
     "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev", "/proc/sys/kernel/ns_last_pid"]
)  # fmt: skip


class RootfsError(Exception):
    """A failure building the rootfs; carries the path it concerns."""


def secure_join(root: str, unsafe: str) -> str:
    """root + unsafe with every symlink resolved as if root were '/', never leaving root."""
    parts = [p for p in unsafe.split("/") if p]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                raise RootfsError(f"{unsafe}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _within(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _open_checked(root: str, path: str) -> int:
    """O_PATH fd of path, verified (through /proc) to still lie inside root."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    real = os.readlink(f"/proc/self/fd/{fd}")
    if not _within(root, real):
        os.close(fd)
        raise RootfsError(f"mount destination {path} resolves to {real}, outside the container's root")
    return fd


class _CheckedPath:
    """A /proc/self/fd path for path, verified inside root and stable while the block runs (a class,
    not a contextlib.contextmanager: contextlib and functools cost the init ~0.7 ms of its start)."""

    def __init__(self, root: str, path: str) -> None:
        self.fd = _open_checked(root, path)

    def __enter__(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _make_target(path: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.lexists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def idmapped_trees(sys: Any, spec: dict[str, Any], bundle: str) -> dict[int, int]:
    """For each idmapped bind mount (by its index in spec["mounts"]), a detached copy of its source with
    the mapping applied: open_tree(OPEN_TREE_CLONE), then mount_setattr(MOUNT_ATTR_IDMAP) with a user
    namespace holding uidMappings/gidMappings. Made by the init's stage 1 on the host's side, before
    any user namespace (the kernel wants privilege over the source's filesystem); stage 2 attaches
    each with move_mount. On a failure, what was made is closed and the error names the mount."""
    linux = spec.get("linux") or {}
    trees: dict[int, int] = {}
    try:
        for i, m in enumerate(spec.get("mounts") or []):
            options = m.get("options") or []
            flags = mountopts.parse(options)[0]
            is_bind = bool(flags & s.MS_BIND) or m.get("type") == "bind"
            if not (is_bind and (m.get("uidMappings") or {"idmap", "ridmap"} & set(options))):
                continue
            source = m.get("source") or ""
            src = source if os.path.isabs(source) else os.path.join(bundle, source)
            if not os.path.exists(src):
                raise RootfsError(f"bind mount source {src} does not exist")
            if os.geteuid() != 0:
                raise RootfsError(
                    f"idmapped mount on {m['destination']}: needs a runtime run as root "
                    "(mount_setattr wants privilege over the source's filesystem)"
                )
            uids = m.get("uidMappings") or linux.get("uidMappings")
            gids = m.get("gidMappings") or linux.get("gidMappings")
            if not uids or not gids:
                raise RootfsError(
                    f"idmapped mount on {m['destination']}: no uidMappings/gidMappings to apply"
                )
            trees[i] = _idmapped_tree(sys, src, m["destination"], uids, gids, options, bool(flags & s.MS_REC))
    except BaseException:
        for fd in trees.values():
            os.close(fd)
        raise
    return trees


def _idmapped_tree(
    sys: Any, src: str, dest: str, uids: list[dict[str, int]], gids: list[dict[str, int]], options: list[str],
    rec: bool,
) -> int:  # fmt: skip
    ns_fd = _userns_with_maps(sys, uids, gids)
    try:
        try:
            tree: int = sys.open_tree(
                s.AT_FDCWD, src, s.OPEN_TREE_CLONE | s.OPEN_TREE_CLOEXEC | (s.AT_RECURSIVE if rec else 0)
            )
        except OSError as e:
            if e.errno == errno.ENOSYS:
                raise RootfsError("idmapped mounts need Linux 5.12 or later (no open_tree here)") from e
            raise RootfsError(f"idmapped mount of {src} on {dest}: {e.strerror}") from e
        try:
            sys.mount_setattr(
                tree, "", s.AT_EMPTY_PATH | (s.AT_RECURSIVE if "ridmap" in options else 0),
                s.MOUNT_ATTR_IDMAP, 0, 0, ns_fd,
            )  # fmt: skip
        except OSError as e:
            os.close(tree)
            raise RootfsError(
                f"idmapped mount of {src} on {dest}: not supported for this filesystem ({os.strerror(e.errno or 0)})"
            ) from e
        return tree
    finally:
        os.close(ns_fd)


def _userns_with_maps(sys: Any, uids: list[dict[str, int]], gids: list[dict[str, int]]) -> int:
    """An fd of a new user namespace with these maps: a child unshares it, we write its maps and keep
    /proc/CHILD/ns/user open, then the child exits (the namespace lives on through the fd)."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # after fork, nothing clever
        try:
            os.close(ready_r)
            os.close(go_w)
            sys.unshare(s.CLONE_NEWUSER)
            # our pid as the mounted /proc counts it (the caller may be in another pid namespace)
            os.write(ready_w, os.readlink("/proc/self").encode())
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    try:
        seen = os.read(ready_r, 32)
        if not seen.isdigit():
            raise RootfsError("idmapped mount: could not create a user namespace for the mapping")
        for kind, maps in (("uid", uids), ("gid", gids)):
            try:
                with open(f"/proc/{seen.decode()}/{kind}_map", "w") as f:
                    f.write("".join(f"{x['containerID']} {x['hostID']} {x['size']}\n" for x in maps))
            except OSError as e:
                raise RootfsError(f"idmapped mount: cannot write its {kind}_map: {e.strerror}") from e
        return os.open(f"/proc/{seen.decode()}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(go_w)
        os.waitpid(pid, 0)


class RootfsBuilder:
    """Builds one container's rootfs; `sys` is the syscall seam."""

    def __init__(
        self,
        sys: Any,
        spec: dict[str, Any],
        rootfs: str,
        cgroup_paths: dict[str, str],
        idmapped: dict[int, int] | None = None,
    ) -> None:
        self.sys = sys
        self.idmapped = dict(idmapped or {})  # mount index -> detached idmapped tree (idmapped_trees)
        self.spec = spec
        self.rootfs = rootfs
        self.linux = spec.get("linux") or {}
        self.ns_types = {n["type"]: n.get("path", "") for n in self.linux.get("namespaces") or []}
        self.cgroup_paths = cgroup_paths
        self.in_userns = "user" in self.ns_types

    # -- before pivot_root ---------------------------------------------------------------------
    def prepare(self) -> None:
        prop = mountopts.PROPAGATION.get(
            self.linux.get("rootfsPropagation") or "rslave", s.MS_SLAVE | s.MS_REC
        )
        # stop our mounts from leaking back to the host (and the host's from reaching us, unless asked)
        self.sys.mount(None, "/", None, prop)
        self._make_parent_private(self.rootfs)
        self.sys.mount(self.rootfs, self.rootfs, None, s.MS_BIND | s.MS_REC)
        for i, m in enumerate(self.spec.get("mounts") or []):
            self.mount_one(m, self.idmapped.pop(i, None))
        if "mount" in self.ns_types:
            self.create_devices()

    def _make_parent_private(self, path: str) -> None:
        """pivot_root(2) refuses a new root whose parent mount is shared; make that mount private."""
        mnt = self._mountpoint_of(path)
        try:
            self.sys.mount(None, mnt, None, s.MS_PRIVATE)
        except OSError:
            pass

    @staticmethod
    def _mountpoint_of(path: str) -> str:
        best = "/"
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if _within(mp, path) and len(mp) > len(best):
                    best = mp
        return best

    def mount_one(self, m: dict[str, Any], tree: int | None = None) -> None:
        try:
            self._mount_one(m, tree)
        except OSError as e:
            what = m.get("type") or "bind"
            raise RootfsError(
                f"mount {what} {m.get('source') or ''} on {m['destination']}: {e.strerror}"
            ) from e

    def _mount_one(self, m: dict[str, Any], tree: int | None) -> None:
        dest = m["destination"]
        if not os.path.isabs(dest):
            dest = "/" + dest  # runc accepts relative destinations as relative to /
        typ = m.get("type") or ""
        options = m.get("options") or []
        flags, propagation, data = mountopts.parse(options)
        source = m.get("source") or typ or "none"
        is_bind = bool(flags & s.MS_BIND) or typ == "bind"
        if typ in ("proc", "sysfs"):
            # the destination as written, unresolved: a symlink there is an attack, not a path to follow
            literal = os.path.join(self.rootfs, os.path.normpath(dest).lstrip("/"))
            if os.path.lexists(literal) and not stat.S_ISDIR(os.lstat(literal).st_mode):
                raise RootfsError(
                    f"mount destination {dest} of a {typ} mount must be a directory, not a symlink or file"
                )
        target = secure_join(self.rootfs, dest)
        self._check_proc_destination(dest, target, typ)
        if typ == "cgroup":
            return self._mount_cgroup(target, flags)
        if is_bind:
            src = source if os.path.isabs(source) else os.path.join(self.spec.get("_bundle", ""), source)
            if not os.path.exists(src):
                raise RootfsError(f"bind mount source {src} does not exist")
            _make_target(target, os.path.isdir(src))
        else:
            _make_target(target, True)
        with _CheckedPath(self.rootfs, target) as at:
            if tree is not None:
                # the idmapped copy made before the user namespace (idmapped_trees), attached here
                try:
                    to_fd = int(at.rsplit("/", 1)[1])
                    self.sys.move_mount(
                        tree, "", to_fd, "", s.MOVE_MOUNT_F_EMPTY_PATH | s.MOVE_MOUNT_T_EMPTY_PATH
                    )
                finally:
                    os.close(tree)
            elif is_bind:
                self.sys.mount(src, at, None, s.MS_BIND | (flags & s.MS_REC))
            else:
                try:
                    self.sys.mount(source, at, typ, flags, data or None)
                except OSError as e:
                    if e.errno != errno.EPERM or typ not in ("sysfs", "mqueue"):
                        raise
                    # sysfs needs our own netns, mqueue our own ipc ns; without them runc binds the host's
                    self.sys.mount(
                        "/sys" if typ == "sysfs" else "/dev/mqueue", at, None, s.MS_BIND | s.MS_REC
                    )
                    is_bind = True
        # the fd above still names the covered directory; the new mount is reached by opening again
        with _CheckedPath(self.rootfs, target) as at:
            if is_bind and flags & ~(s.MS_BIND | s.MS_REC):
                # a bind mount ignores other flags; they take a remount (MS_BIND keeps it per-mount)
                self._remount(at, flags & ~s.MS_REC | s.MS_BIND)
            for p in propagation:
                self.sys.mount(None, at, None, p)
            attr_set, attr_clr = mountopts.recursive(options)
            if is_bind and flags & s.MS_REC and flags & s.MS_RDONLY:
                # "rbind,ro" means the whole tree: a host mount under it (the host's /sys/fs/cgroup under
                # a /sys bind, `spec --rootless`) must not stay writable (CVE-2023-25809)
                attr_set |= s.MOUNT_ATTR_RDONLY
            if attr_set or attr_clr:
                # rro, rnosuid, ...: the whole tree under the mount at once (mount_setattr(2), Linux 5.12)
                self.sys.mount_setattr(s.AT_FDCWD, at, s.AT_RECURSIVE, attr_set, attr_clr)

    def _check_proc_destination(self, dest: str, target: str, typ: str) -> None:
        """Only proc on /proc, and inside /proc only lxcfs's files (runc's checkProcMount): a mount that
        covers /proc/self/attr would swallow the LSM profile written there (CVE-2019-16884)."""
        proc = os.path.join(self.rootfs, "proc")
        if not _within(proc, target):
            return
        inside = "/proc" + target[len(proc) :]
        if inside == "/proc":
            if typ == "proc":
                return
            raise RootfsError(f"mount destination {dest}: only a proc filesystem may be mounted on /proc")
        if inside not in LXCFS_PROC_FILES:
            raise RootfsError(
                f"mount destination {dest}: resolves to {inside}, inside /proc, which is refused"
            )

    def _remount(self, at: str, flags: int) -> None:
        """Remount keeping the locked flags the kernel insists on (nodev/nosuid/noexec set by a userns)."""
        try:
            self.sys.mount(None, at, None, s.MS_REMOUNT | flags)
        except OSError as e:
            if e.errno != errno.EPERM:
                raise
            st = os.statvfs(at)
            kept = 0
            for bit, flag in (
                (os.ST_NOSUID, s.MS_NOSUID),
                (os.ST_NODEV, s.MS_NODEV),
                (os.ST_NOEXEC, s.MS_NOEXEC),
            ):
                if st.f_flag & bit:
                    kept |= flag
            self.sys.mount(None, at, None, s.MS_REMOUNT | flags | kept)

    def _mount_cgroup(self, target: str, flags: int) -> None:
        """cgroup2 on a unified host; on v1, a tmpfs holding a bind of the container's cgroup a hierarchy."""
        _make_target(target, True)
        unified = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        # a hierarchy that is not the container's own (rootless without delegation, or no cgroupsPath)
        # is only ever shown read-only: writing there would reach the host's cgroups (CVE-2023-25809)
        owned = "" in self.cgroup_paths if unified else bool(self.cgroup_paths)
        # (a cgroup2 mounted fresh inside our cgroup namespace shows only our own subtree: no need there)
        if not owned and not (unified and "cgroup" in self.ns_types):
            flags |= s.MS_RDONLY
        with _CheckedPath(self.rootfs, target) as at:
            if unified and "cgroup" in self.ns_types:
                self.sys.mount("cgroup", at, "cgroup2", flags & ~s.MS_BIND)
                return
            if unified:
                self.sys.mount(self.cgroup_paths.get("", "/sys/fs/cgroup"), at, None, s.MS_BIND | s.MS_REC)
            else:
                self.sys.mount("tmpfs", at, "tmpfs", s.MS_NOSUID | s.MS_NODEV | s.MS_NOEXEC, "mode=755")
        if not unified:
            for name in sorted(os.listdir("/sys/fs/cgroup")):
                host_dir = self.cgroup_paths.get(name) or os.path.join("/sys/fs/cgroup", name)
                if name == "unified" or not os.path.isdir(host_dir):
                    continue
                sub = os.path.join(target, name)
                os.mkdir(sub)
                self.sys.mount(host_dir, sub, None, s.MS_BIND | s.MS_REC)
                ro = s.MS_RDONLY if name not in self.cgroup_paths else flags & s.MS_RDONLY  # CVE-2023-25809
                self._remount(sub, ro | s.MS_BIND | s.MS_NOSUID | s.MS_NODEV | s.MS_NOEXEC)
        if unified or flags & s.MS_RDONLY:
            with _CheckedPath(self.rootfs, target) as at:
                # MS_BIND: the mount's own flags (what mountinfo shows), for the v1 tmpfs as for a bind
                self._remount(at, (flags & s.MS_RDONLY) | s.MS_BIND | s.MS_NOSUID | s.MS_NODEV | s.MS_NOEXEC)

    def create_devices(self) -> None:
        devices = list(DEFAULT_DEVICES)
        seen = {d["path"] for d in devices}
        for d in self.linux.get("devices") or []:
            if d["path"] in seen:
                devices = [x for x in devices if x["path"] != d["path"]]
            devices.append(d)
        for d in devices:
            self._device(d)
        dev = os.path.join(self.rootfs, "dev")
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                             ("stderr", "/proc/self/fd/2")):  # fmt: skip
            p = os.path.join(dev, name)
            if not os.path.lexists(p):
                os.symlink(target, p)
        if os.path.exists("/proc/kcore") and not os.path.lexists(os.path.join(dev, "core")):
            os.symlink("/proc/kcore", os.path.join(dev, "core"))
        ptmx = os.path.join(dev, "ptmx")
        if os.path.isdir(os.path.join(dev, "pts")):
            if os.path.lexists(ptmx):
                os.unlink(ptmx)
            os.symlink("pts/ptmx", ptmx)

    def _device(self, d: dict[str, Any]) -> None:
        path = secure_join(self.rootfs, d["path"])
        if not _within(os.path.join(self.rootfs, "dev"), path):
            raise RootfsError(f"device {d['path']} resolves outside the container's /dev")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[d["type"]]
        mode = d.get("fileMode", 0o666) & 0o7777
        rdev = os.makedev(d.get("major", 0), d.get("minor", 0))
        if os.path.lexists(path):
            os.unlink(path)
        if self.in_userns and kind != stat.S_IFIFO:
            # mknod is not allowed in a user namespace: bind the host's node instead (as runc does)
            _make_target(path, False)
            fd = _open_checked(self.rootfs, path)
            try:
                self.sys.mount(d["path"], f"/proc/self/fd/{fd}", None, s.MS_BIND)
            finally:
                os.close(fd)
            return
        os.mknod(path, kind | mode, rdev)
        os.chmod(path, mode)  # mknod is subject to umask
        os.chown(path, d.get("uid", 0), d.get("gid", 0))

    # -- pivot and after ----------------------------------------------------------------------
    def pivot(self, no_pivot: bool) -> None:
        if no_pivot:
            # --no-pivot (ramdisk roots, where pivot_root is impossible): move the root over / and chroot
            os.chdir(self.rootfs)
            self.sys.mount(self.rootfs, "/", None, s.MS_MOVE)
            os.chroot(".")
            os.chdir("/")
            return
        old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        new = os.open(self.rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchdir(new)
            # pivot_root(".", ".") stacks the old root on top of the new one; no put_old dir needed
            self.sys.pivot_root(".", ".")
            os.fchdir(old)
            # make the old root a slave so unmounting it does not propagate to the host
            self.sys.mount(None, ".", None, s.MS_SLAVE | s.MS_REC)
            self.sys.umount2(".", s.MNT_DETACH)
            os.chdir("/")
        finally:
            os.close(old)
            os.close(new)

    def finish(self) -> None:
        # sysctls first: readonlyPaths usually include /proc/sys
        self.write_sysctls()
        for p in self.linux.get("maskedPaths") or []:
            self._mask(p)
        for p in self.linux.get("readonlyPaths") or []:
            self._readonly(p)
        if (self.spec.get("root") or {}).get("readonly"):
            self._remount("/", s.MS_BIND | s.MS_RDONLY)

    def write_sysctls(self) -> None:
        for key, value in (self.linux.get("sysctl") or {}).items():
            path = "/proc/sys/" + key.replace(".", "/")
            try:
                with open(path, "w") as f:
                    f.write(value)
            except OSError as e:
                raise RootfsError(f"sysctl {key}={value}: {e.strerror}") from e

    def _mask(self, path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            return  # masking through a symlink could hide a host path; a symlink in /proc is not data
        if stat.S_ISDIR(st.st_mode):
            self.sys.mount("tmpfs", path, "tmpfs", s.MS_RDONLY, None)
        else:
            self.sys.mount("/dev/null", path, None, s.MS_BIND)

    def _readonly(self, path: str) -> None:
        if not os.path.exists(path) or os.path.islink(path):
            return
        self.sys.mount(path, path, None, s.MS_BIND | s.MS_REC)
        self._remount(path, s.MS_BIND | s.MS_RDONLY | s.MS_REC)
