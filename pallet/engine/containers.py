"""Containers: create, start, stop, kill, remove and the rest, as dockerd does them, without a daemon.

Layout: ``<root>/engine/containers.db`` (records), ``<root>/containers/<id>/`` (config.json, hostname,
hosts, resolv.conf, monitor.json, the json log, and ``rootfs`` where the snapshot is mounted while the
container runs), ``<runroot>/c/<short id>/`` (attach socket; short, for sun_path's 108 bytes), and the
runtime's own state under ``<runroot>/runtime`` (``runtime-<name>`` for runc, crun or a path).

Crash safety: a record is written first with ``Incomplete`` set and cleared only when the snapshot,
files and volumes exist; removal marks ``removing`` first and deletes the record last. Every cleanup
step is idempotent, so a ``rm`` after any crash finishes the job; ``ps -a`` shows such leftovers as
``dead``. A monitor that died while its container ran is found by its pid and reported the same way.
"""

from __future__ import annotations

import json
import marshal
import os
import shutil
import signal
import sys
from pathlib import Path

from pallet.engine import attach, spec
from pallet.engine.network import BASE_HOSTS, has_sandbox
from pallet.engine.store import ContainerStore, Record
from pallet.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound, PalletError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any

_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_ADJ = ["brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry", "nifty"]
_NOUN = ["turing", "hopper", "lovelace", "ritchie", "thompson", "knuth", "dijkstra", "liskov", "torvalds"]
RUNTIMES = {"runc": "runc", "crun": "crun"}


class StartError(PalletError):
    """The container's command could not be started: carries docker's exit code (125/126/127)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


def now_rfc3339() -> str:
    from pallet.engine.monitor.logs import timestamp

    return timestamp()


def _atomic_write(path: Path, data: str | bytes, durable: bool = True) -> None:
    """temp + (fsync) + rename; ``durable=False`` for files made again at every start (config.json,
    monitor.cfg), where a crash can cost nothing that the next start does not rewrite."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _alive(pid: int, cid: str) -> bool:
    """Is ``pid`` still the monitor of ``cid`` (its cmdline names the container's directory)?"""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return cid.encode() in f.read()
    except OSError:
        return False


class Engine:
    def __init__(self, root: Path, runroot: Path, storage_driver: str | None = None) -> None:
        self.root = Path(root)
        self.runroot = Path(runroot)
        self.storage_driver = storage_driver
        self.store = ContainerStore(self.root / "engine" / "containers.db")
        self._images: Any = None
        self._networks: Any = None

    @property
    def networks(self) -> Any:
        if self._networks is None:
            from pallet.engine.network.manager import Networks

            self._networks = Networks(self.root, self.runroot)
        return self._networks

    @property
    def images(self) -> Any:
        if self._images is None:
            from pallet.image.images import Images

            self._images = Images(self.root, self.storage_driver)
        return self._images

    def event(self, action: str, rec: Record, **extra: str) -> None:
        from pallet.engine import events

        attrs = {"image": str(rec.config.get("Config", {}).get("Image", "")), "name": rec.name} | extra
        events.emit(self.root, action, rec.id, attrs)

    def close(self) -> None:
        self.store.close()
        if self._images is not None:
            self._images.close()
        if self._networks is not None:
            self._networks.close()

    # -- paths ---------------------------------------------------------------------------------
    def cdir(self, cid: str) -> Path:
        return self.root / "containers" / cid

    def rdir(self, cid: str) -> Path:
        return self.runroot / "c" / cid[:12]

    def sock(self, cid: str) -> str:
        return str(self.rdir(cid) / "attach")

    def runtime_cmd(self, rec: Record) -> list[str]:
        name = rec.config["HostConfig"].get("Runtime") or "pallet-runtime"
        if name == "pallet-runtime":
            exe = Path(sys.executable).parent / "pallet-runtime"
            cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pallet.cli.runtime"]
            return [*cmd, "--root", str(self.runroot / "runtime")]
        path = shutil.which(RUNTIMES.get(name, name))
        if path is None:
            raise InvalidArgument(f"unknown or invalid runtime name: {name}")
        tag = Path(path).name
        return [path, "--root", str(self.runroot / f"runtime-{tag}")]

    def inproc_root(self, rec: Record) -> str | None:
        """pallet-runtime's --root when its verbs may run in-process (the default runtime), else None."""
        name = rec.config["HostConfig"].get("Runtime") or "pallet-runtime"
        return str(self.runroot / "runtime") if name == "pallet-runtime" else None

    # -- lookups -------------------------------------------------------------------------------
    def get(self, ref: str) -> Record:
        rec = self.store.get(ref)
        return self.refresh(rec)

    def refresh(self, rec: Record) -> Record:
        """Reconcile a record with reality: a dead monitor under a running container, a crashed create."""
        st = rec.state
        if st.get("Status") in ("running", "paused", "restarting") and not _alive(
            st.get("MonitorPid", 0), rec.id
        ):
            # a monitor that started the container always records its pid; none alive means it died
            st = self.store.update_state(
                rec.id,
                lambda s: s.update(
                    Status="dead", Running=False, Paused=False, Restarting=False, Dead=True,
                    Error="the container's monitor died; its exit code is lost",
                ),
            )  # fmt: skip
            rec.state = st
        return rec

    def status(self, rec: Record) -> str:
        if rec.state.get("Incomplete") or rec.state.get("Status") == "removing":
            return "dead"
        return rec.status

    def all(self) -> list[Record]:
        return [self.refresh(r) for r in self.store.all()]

    # -- create --------------------------------------------------------------------------------
    def _name(self, name: str | None) -> str:
        if name:
            name = name.lstrip("/")
            # docker's rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+ (two characters at least)
            if len(name) < 2 or name[0] in "_.-" or set(name) - _NAME_OK:
                raise InvalidArgument(
                    f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                )
            return name
        pick = int.from_bytes(os.urandom(4))  # secrets would import hmac and OpenSSL: ~3 ms of every start
        return f"{_ADJ[pick % len(_ADJ)]}_{_NOUN[pick // len(_ADJ) % len(_NOUN)]}_{os.urandom(2).hex()}"

    def create(
        self, config: dict[str, Any], host: dict[str, Any], name: str | None, cid: str | None = None
    ) -> Record:
        """docker create: a record, a writable snapshot of the image and the files the container mounts.
        ``cid``: the ID a prelaunch chose."""
        ref = config["Image"]
        try:
            image = self.images.get(ref)
        except NotFound:
            raise NotFound(f"No such image: {ref}") from None
        icfg = dict(image.config.config or {})
        cfg = merge_config(icfg, config)
        cfg["Image"] = ref
        cid = cid or os.urandom(32).hex()
        cfg["Hostname"] = config.get("Hostname") or cid[:12]
        if host.get("Runtime"):
            self.runtime_cmd(Record(cid, "", 0, {"HostConfig": host}, {}))  # unknown runtime: fail now
        full = {
            "Config": cfg,
            "HostConfig": host,
            "Image": str(image.id),
            "Driver": self.images.snapshotter_name,
            "NetworkSandbox": has_sandbox(host),  # records made before it have one: default True
        }
        rec = self.store.add(cid, self._name(name), full, {"Status": "created", "Incomplete": True})
        try:
            d = self.cdir(cid)
            d.mkdir(parents=True)
            (d / "rootfs").mkdir()
            if full["NetworkSandbox"]:  # the network manager keeps hosts and resolv.conf from here on
                _etc_files(d, cfg, host, durable=True)
            self.images.prepare(cid, image)
            mounts = self._volumes(cid, cfg, host)
            if full["NetworkSandbox"]:
                self.networks.attach(cid, rec.name, d, cfg, host)
            self.store.update_config(
                cid, lambda c: c.update(Mounts=mounts), lambda s: s.pop("Incomplete", None)
            )
        except BaseException:
            self._cleanup(cid)
            raise
        rec = self.store.get(rec.id)
        self.event("create", rec)
        return rec

    def _volumes(self, cid: str, cfg: dict[str, Any], host: dict[str, Any]) -> list[dict[str, Any]]:
        """docker's Mounts from -v, --mount, --volumes-from and the image's VOLUME (pallet.engine.volumes)."""
        if not (host.get("Binds") or host.get("MountSpecs") or host.get("VolumesFrom") or cfg.get("Volumes")):
            return []  # what Volumes.mounts reads: nothing to mount, and volumes.py is not loaded
        from pallet.engine.volumes import Volumes

        others = []
        for ref in host.get("VolumesFrom") or []:
            name, _, mode = ref.partition(":")
            others.append({"Mounts": self.get(name).config.get("Mounts") or [], "Mode": mode})
        return Volumes(self.root).mounts(cfg, host, others)

    # -- start ---------------------------------------------------------------------------------
    def _ns_pids(self, host: dict[str, Any]) -> dict[str, int]:
        out = {}
        for key in ("PidMode", "IpcMode", "UTSMode"):
            mode = host.get(key) or ""
            if mode.startswith("container:"):
                other = self.get(mode.split(":", 1)[1])
                if other.status != "running":
                    raise FailedPrecondition(f"cannot join container {other.name}: it is not running")
                out[mode] = int(other.state.get("Pid", 0))
        return out

    def _sandbox(self, host: dict[str, Any], rec: Record) -> str:
        """The network namespace to join: ours, or with --network container:NAME that container's."""
        if not rec.config.get("NetworkSandbox", True):
            return ""
        mode = host.get("NetworkMode") or ""
        if not mode.startswith("container:"):
            return str(self.networks.ensure(rec.id))
        other = self.get(mode.split(":", 1)[1])
        if other.status != "running":
            raise FailedPrecondition(f"cannot join the network of container {other.name}: it is not running")
        return str(self.networks.sandbox_key(other.id) or f"/proc/{other.state.get('Pid', 0)}/ns/net")

    def _mount_rootfs(self, rec: Record) -> Path:
        from pallet.image.mount import is_mountpoint, mount_all, volatile

        target = self.cdir(rec.id) / "rootfs"
        if not is_mountpoint(target):
            mounts = self.images.snapshots.mounts(rec.id)
            if (rec.config.get("HostConfig") or {}).get("AutoRemove"):
                mounts = volatile(mounts)  # --rm: nothing it writes is kept, so nothing to sync
            mount_all(mounts, target)
        return target

    def _unmount_rootfs(self, cid: str) -> None:
        from pallet.image.mount import unmount_all

        target = self.cdir(cid) / "rootfs"
        if target.exists():
            unmount_all(target)

    def start(self, ref: str, attach_wait: bool = False, launch: Any = None) -> tuple[Record, int]:
        """Start a created or exited container under a new monitor; returns the record and, with
        ``attach_wait``, the open sync pipe (the monitor starts the process once someone attaches).
        ``launch``: its monitor, started by ``prelaunch`` (this takes it over, and aborts it on an error)."""
        try:
            rec = self.get(ref)
            st = self.status(rec)
            if st == "running" or st == "restarting":
                if launch is not None:
                    launch.abort()
                return rec, -1
            if st == "paused":
                raise Conflict("cannot start a paused container, try unpause instead")
            if st == "dead":
                raise FailedPrecondition(
                    f"container {rec.name}: cannot start: it is dead (remove it with rm -f)"
                )
            if rec.state.get("HasBeenManuallyStopped"):  # docker's flag for unless-stopped (engine.restore)
                self.store.update_state(rec.id, lambda s: s.pop("HasBeenManuallyStopped", None))
            cfg, host = rec.config["Config"], rec.config["HostConfig"]
            d, rdir = self.cdir(rec.id), self.rdir(rec.id)
            rdir.mkdir(parents=True, exist_ok=True)
            # the monitor-to-be first, its container's init starting while we make the bundle (launch.py)
            if launch is None:
                launch = self._launch(rec.id, cfg, host, early_only=True)
            rootfs = self._mount_rootfs(rec)
        except BaseException:
            if launch is not None:
                launch.abort()
            raise
        try:
            if rec.config.get("Mounts"):
                from pallet.engine.volumes import copy_up

                copy_up(rootfs, rec.config["Mounts"])
            if not rec.config.get("NetworkSandbox", True):
                _etc_files(d, cfg, host, durable=False)
            host_with_mounts = host | {
                "Mounts": rec.config.get("Mounts") or [],
                "SandboxKey": self._sandbox(host, rec),
            }
            oci = spec.generate(
                rec.id, cfg | {"Name": rec.name}, host_with_mounts, rootfs, d, self._ns_pids(host)
            )
            # compact: json's C encoder does not indent; indent=1 encodes in Python (0.25 ms against 0.04)
            _atomic_write(d / "config.json", json.dumps(oci), durable=False)
            log_opts = host.get("LogConfig", {}).get("Config", {})
            mcfg = {
                "id": rec.id,
                "db": str(self.root / "engine" / "containers.db"),
                "root": str(self.root),
                "runroot": str(self.runroot),
                "storage_driver": self.storage_driver,
                "bundle": str(d),
                "rootfs": str(rootfs),
                "runtime": self.runtime_cmd(rec),
                "runtime_root": self.inproc_root(rec),
                "runtime_log": str(rdir / "runtime.log"),
                "pid_file": str(rdir / "init.pid"),
                "sock": self.sock(rec.id),
                "console_sock": str(rdir / "console"),
                "log": str(d / f"{rec.id}-json.log"),
                "max_size": parse_size(log_opts.get("max-size", "10m"), "--log-opt max-size"),
                "max_file": int(log_opts.get("max-file", "3")),
                "tty": bool(cfg.get("Tty")),
                "stdin": bool(cfg.get("OpenStdin")),
                "attach_wait": attach_wait,
                "restart": host.get("RestartPolicy") or {"Name": "no"},
                "restart_count": 0,
                "health": _health(cfg.get("Healthcheck")),
                "network": host.get("NetworkMode") or "none",
                "auto_remove": bool(host.get("AutoRemove")),
                "events": str(self.root / "engine" / "events.jsonl"),
                "name": rec.name,
                "image": str(cfg.get("Image", "")),
            }
            _atomic_write(d / "monitor.cfg", marshal.dumps(mcfg), durable=False)
            sync = launch.go() if launch is not None else self._spawn_monitor(rec, d, rdir)
            launch = None
            line = _readline(sync)
            if not line.startswith("created "):
                os.close(sync)
                self._start_failed(rec, line)
            if not attach_wait:
                line = _readline(sync)
                os.close(sync)
                if line != "started":
                    self._start_failed(rec, line)
                sync = -1
        except BaseException:
            if launch is not None:
                launch.abort()
            if not _alive(self.store.get(rec.id).state.get("MonitorPid", 0), rec.id):
                self._unmount_rootfs(rec.id)
            raise
        return self.store.get(rec.id), sync

    def _start_failed(self, rec: Record, line: str) -> None:
        _, _, rest = line.partition(" ")
        code, _, msg = rest.partition(" ")
        if not line:
            msg, code = "the container's monitor exited without a word", "125"
        self._unmount_rootfs(rec.id)
        raise StartError(f"failed to create task for container {rec.id[:12]}: {msg}", int(code or 125))

    def finish_start(self, rec: Record, sync: int) -> None:
        """After attaching (``start(attach_wait=True)``): did the process start?"""
        line = _readline(sync)
        os.close(sync)
        if line != "started":
            self._start_failed(rec, line)

    def _spawn_monitor(self, rec: Record, d: Path, rdir: Path) -> int:
        """The monitor, once the bundle and its config are written, where no Launch was made first: a
        running monitor under our runroot forks it (monitor/sibling.py: the monitors share their
        pages), else a Launch execs one. Returns the read end of its sync pipe."""
        from pallet.engine.monitor import sibling

        cfg_path, errors = str(d / "monitor.cfg"), str(rdir / "monitor.err")
        r, w = os.pipe()
        if sibling.request(str(self.runroot), cfg_path, errors, w):  # forked by a running monitor
            os.close(w)
            return r
        os.close(r)
        os.close(w)
        launch = self._launch(rec.id, rec.config["Config"], rec.config["HostConfig"], early_only=False)
        assert launch is not None
        return int(launch.go())

    def prelaunch(self, config: dict[str, Any], host: dict[str, Any]) -> tuple[str, Any] | None:
        """For ``run``: an ID for the container to be created (``create(cid=)``) and its monitor already
        launched (``start(launch=)``), so that the monitor's and the init's interpreters start while the
        container is made (~10 ms sooner than at start); ``drop`` it if create fails. Only where the
        launch runs an Early (below) and no monitor runs under our runroot: a sibling is asked at start.
        None otherwise."""
        from pallet.engine.monitor import sibling

        if not self._early_eligible(config, host) or sibling.running(str(self.runroot)):
            return None
        cid = os.urandom(32).hex()
        self.rdir(cid).mkdir(parents=True, exist_ok=True)
        try:
            return cid, self._launch(cid, config, host, early_only=True, ask_sibling=False)
        except BaseException:
            shutil.rmtree(self.rdir(cid), ignore_errors=True)
            raise

    def drop(self, pre: tuple[str, Any]) -> None:
        """A prelaunch whose container was not made: its monitor and init go, and its run directory."""
        cid, launch = pre
        launch.abort()
        shutil.rmtree(self.rdir(cid), ignore_errors=True)

    def _early_eligible(self, config: dict[str, Any], host: dict[str, Any]) -> bool:
        """inproc.Early applies: pallet-runtime in-process, no tty, a single-threaded process (never
        fork the API service)."""
        threading = sys.modules.get("threading")
        single = threading is None or threading.active_count() == 1
        return (
            single and (host.get("Runtime") or "pallet-runtime") == "pallet-runtime" and not config.get("Tty")
        )

    def _launch(
        self,
        cid: str,
        config: dict[str, Any],
        host: dict[str, Any],
        *,
        early_only: bool,
        ask_sibling: bool = True,
    ) -> Any:
        """What starts the monitor of ``cid``, with an inproc.Early where it applies (_early_eligible): a
        sibling asked early where a monitor runs under our runroot (sibling.request_early), else a
        monitor/launch.Launch. ``early_only``: None where there is no Early (the sibling, if any, is
        asked once the bundle is written: _spawn_monitor)."""
        from pallet.engine.monitor import sibling
        from pallet.engine.monitor.inproc import Early
        from pallet.engine.monitor.launch import Launch

        eligible = self._early_eligible(config, host)
        if early_only and not eligible:
            return None
        cfg_path, rdir = str(self.cdir(cid) / "monitor.cfg"), self.rdir(cid)
        errors = str(rdir / "monitor.err")
        early_cfg: dict[str, object] = {
            "id": cid,
            "db": str(self.root / "engine" / "containers.db"),
            "bundle": str(self.cdir(cid)),
            "runtime_root": str(self.runroot / "runtime"),
            "runtime_log": str(rdir / "runtime.log"),
            "pid_file": str(rdir / "init.pid"),
            "stdin": bool(config.get("OpenStdin")),
        }
        if early_only and ask_sibling and sibling.running(str(self.runroot)):
            asked = sibling.request_early(str(self.runroot), cfg_path, errors, early_cfg)
            if asked is not None:
                return asked
        early = Early(early_cfg) if eligible else None
        return Launch(cfg_path, errors, early)

    # -- stop, kill, wait ------------------------------------------------------------------------
    def stop(self, ref: str, timeout: float | None = None, sig: str | None = None) -> Record:
        rec = self.get(ref)
        if self.status(rec) not in ("running", "restarting", "paused"):
            return rec
        self.store.update_state(rec.id, lambda s: s.update(HasBeenManuallyStopped=True))
        if self.status(rec) == "paused":
            self._runtime(rec, "resume", rec.id)
        signum = spec.parse_signal(sig or rec.config["Config"].get("StopSignal") or "SIGTERM")
        t = timeout if timeout is not None else rec.config["HostConfig"].get("StopTimeout") or 10
        s = attach.connect(self.sock(rec.id), attach.stop_request(signum, float(t)))
        with s:
            attach.wait_exit(s)
        return self.get(rec.id)

    def kill(self, ref: str, sig: str = "SIGKILL") -> Record:
        rec = self.get(ref)
        if self.status(rec) not in ("running", "paused", "restarting"):
            raise Conflict(f"Cannot kill container: {ref}: container {rec.id} is not running")
        signum = spec.parse_signal(sig)
        self.store.update_state(rec.id, lambda s: s.update(HasBeenManuallyStopped=True))  # as docker's
        with attach.connect(self.sock(rec.id), b"k%d" % signum) as s:
            s.settimeout(5)
            try:
                s.recv(16)  # the monitor closes once the signal is sent
            except OSError:
                pass
        self.event("kill", rec, signal=str(signum))
        return rec

    def wait(self, ref: str) -> int:
        rec = self.get(ref)
        if self.status(rec) in ("running", "restarting", "paused"):
            try:
                with attach.connect(self.sock(rec.id), b"w") as s:
                    code = attach.wait_exit(s)
            except FailedPrecondition:
                # its monitor went between our look at the record and the connect: it records the
                # exit before it closes its socket, so the record tells, unless the monitor died
                code = None
                rec = self.get(rec.id)
                if self.status(rec) in ("running", "restarting", "paused"):
                    raise
            if code is not None:
                return code
            rec = self.get(rec.id)
        return int(rec.state.get("ExitCode", 0))

    # -- remove --------------------------------------------------------------------------------
    def remove(self, ref: str, force: bool = False, volumes: bool = False, exited: bool = False) -> Record:
        """docker rm; ``exited``: the caller saw the container exit (its monitor, or the CLI of a
        foreground ``run --rm``), so whatever the record still says, there is nothing to stop (and
        no dead monitor to record first: the record is marked removing at once)."""
        rec = self.store.get(ref) if exited else self.get(ref)
        st = self.status(rec)
        if st in ("running", "paused", "restarting") and not exited:
            if not force:
                verb = "running" if st != "paused" else "paused"
                raise Conflict(
                    f'cannot remove container "/{rec.name}": container is {verb}: '
                    "stop the container before removing or force remove"
                )
            if st == "paused":
                self._runtime(rec, "resume", rec.id, check=False)
            try:
                with attach.connect(self.sock(rec.id), attach.stop_request(signal.SIGKILL, 10)) as s:
                    attach.wait_exit(s, timeout=30)
            except (PalletError, OSError):
                pass
        self.store.update_state(rec.id, lambda s: s.update(Status="removing"))
        self._cleanup(rec.id, volumes, rec)
        self.event("destroy", rec)
        return rec

    def _cleanup(self, cid: str, volumes: bool = True, rec: Record | None = None) -> None:
        """Every step idempotent: the runtime's container, the mount, the snapshot, files, the record."""
        rec = rec or self.store.get(cid)
        runtime = self.runtime_cmd(rec) if rec.config.get("HostConfig") is not None else []
        # runc, crun and pallet-runtime keep a container's state in <root>/<id>: none, nothing to delete
        if runtime and os.path.isdir(os.path.join(runtime[runtime.index("--root") + 1], cid)):
            self._runtime(rec, "delete", "--force", cid, check=False)
        if not (rec.config.get("HostConfig") or {}).get("CgroupParent"):
            _release_default_cgroup_parent()
        self._unmount_rootfs(cid)
        if rec.config.get("NetworkSandbox", True):
            self.networks.detach(cid)
        try:
            self.images.snapshots.remove(cid)
        except NotFound:
            pass
        if volumes and rec.config.get("Mounts"):
            from pallet.engine.volumes import Volumes

            Volumes(self.root).release(cid, rec.config.get("Mounts") or [])
        shutil.rmtree(self.cdir(cid), ignore_errors=True)
        shutil.rmtree(self.rdir(cid), ignore_errors=True)
        self.store.delete(cid)

    # -- runtime verbs -------------------------------------------------------------------------
    def _runtime(self, rec: Record, *args: str, check: bool = True, capture: bool = True) -> str:
        root = self.inproc_root(rec)
        if root and args[0] in ("delete", "pause", "resume"):
            return self._runtime_inproc(rec, root, *args, check=check)
        import subprocess

        p = subprocess.run([*self.runtime_cmd(rec), *args], capture_output=capture, text=True)
        if check and p.returncode != 0:
            msg = (p.stderr or "").strip().splitlines()
            raise FailedPrecondition(
                f"container {rec.name}: {args[0]}: {msg[-1] if msg else 'runtime failed'}"
            )
        return p.stdout or ""

    def _runtime_inproc(self, rec: Record, root: str, verb: str, *args: str, check: bool) -> str:
        """pallet-runtime's verbs that neither fork nor print, called in-process (same --root, same
        error text as the binary's last stderr line)."""
        from pallet.runtime.container import Options, Runtime, describe

        rt = Runtime(Options(root=root))
        try:
            if verb == "delete":
                rt.delete(args[-1], force="--force" in args)
            elif verb == "pause":
                rt.pause(args[-1])
            else:
                rt.resume(args[-1])
        except (PalletError, OSError) as e:
            if check:
                raise FailedPrecondition(
                    f"container {rec.name}: {verb}: pallet-runtime: {describe(e)}"
                ) from e
        return ""

    def _running(self, ref: str) -> Record:
        rec = self.get(ref)
        st = self.status(rec)
        if st == "paused":
            raise Conflict(f"Container {rec.id} is paused, unpause the container before exec")
        if st != "running":
            raise Conflict(f"container {rec.id} is not running")
        return rec

    def pause(self, ref: str) -> Record:
        rec = self._running(ref)
        self._runtime(rec, "pause", rec.id)
        self.store.update_state(rec.id, lambda s: s.update(Status="paused", Paused=True))
        self.event("pause", rec)
        return rec

    def unpause(self, ref: str) -> Record:
        rec = self.get(ref)
        if self.status(rec) != "paused":
            raise Conflict(f"Container {rec.id} is not paused")
        self._runtime(rec, "resume", rec.id)
        self.store.update_state(rec.id, lambda s: s.update(Status="running", Paused=False))
        self.event("unpause", rec)
        return rec

    def top(self, ref: str) -> tuple[list[str], list[list[str]]]:
        """docker top: the host's ``ps -ef`` rows of the container's processes."""
        import subprocess

        rec = self._running(ref)
        out = self._runtime(rec, "ps", "--format", "json", rec.id)
        pids = {int(p) for p in json.loads(out or "[]")}
        lines = subprocess.run(["ps", "-ef"], capture_output=True, text=True, check=True).stdout.splitlines()
        header = lines[0].split()
        rows = []
        for line in lines[1:]:
            f = line.split(None, len(header) - 1)
            if int(f[1]) in pids:
                rows.append(f)
        return header, rows

    def stats(self, ref: str) -> dict[str, Any]:
        """The container's cgroup accounting, read by us whatever the runtime (crun has no
        ``events``), as containerd does: its cgroupsPath is absolute, so any process finds it."""
        from pallet.runtime.cgroups import CgroupError, open_manager

        rec = self._running(ref)
        linux = json.loads((self.cdir(rec.id) / "config.json").read_text()).get("linux") or {}
        try:
            mgr = open_manager(linux.get("cgroupsPath"), rec.id)
            if not mgr.exists():
                raise FailedPrecondition(f"container {rec.name}: stats: its cgroup is gone")
            return mgr.stats()
        except CgroupError as e:
            raise FailedPrecondition(f"container {rec.name}: stats: {e}") from e

    def update(self, ref: str, flags: list[str], host: dict[str, Any]) -> Record:
        rec = self.get(ref)
        if self.status(rec) in ("running", "paused"):
            self._runtime(rec, "update", *flags, rec.id)
        self.store.update_config(rec.id, lambda c: c["HostConfig"].update(host))
        return rec

    def rename(self, ref: str, name: str) -> None:
        rec = self.get(ref)
        new = self._name(name)
        if new == rec.name:
            raise InvalidArgument("Renaming a container with the same name as its current name")
        self.store.rename(rec.id, new)
        self.event("rename", rec, oldName="/" + rec.name, name=new)

    def exec_argv(self, rec: Record, args: list[str], opts: dict[str, Any]) -> list[str]:
        """The runtime's ``exec`` command line, up to (not including) the container id: the process
        goes to the runtime as a ``--process`` file, as containerd and podman pass it, built on the
        container's own process (docker's exec does the same), so the exec'd process gets the
        container's rlimits, capabilities, apparmor profile and no_new_privs from runc and crun too
        (their flags alone leave those out). The caller removes the file: ``exec_done(argv)``."""
        base = json.loads((self.cdir(rec.id) / "config.json").read_text()).get("process") or {}
        proc = dict(base, args=list(args), terminal=bool(opts.get("tty")))
        env = list(proc.get("env") or [])
        for e in opts.get("env") or []:
            key = e.split("=", 1)[0]
            env = [x for x in env if x.split("=", 1)[0] != key] + [e]
        proc["env"] = env
        if opts.get("workdir"):
            proc["cwd"] = opts["workdir"]
        if opts.get("user"):
            uid, gid, extra, _ = spec.resolve_user(self.cdir(rec.id) / "rootfs", opts["user"])
            proc["user"] = {"uid": uid, "gid": gid} | ({"additionalGids": extra} if extra else {})
        if opts.get("privileged"):
            caps = spec.host_caps()
            proc["capabilities"] = {s: caps for s in ("bounding", "effective", "permitted")}
            proc.pop("apparmorProfile", None)
        path = self.rdir(rec.id) / f"exec-{os.urandom(6).hex()}.json"
        _atomic_write(path, json.dumps(proc), durable=False)
        argv = [
            *self.runtime_cmd(rec),
            "--log",
            str(self.rdir(rec.id) / "exec.log"),
            "--log-format",
            "json",
            "exec",
            "--process",
            str(path),
        ]
        if opts.get("tty"):
            argv.append("-t")
        if opts.get("detach"):
            argv.append("-d")
        return argv

    def exec_done(self, argv: list[str]) -> None:
        """Remove the process file of an ``exec_argv`` once the runtime has exited (it read it first)."""
        try:
            os.unlink(argv[argv.index("--process") + 1])
        except (ValueError, OSError):
            pass

    # -- rootfs access -------------------------------------------------------------------------
    def rootfs(self, rec: Record) -> tuple[Path, bool]:
        """(the container's root, whether it was mounted for the caller, who must unmount it)."""
        target = self.cdir(rec.id) / "rootfs"
        from pallet.image.mount import is_mountpoint

        if is_mountpoint(target):
            return target, False
        self._mount_rootfs(rec)
        return target, True


def _readline(fd: int) -> str:
    """One line of the monitor's sync pipe. A byte at a time: its next line ("started" after
    "created N") may already be in the pipe, and must be left there for the next call (a chunked
    read swallowed it, and the CLI took a started container for one whose monitor died)."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        b = os.read(fd, 1)
        if not b:
            break
        buf += b
    return buf.decode(errors="replace").strip()


def _etc_files(d: Path, cfg: dict[str, Any], host: dict[str, Any], durable: bool) -> None:
    """hostname, hosts and resolv.conf, bind-mounted over the container's own. A container without
    network state gets them at every start, as docker writes them: made from its record, they need
    no fsync (a crash costs nothing that the next start does not write again)."""
    _atomic_write(d / "hostname", cfg["Hostname"] + "\n", durable)
    _atomic_write(d / "hosts", BASE_HOSTS, durable)
    _atomic_write(d / "resolv.conf", _resolv_conf(host.get("NetworkMode") or "none"), durable)


def _resolv_conf(network: str) -> str:
    if network == "host":
        try:
            return Path("/etc/resolv.conf").read_text()
        except OSError:
            return ""
    # --network none: no resolver reachable; docker writes the host's, minus localhost ones
    lines = []
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            if line.startswith("nameserver") and ("127." in line or "::1" in line):
                continue
            lines.append(line)
    except OSError:
        pass
    return "\n".join(lines) + "\n"


def _health(hc: dict[str, Any] | None) -> dict[str, Any] | None:
    if not hc or not hc.get("Test") or hc["Test"][0] == "NONE":
        return None
    ns = 1e9
    return {
        "test": hc["Test"],
        "interval": (hc.get("Interval") or 30 * ns) / ns,
        "timeout": (hc.get("Timeout") or 30 * ns) / ns,
        "retries": hc.get("Retries") or 3,
        "start_period": (hc.get("StartPeriod") or 0) / ns,
    }


def merge_config(image: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """docker's merge of the image's config under the user's: env by key, an entrypoint given by the
    user drops the image's Cmd, labels and volumes are unions."""
    cfg = dict(image)
    env = list(image.get("Env") or [])
    for e in user.get("Env") or []:
        key = e.split("=", 1)[0]
        env = [x for x in env if x.split("=", 1)[0] != key] + [e]
    cfg["Env"] = env
    if user.get("Entrypoint") is not None:
        cfg["Entrypoint"] = user["Entrypoint"] or None
        cfg["Cmd"] = user.get("Cmd") or None
    elif user.get("Cmd"):
        cfg["Cmd"] = user["Cmd"]
    for key in (
        "WorkingDir",
        "User",
        "StopSignal",
        "Tty",
        "OpenStdin",
        "AttachStdin",
        "Healthcheck",
        "Hostname",
    ):
        if user.get(key):
            cfg[key] = user[key]
    cfg["Labels"] = (image.get("Labels") or {}) | (user.get("Labels") or {})
    cfg["Volumes"] = (image.get("Volumes") or {}) | (user.get("Volumes") or {})
    return cfg


_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str, flag: str) -> int:
    """docker's RAMInBytes: a number with an optional b/k/m/g/t (binary) suffix, ``kb`` etc. too."""
    t = str(text).strip().lower()
    num = t.rstrip("bkmgt")
    unit = t[len(num) :]
    if unit.endswith("b") and len(unit) == 2:
        unit = unit[0]
    try:
        value = float(num)
        if unit not in _UNITS or value < 0:
            raise ValueError
    except ValueError:
        raise InvalidArgument(
            f'invalid argument "{text}" for "{flag}" flag: invalid size: \'{text}\''
        ) from None
    return int(value * _UNITS[unit])


def _release_default_cgroup_parent() -> None:
    """The runtime removes a container's own cgroup; the engine's /pallet parent goes with the last one
    (rmdir fails harmlessly while another container still has a cgroup below it)."""
    root = "/sys/fs/cgroup"
    try:
        names = os.listdir(root)
    except OSError:
        return
    for d in [os.path.join(root, n, "pallet") for n in sorted(names)] + [os.path.join(root, "pallet")]:
        try:
            os.rmdir(d)
        except OSError:
            pass
