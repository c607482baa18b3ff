"""Container lifecycle for pallet-runtime: create, start, run, exec, kill, delete, pause, resume.

The state machine (runtime-spec "Lifecycle"):

    creating -> created -> running <-> paused
                   \\          \\
                    +-> stopped <-+

A wrong transition is refused with one error naming the container and both states.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal

from pallet.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound, PalletError
from pallet.oci import runtime_spec
from pallet.runtime import caps, hooks, launcher, sync
from pallet.runtime.state import (
    CREATED,
    CREATING,
    PAUSED,
    RUNNING,
    STOPPED,
    State,
    StateDir,
    now_rfc3339,
    proc_start_time,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # the runtime's start-up is on every container's path: annotations only
    import _socket
    from typing import Any

# which operations each status allows (youki's can_start/can_kill/...)
ALLOWED = {
    "start": {CREATED},
    "kill": {CREATED, RUNNING, PAUSED},
    "pause": {RUNNING},
    "resume": {PAUSED},
    "exec": {CREATED, RUNNING},
    "delete": {STOPPED, CREATED},
}


class InitFailed(PalletError):
    """The container's init reported an error (config it could not apply)."""


class Options:
    """Global flags of the runtime command line."""

    def __init__(self, root: str, systemd_cgroup: bool = False, debug: bool = False, log: Any = None) -> None:
        self.root = root
        self.systemd_cgroup = systemd_cgroup
        self.debug = debug
        self.log = log  # callable(level, msg)


class CreateRequest:
    """What `create` (and `run`) are asked to do."""

    def __init__(
        self,
        container_id: str,
        bundle: str,
        pid_file: str | None = None,
        console_socket: str | None = None,
        preserve_fds: int = 0,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
        foreground_console: bool = False,
    ) -> None:
        self.container_id = container_id
        self.bundle = bundle
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.preserve_fds = preserve_fds
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.foreground_console = foreground_console  # `run -t` without a console socket: we relay ourselves


class RuntimeLog:
    """runc's --log/--log-format: one record a line; containerd reads the last error from it."""

    def __init__(self, path: str | None, fmt: str = "json", debug: bool = False) -> None:
        self.path, self.fmt, self.debug = path, fmt, debug

    def __call__(self, level: str, msg: str) -> None:
        if level == "debug" and not self.debug:
            return
        if self.path:
            import time

            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            line = (
                json.dumps({"level": level, "msg": msg, "time": now})
                if self.fmt == "json"
                else f'time="{now}" level={level} msg="{msg}"'
            )
            try:
                with open(self.path, "a") as f:
                    f.write(line + "\n")
            except OSError:
                pass


def describe(e: PalletError | OSError) -> str:
    """The one line a failed verb reports, the same from the command line and in-process."""
    if isinstance(e, PalletError):
        return str(e)
    return f"{e.strerror or e}{' ' + str(e.filename) if e.filename else ''}"


def _refuse(op: str, cid: str, status: str) -> Conflict:
    return Conflict(f"container {cid!r}: cannot {op}: it is {status}")


def _write_pid_file(path: str, pid: int) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


class Runtime:
    def __init__(self, opts: Options) -> None:
        self.opts = opts

    # -- status -------------------------------------------------------------------------------
    def status(self, st: State, sd: StateDir) -> str:
        if st.status == CREATING and st.pid == 0:
            return CREATING
        start = proc_start_time(st.pid) if st.pid else None
        if start is None or start != st.pid_start:
            return STOPPED
        if os.path.exists(sd.fifo):
            return CREATED
        mgr = self._cgroup(st)
        if mgr is not None and mgr.exists() and mgr.frozen():
            return PAUSED
        return RUNNING

    def _cgroup(self, st: State) -> Any:
        if not st.cgroup_paths:
            return None  # rootless without a delegated cgroup, or not placed yet
        from pallet.runtime.cgroups import reopen_manager

        return reopen_manager(st.cgroup_paths, rootless=st.rootless)

    def load(self, cid: str) -> tuple[State, StateDir, str]:
        runtime_spec.validate_id(cid)
        sd = StateDir(self.opts.root, cid)
        st = sd.load()
        return st, sd, self.status(st, sd)

    def state(self, cid: str) -> dict[str, Any]:
        st, _sd, status = self.load(cid)
        return st.oci_state(status)

    # -- create -------------------------------------------------------------------------------
    def create(
        self, req: CreateRequest, *, subreaper: bool = False, init: tuple[int, _socket.socket] | None = None
    ) -> tuple[State, StateDir, int | None]:
        """Set up the container up to the point where its init waits for `start`.

        ``init``: an init started earlier, so that its interpreter started sooner (the engine's
        monitor/inproc.Early): (pid, socket) as launcher.spawn_init returns them, or (0, socket) for
        one forked by its monitor (init.fork_from), which tells its pid first. Not always our child.
        Returns the state, its directory, and the pty master fd when the caller relays the console.
        On any failure nothing is left behind: process, cgroup and state directory are removed.
        """
        bundle, spec, rootfs, namespaces = self._preflight(req)
        linux = spec.get("linux") or {}
        rootless = os.geteuid() != 0

        sd = StateDir(self.opts.root, req.container_id)
        sd.create()
        st = State(
            id=req.container_id,
            bundle=bundle,
            rootfs=rootfs,
            created=now_rfc3339(),
            owner=_owner_name(),
            annotations=spec.get("annotations") or {},
            cgroups_path=linux.get("cgroupsPath"),
            systemd_cgroup=self.opts.systemd_cgroup,
            rootless=rootless,
            config=spec,
        )
        mgr = None
        init_pid = 0
        stage1 = 0
        sock: _socket.socket | None = None
        try:
            sd.lock()
            if subreaper:
                from pallet.linux.syscalls import PR_SET_CHILD_SUBREAPER, default

                default().prctl(PR_SET_CHILD_SUBREAPER, 1)
            # the init's interpreter (~12 ms) starts first, while we write the state and make the cgroups
            stage1, sock = init or launcher.spawn_init(list(range(3, 3 + req.preserve_fds)), self.opts.root)
            if not stage1:  # forked by its monitor-to-be (init.fork_from): it says who it is first
                stage1 = _hello(sock, req.container_id)
            sd.save(st)
            os.mkfifo(sd.fifo, 0o600)
            # the init opens it as the container's root, which a user namespace maps to another host uid
            os.chown(sd.fifo, _host_id(linux.get("uidMappings"), 0), _host_id(linux.get("gidMappings"), 0))
            os.chmod(sd.fifo, 0o622)
            mgr = self._open_cgroup(st)
            placement: dict[str, Any] = {}
            if mgr is not None:
                mgr.apply(0)  # the directories, limits set before anything runs in them
                mgr.set(_cgroup_resources(linux))
                placement = _place(mgr, stage1, "user" in namespaces)
                st.cgroup_paths = dict(mgr.paths)
            hook_spec = spec.get("hooks") or {}
            boot = {
                "mode": "create",
                "spec": spec,
                "container_id": req.container_id,
                "bundle": bundle,
                "rootfs": rootfs,
                "fifo": sd.fifo,
                "namespaces": namespaces,
                "time_offsets": linux.get("timeOffsets"),
                "cgroup_paths": st.cgroup_paths,
                **placement,
                "preserve_fds": req.preserve_fds,
                "no_pivot": req.no_pivot,
                "new_keyring": not req.no_new_keyring,
                "create_container_hooks": hook_spec.get("createContainer") or [],
                "start_container_hooks": hook_spec.get("startContainer") or [],
                # the init stops for the hooks' turn (and the state they and a seccomp agent get)
                # only where there is one: a round trip less for most containers
                "sync_hooks": any(
                    hook_spec.get(k)
                    for k in ("prestart", "createRuntime", "createContainer", "startContainer")
                )
                or bool((linux.get("seccomp") or {}).get("listenerPath")),
            }
            sync.send(sock, boot)
            master: int | None = None
            while True:
                msg, fds = sync.recv(sock)
                if msg is None:
                    raise InitFailed(f"container {req.container_id!r}: init exited without a word")
                kind = msg["type"]
                if kind == "error":
                    raise InitFailed(f"container {req.container_id!r}: {msg['message']}")
                if kind == "userns":
                    self._map_user_ns(stage1, linux)
                    sync.send(sock, {"type": "userns-mapped"})
                elif kind == "pid":
                    init_pid = msg["pid"]
                    st.pid = init_pid
                    st.pid_start = proc_start_time(init_pid) or 0
                    sd.save(st)
                elif kind == "hooks":
                    state_json = st.oci_state(CREATING)
                    hooks.run_all(hook_spec.get("prestart") or [], state_json, "prestart")
                    hooks.run_all(hook_spec.get("createRuntime") or [], state_json, "createRuntime")
                    sync.send(
                        sock,
                        {"type": "hooks-done", "state": state_json, "state_json": json.dumps(state_json)},
                    )
                elif kind == "console":
                    master = fds[0]
                    if req.console_socket:
                        from pallet.runtime import terminal

                        try:
                            terminal.send_console(req.console_socket, master)
                        except OSError as e:
                            raise InvalidArgument(
                                f"--console-socket {req.console_socket}: {e.strerror}"
                            ) from None
                        os.close(master)
                        master = None
                elif kind == "ready":
                    break
            # stage 1 exits as soon as it has told the pid: by now it is gone (or all but), and the
            # init re-parented to our subreaper; not always our child (``init``): a pidfd tells its exit
            _wait_gone(stage1)
            stage1 = 0
            st.status = CREATED
            sd.save(st)
            if req.pid_file:
                _write_pid_file(req.pid_file, init_pid)
            return st, sd, master
        except BaseException as e:
            self._abort_create(sd, st, mgr, stage1, init_pid)
            if isinstance(e, hooks.HookError):
                raise InitFailed(f"container {req.container_id!r}: {e}") from None
            raise
        finally:
            if sock is not None:
                sock.close()
            sd.unlock()

    def _preflight(self, req: CreateRequest) -> tuple[str, dict[str, Any], str, dict[str, str]]:
        """Every check that needs no state: a bad config fails here, before anything exists.

        Returns the bundle, the spec, the rootfs path and the namespaces (type -> path, "" for new).
        """
        runtime_spec.validate_id(req.container_id)
        bundle = os.path.abspath(req.bundle)
        spec = runtime_spec.load(bundle)
        proc = spec.get("process")
        if proc is None:
            raise InvalidArgument("config.json: process: missing (the container's process)")
        rootfs = spec["root"]["path"]
        rootfs = os.path.normpath(rootfs if os.path.isabs(rootfs) else os.path.join(bundle, rootfs))
        if not os.path.isdir(rootfs):
            raise InvalidArgument(f"config.json: root.path: {rootfs}: no such directory")
        sets = caps.parse(proc.get("capabilities"))
        caps.check_grantable(sets, caps.host_bounding_set())
        _check_lsm(proc)
        if proc.get("terminal") and not req.console_socket and not req.foreground_console:
            raise InvalidArgument(
                "process.terminal is true but no --console-socket was given to receive the console"
            )
        if req.console_socket and not proc.get("terminal"):
            raise InvalidArgument("--console-socket was given but process.terminal is false")
        linux = spec.get("linux") or {}
        namespaces = {n["type"]: n.get("path") or "" for n in linux.get("namespaces") or []}
        for t, path in namespaces.items():
            if path and not os.path.exists(path):
                raise InvalidArgument(
                    f"config.json: linux.namespaces: {t} namespace path {path}: no such file"
                )
        if (
            "user" in namespaces
            and not namespaces["user"]
            and not (linux.get("uidMappings") and linux.get("gidMappings"))
        ):
            raise InvalidArgument(
                "config.json: linux.uidMappings and gidMappings are required with a new user namespace"
            )
        if self.opts.systemd_cgroup and not os.path.isdir("/run/systemd/system"):
            raise FailedPrecondition(
                "--systemd-cgroup: systemd is not running on this host (no /run/systemd/system); use the cgroupfs driver"
            )
        if os.geteuid() != 0 and "user" in namespaces and not namespaces["user"]:
            from pallet.runtime.userns import check_rootless_mappings

            check_rootless_mappings(linux)  # a map we may not write fails here, before anything exists
        if linux.get("resources") is not None or linux.get("devices"):
            from pallet.runtime.cgroups import validate_resources

            validate_resources(_cgroup_resources(linux))  # before anything exists: a bad value leaves nothing
        for fd in range(3, 3 + req.preserve_fds):
            try:
                os.fstat(fd)
            except OSError:
                raise InvalidArgument(f"--preserve-fds {req.preserve_fds}: fd {fd} is not open") from None
        return bundle, spec, rootfs, namespaces

    def _open_cgroup(self, st: State) -> Any:
        from pallet.runtime.cgroups import open_manager

        return open_manager(st.cgroups_path, st.id, systemd=st.systemd_cgroup, rootless=st.rootless)

    def _abort_create(self, sd: StateDir, st: State, mgr: Any, stage1: int, init_pid: int) -> None:
        for pid in (stage1, init_pid):
            if pid:
                _kill_and_reap(pid)
        if mgr is not None:
            try:
                mgr.destroy()
            except Exception:
                pass
        sd.remove()

    def _map_user_ns(self, pid: int, linux: dict[str, Any]) -> None:
        """Write the child's uid/gid maps: directly as root, with newuidmap/newgidmap otherwise."""
        for kind, key in (("uid", "uidMappings"), ("gid", "gidMappings")):
            maps = linux.get(key) or []
            lines = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)
            own = os.geteuid() if kind == "uid" else os.getegid()
            simple = len(maps) == 1 and maps[0]["hostID"] == own and maps[0]["size"] == 1
            if os.geteuid() == 0 or simple:
                if os.geteuid() != 0 and kind == "gid":
                    with open(f"/proc/{pid}/setgroups", "w") as f:
                        f.write("deny")
                try:
                    with open(f"/proc/{pid}/{kind}_map", "w") as f:
                        f.write(lines)
                except OSError as e:
                    raise InvalidArgument(
                        f"config.json: linux.{key}: cannot write {kind}_map: {e.strerror}"
                    ) from None
            else:
                import subprocess

                args = [f"new{kind}map", str(pid)] + [
                    str(v) for m in maps for v in (m["containerID"], m["hostID"], m["size"])
                ]
                r = subprocess.run(args, capture_output=True, text=True)
                if r.returncode != 0:
                    raise InvalidArgument(
                        f"config.json: linux.{key}: new{kind}map: {r.stderr.strip() or r.returncode}"
                    )

    # -- start --------------------------------------------------------------------------------
    def start(self, cid: str) -> State:
        st, sd, status = self.load(cid)
        if status not in ALLOWED["start"]:
            raise _refuse("start", cid, status)
        sd.lock()
        try:
            spec_hooks = st.config.get("hooks") or {}
            data = _release_init(sd.fifo, st.pid)
            os.unlink(sd.fifo)
            if not data:
                raise FailedPrecondition(f"container {cid!r}: cannot start: its init is gone")
            st.status = RUNNING
            sd.save(st)
            try:
                hooks.run_all(spec_hooks.get("poststart") or [], st.oci_state(RUNNING), "poststart")
            except hooks.HookError as e:
                self._log("warning", str(e))
            return st
        finally:
            sd.unlock()

    # -- signals ------------------------------------------------------------------------------
    def kill(self, cid: str, sig: int, all_processes: bool = False) -> None:
        st, sd, status = self.load(cid)
        if status not in ALLOWED["kill"]:
            raise _refuse("kill", cid, status)
        mgr = self._cgroup(st)
        if all_processes and mgr is not None and mgr.exists():
            mgr.kill_all(sig)
        else:
            _signal_verified(st, sig)
        if status == PAUSED and sig == signal.SIGKILL and mgr is not None:
            mgr.thaw()  # a frozen task cannot die on cgroup v1 until it is thawed

    def pause(self, cid: str) -> None:
        st, sd, status = self.load(cid)
        if status not in ALLOWED["pause"]:
            raise _refuse("pause", cid, status)
        mgr = self._cgroup(st)
        if mgr is None or not mgr.exists():
            raise FailedPrecondition(f"container {cid!r}: cannot pause: it has no cgroup")
        mgr.freeze()

    def resume(self, cid: str) -> None:
        st, sd, status = self.load(cid)
        if status not in ALLOWED["resume"]:
            raise _refuse("resume", cid, status)
        self._cgroup(st).thaw()

    # -- delete -------------------------------------------------------------------------------
    def delete(self, cid: str, force: bool = False) -> None:
        runtime_spec.validate_id(cid)
        sd = StateDir(self.opts.root, cid)
        try:
            st = sd.load()
        except NotFound:
            if not force:
                raise
            sd.remove()  # as runc: --force on an unknown id succeeds, clearing any stale directory
            return
        status = self.status(st, sd)
        if status not in ALLOWED["delete"] and not force:
            raise _refuse("delete", cid, status)
        sd.lock()
        try:
            mgr = self._cgroup(st)
            if status != STOPPED:
                if status == PAUSED and mgr is not None:
                    mgr.thaw()
                _signal_verified(st, signal.SIGKILL)
                _wait_gone(st.pid)
            if mgr is not None:
                mgr.destroy()  # also kills what is left in the cgroup (kill --all semantics)
            if status != CREATING:
                try:
                    hooks.run_all(
                        (st.config.get("hooks") or {}).get("poststop") or [],
                        st.oci_state(STOPPED),
                        "poststop",
                    )
                except hooks.HookError as e:
                    self._log("warning", str(e))
        finally:
            sd.unlock()
            sd.remove()

    # -- exec ---------------------------------------------------------------------------------
    def exec(
        self,
        cid: str,
        proc: dict[str, Any],
        *,
        console_socket: str | None,
        pid_file: str | None,
        preserve_fds: int,
        foreground: bool,
        relay_console: bool,
    ) -> tuple[int, int | None]:
        """Start proc inside the container; returns (pid, pty master if we relay)."""
        st, sd, status = self.load(cid)
        if status not in ALLOWED["exec"]:
            raise _refuse("exec", cid, status)
        runtime_spec._validate_process(proc, "process.")
        caps.check_grantable(caps.parse(proc.get("capabilities")), caps.host_bounding_set())
        _check_lsm(proc)
        if proc.get("terminal") and not console_socket and not relay_console:
            raise InvalidArgument(
                "exec: a terminal was requested but no --console-socket was given to receive it"
            )
        namespaces = [n["type"] for n in (st.config.get("linux") or {}).get("namespaces") or []]
        if foreground:
            from pallet.linux.syscalls import PR_SET_CHILD_SUBREAPER, default

            default().prctl(PR_SET_CHILD_SUBREAPER, 1)
        stage1, sock = launcher.spawn_init(list(range(3, 3 + preserve_fds)), self.opts.root)
        pid = 0
        master: int | None = None
        try:
            mgr = self._cgroup(st)
            placement: dict[str, Any] = {}
            if mgr is not None and mgr.exists():
                placement = _place(mgr, stage1, "user" in namespaces)
            sync.send(
                sock,
                {
                    "mode": "exec",
                    "target_pid": st.pid,
                    **placement,
                    "join": namespaces,
                    "process": proc,
                    "preserve_fds": preserve_fds,
                    # an exec'd process gets the container's filter too (it does not inherit it)
                    "seccomp": (st.config.get("linux") or {}).get("seccomp"),
                    "state": st.oci_state(status),
                },
            )
            while True:
                msg, fds = sync.recv(sock)
                if msg is None:
                    break  # close-on-exec: the process is running
                if msg["type"] == "error":
                    raise InitFailed(f"container {cid!r}: exec: {msg['message']}")
                if msg["type"] == "pid":
                    pid = msg["pid"]
                    os.waitpid(stage1, 0)
                    stage1 = 0
                elif msg["type"] == "console":
                    master = fds[0]
                    if console_socket:
                        from pallet.runtime import terminal

                        terminal.send_console(console_socket, master)
                        os.close(master)
                        master = None
            if pid_file:
                _write_pid_file(pid_file, pid)
            return pid, master
        except BaseException:
            for p in (stage1, pid):
                if p:
                    _kill_and_reap(p)
            raise
        finally:
            sock.close()

    def _log(self, level: str, msg: str) -> None:
        if self.opts.log:
            self.opts.log(level, msg)


def _hello(sock: _socket.socket, cid: str) -> int:
    msg, _ = sync.recv(sock)
    if msg is None or msg.get("type") != "hello":
        raise InitFailed(f"container {cid!r}: init exited without a word")
    return int(msg["pid"])


def _place(mgr: Any, pid: int, userns: bool) -> dict[str, Any]:
    """How the init ``pid`` gets into ``mgr``'s cgroups, made already: what the boot message says.

    A move through cgroup.procs takes the kernel's threadgroup rwsem for writing, which waits for an
    RCU grace period (5-15 ms here, more under load): once the longest step of a container start.
    Two moves skip that lock, and the init makes both itself (init.py): a single-threaded process
    that writes ``0`` to a v1 hierarchy's ``tasks`` file moves itself (``cgroup_join``), and
    clone3(CLONE_INTO_CGROUP) starts the init's child in the v2 directory (``cgroup_v2``; the unified
    one on a hybrid host). In a user namespace the init has lost the host's rights by the time it
    forks: there the v2 move is ours, while its interpreter starts. Rootless: every move is ours, as
    before, so that a controller this user cannot write is skipped (runc's rule).
    """
    if mgr.rootless or not mgr.paths:
        if mgr.paths:
            mgr.apply(pid)
        return {}
    v2, tasks = mgr.placement()
    if v2 and userns:
        from pallet.runtime.cgroups.common import write_file

        write_file(v2, "cgroup.procs", str(pid), "v2" if mgr.version == 2 else "unified")
        v2 = None
    return {"cgroup_join": tasks, "cgroup_v2": v2}


def _cgroup_resources(linux: dict[str, Any]) -> dict[str, Any]:
    """linux.resources as applied at create: like runc, the device nodes the config creates are
    allowed, and the default device rules apply even when the config names none."""
    res = dict(linux.get("resources") or {})
    rules = list(res.get("devices") or [])
    for d in linux.get("devices") or []:
        if d.get("type") in ("c", "b", "u"):
            kind = "c" if d["type"] == "u" else d["type"]
            rules.append(
                {"allow": True, "type": kind, "major": d["major"], "minor": d["minor"], "access": "rwm"}
            )
    res["devices"] = rules
    return res


def _check_lsm(proc: dict[str, Any]) -> None:
    """As runc: a label or profile for a security module the host does not run is an error, not a no-op."""
    if proc.get("selinuxLabel") and not os.path.exists("/sys/fs/selinux/enforce"):
        raise InvalidArgument(
            "config.json: process.selinuxLabel: SELinux is disabled or not supported on this host"
        )
    if proc.get("apparmorProfile") and not _apparmor_enabled():
        raise InvalidArgument(
            f"config.json: process.apparmorProfile: {proc['apparmorProfile']!r} requested but AppArmor is not enabled on this host"
        )


def _apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().startswith("Y")
    except OSError:
        return False


def _host_id(mappings: list[dict[str, int]] | None, container_id: int) -> int:
    """The host id that container_id maps to (itself without mappings)."""
    for m in mappings or []:
        if m["containerID"] <= container_id < m["containerID"] + m["size"]:
            return m["hostID"] + container_id - m["containerID"]
    return container_id


def _release_init(fifo: str, pid: int) -> bytes:
    """Open exec.fifo for reading, which releases the init blocked opening it for writing; return
    once the init has exec'd the program (its end of the fifo is close-on-exec: EOF means execve).

    A blocking open would hang forever if the init had died; instead wait on the fifo and on
    a pidfd of the init together until the init has written its byte.
    """
    from pallet.linux.syscalls import default

    # the pidfd first: opening the fifo releases the init, whose program may exit and be reaped by
    # its subreaper (containerd's shim) before a later pidfd_open could find it
    try:
        pidfd = default().pidfd_open(pid)
    except OSError:
        return b""
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        os.close(pidfd)
        raise
    try:
        try:
            ready, _, _ = select.select([fd, pidfd], [], [])
            if fd not in ready:  # the init died before it opened its end
                return os.read(fd, 1) if select.select([fd], [], [], 0)[0] else b""
            data = os.read(fd, 1)  # its byte, or EOF if it closed its end without writing
            if not data:
                return b""
        finally:
            os.close(pidfd)
        # a fifo whose writer has connected reports EOF only when every writer is gone: at the init's
        # execve, or its death
        while True:
            select.select([fd], [], [])
            if os.read(fd, 64) == b"":
                return data
    finally:
        os.close(fd)


def _owner_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _signal_verified(st: State, sig: int) -> None:
    """Signal the init through a pidfd after checking its start time, so a reused pid is never hit."""
    from pallet.linux.syscalls import default

    sysc = default()
    try:
        pidfd = sysc.pidfd_open(st.pid)
    except OSError as e:
        if e.errno == errno.ESRCH:
            raise FailedPrecondition(f"container {st.id!r}: its process is gone") from None
        raise
    try:
        if proc_start_time(st.pid) != st.pid_start:
            raise FailedPrecondition(f"container {st.id!r}: its process is gone")
        sysc.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        raise FailedPrecondition(f"container {st.id!r}: its process is gone") from None
    finally:
        os.close(pidfd)


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait for a process that may not be our child: a pidfd turns readable when it exits."""
    from pallet.linux.syscalls import default

    try:
        pidfd = default().pidfd_open(pid)
    except OSError:
        return
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_gone(pid)


def exit_status(status: int) -> int:
    """A wait status as a shell exit code: the code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def forward_signals(pid: int) -> None:
    """Pass the signals a foreground runtime receives on to the container's process, as runc does."""

    def forward(signum: int, _frame: Any) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)


def reap(pid: int) -> int:
    """Reap children until pid exits (we are its subreaper); its exit code as a shell would give it."""
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if got == pid:
            return exit_status(status)


def wait_foreground(pid: int, master: int | None) -> int:
    """Wait for a foreground process, relaying its console first when we hold the pty master."""
    forward_signals(pid)
    if master is None:
        return reap(pid)
    from pallet.linux.syscalls import default
    from pallet.runtime import terminal

    # in raw mode ^C reaches the pty as a byte; a SIGINT sent to us is still forwarded
    pidfd = default().pidfd_open(pid)
    try:
        with terminal.raw_stdin():
            terminal.relay(master, pidfd)
    finally:
        os.close(pidfd)
        os.close(master)
    return reap(pid)


def load_process_file(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            proc = json.load(f)
    except FileNotFoundError:
        raise InvalidArgument(f"--process {path}: no such file") from None
    except ValueError as e:
        raise InvalidArgument(f"--process {path}: malformed JSON: {e}") from None
    if not isinstance(proc, dict):
        raise InvalidArgument(f"--process {path}: expected a JSON object")
    return proc
