"""pallet-runtime's verbs called in-process, in a child the monitor forks: the fast path DESIGN.md allows.

The monitor hands this the same argv it would give the ``pallet-runtime`` binary (after the global
flags) and gets the same result: the same state under the same ``--root`` (so ``pallet-runtime --root
DIR state ID`` works on these containers), the same exit code (0, or 1 on an error) and the same error
record in the ``--log`` file (runc's JSON lines) — only the interpreter start and the argument parsing
of each verb are saved (~15 ms each of ~30 ms here).

Why a forked child and not the monitor itself: importing the runtime adds ~1.7 MiB to every idle
monitor (RSS 10.9 → 12.6 MiB measured with ``python -S``), which is the memory per container that
bench/README.md tracks. The fork happens in the single-threaded monitor; the runtime forks again
(stage 1, then the init, which the kernel re-parents to the monitor, the subreaper, when stage 1 exits).
"""

from __future__ import annotations

import marshal
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def run_verb(root: str, log_path: str, args: list[str], init: tuple[int, Any] | None = None) -> int:
    """``pallet-runtime --root ROOT --log LOG --log-format json ARGS...`` without the exec; ``init``:
    for create, an init started already (Early.fork: forked by the monitor, or spawned by the child)."""
    from pallet.errors import PalletError
    from pallet.runtime.container import CreateRequest, Options, Runtime, RuntimeLog, describe

    log = RuntimeLog(log_path)
    rt = Runtime(Options(root=root, log=log))
    verb, cid, flags = args[0], args[-1], args[1:-1]
    opts: dict[str, str] = {}
    force = False
    i = 0
    while i < len(flags):
        if flags[i] == "--force":
            force = True
            i += 1
        else:
            opts[flags[i]] = flags[i + 1]
            i += 2
    try:
        if verb == "create":
            rt.create(
                CreateRequest(
                    container_id=cid,
                    bundle=opts["--bundle"],
                    pid_file=opts.get("--pid-file"),
                    console_socket=opts.get("--console-socket"),
                ),
                init=init,
            )
        elif verb == "start":
            rt.start(cid)
        elif verb == "delete":
            rt.delete(cid, force=force)
        else:
            raise ValueError(f"pallet-monitor: no in-process runtime verb {verb!r}")
    except (PalletError, OSError) as e:
        log("error", describe(e))
        return 1
    return 0


def create_then_start(
    root: str,
    log_path: str,
    args: list[str],
    result_w: int,
    go_r: int,
    db: str,
    init: tuple[int, Any] | None = None,
) -> int:
    """``create`` then, when the monitor says so, ``start`` — one child, one import of the runtime, for
    both verbs (~15 ms each here). The protocol, over two pipes:

      child → monitor (result_w): create's exit code (``0``/``1``) and a newline; after a start, its
                                  code and a newline; then EOF
      monitor → child (go_r):     the state to record once started (marshal), then EOF; EOF alone:
                                  do not start (the monitor gave up, or died: the container stays created)

    The record of the running state is written here, after a successful start, so that the monitor
    needs no second child (and no second import of SQLite) for it; the store is imported while the
    monitor waits for its client to attach. Start's code goes first, so that the monitor can tell
    "started" while the record is written; it waits for this child before it records anything else.
    """
    code = run_verb(root, log_path, args, init)
    os.write(result_w, b"%d\n" % code)
    if code != 0:
        os.close(result_w)
        return code
    from pallet.engine.store import record_state

    chunks = []
    while chunk := os.read(go_r, 65536):
        chunks.append(chunk)
    if not chunks:
        return 0
    fields = marshal.loads(b"".join(chunks))
    code = run_verb(root, log_path, ["start", args[-1]])
    os.write(result_w, b"%d\n" % code)
    os.close(result_w)
    if code == 0:
        try:
            record_state(db, args[-1], fields)
        except Exception:  # noqa: BLE001 - as the monitor's record(): the container runs regardless
            pass
    return code


def _preload() -> None:
    """What the create loads on its way (~3 ms for the cgroup driver and device rules alone)."""
    import pallet.engine.store  # noqa: F401
    import pallet.runtime.cgroups.devices  # noqa: F401
    import pallet.runtime.container  # noqa: F401
    from pallet.runtime import cgroups

    if cgroups.is_v2():
        import pallet.runtime.cgroups.v2  # noqa: F401
    else:
        import pallet.runtime.cgroups.v1  # noqa: F401


class Early:
    """``create_then_start`` forked by the engine from the monitor-to-be, before that execs the monitor:
    the create runs in a child of the CLI, which has the runtime's modules (json, ctypes, …) loaded
    already, while the monitor's interpreter starts beside it.

    The engine makes it (``Early(mcfg)``: every import and every pipe before the fork) where the
    monitor would run pallet-runtime in-process, with pipes for stdio (no tty), from a process that
    is single-threaded, as soon as it starts the container: before it mounts the rootfs and writes
    the spec (monitor/launch.py). In the monitor-to-be, after the subreaper flag is set — so that the
    init is re-parented to the monitor — ``fork()`` starts the create child and returns the argument
    that tells the monitor what it adopts (``pid,result,go,stdout,stderr,stdin``: its Monitor.create
    reads the result as it would from its own child). The container's init is started at once: forked
    by the monitor itself where that runs from the sealed interpreter (launch.py, sibling.py; the
    child gets its socket), else spawned by the child, its interpreter (~12 ms) starting while the
    engine makes the bundle. The child then waits for the engine's ``go()``: the create adopts the
    init (``Runtime.create(init=...)``). EOF instead (the engine gave up): a spawned init is killed, a
    forked one ends at its socket's EOF, and the child exits. The engine closes its copies
    (``close()``) once the monitor runs.
    """

    def __init__(self, mcfg: dict[str, object], preload: bool = True) -> None:
        """``preload``: import the runtime here, before the fork (the engine: it has most of it loaded);
        a sibling monitor (sibling.py) must stay lean, so its create child imports it after."""
        self.preloaded = preload
        if preload:
            _preload()
        self.root, self.log, self.db = str(mcfg["runtime_root"]), str(mcfg["runtime_log"]), str(mcfg["db"])
        pid_file = str(mcfg["pid_file"])
        for path in (pid_file, self.log):
            if os.path.exists(path):
                os.unlink(path)
        self.args = ["create", "--bundle", str(mcfg["bundle"]), "--pid-file", pid_file, str(mcfg["id"])]
        self.out_r, self.out_w = os.pipe2(os.O_CLOEXEC)
        self.err_r, self.err_w = os.pipe2(os.O_CLOEXEC)
        if mcfg["stdin"]:
            self.in_r, self.in_w = os.pipe2(os.O_CLOEXEC)
        else:
            self.in_r, self.in_w = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1
        self.result_r, self.result_w = os.pipe2(os.O_CLOEXEC)
        self.go_r, self.go_w = os.pipe2(os.O_CLOEXEC)
        self.bundle_r, self.bundle_w = os.pipe2(os.O_CLOEXEC)  # the engine's go: the bundle is written

    def fork(self, init: Any = None, drop: int = -1) -> str:
        """In the monitor-to-be, a subreaper: start the create child; the monitor's argument for it.
        ``init``: our end of the sync socket of an init that the monitor itself forks (launch.py),
        ``drop`` the init's end (the child must not hold it: it would never see the init's EOF);
        without them, the child spawns its init."""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                if drop >= 0:
                    os.close(drop)
                for target, fd in enumerate((self.in_r, self.out_w, self.err_w)):
                    os.dup2(fd, target)
                for fd in (self.result_r, self.go_w, self.out_r, self.err_r, self.in_w, self.bundle_w):
                    if fd >= 0:
                        os.close(fd)
                if init is not None:
                    adopted = (0, init)  # its pid comes first on the socket (init.fork_from)
                else:
                    from pallet.runtime import launcher

                    adopted = launcher.spawn_init([], self.root)
                if not self.preloaded:
                    _preload()  # while the engine makes the bundle
                if os.read(self.bundle_r, 1) != b"g":  # EOF: the engine gave up (or died)
                    if adopted[0]:
                        os.kill(adopted[0], 9)
                        os.waitpid(adopted[0], 0)
                    code = 0  # a forked init ends at its socket's EOF
                else:
                    code = create_then_start(
                        self.root, self.log, self.args, self.result_w, self.go_r, self.db, adopted
                    )
            finally:
                os._exit(code)
        kept = (self.result_r, self.go_w, self.out_r, self.err_r, self.in_w)
        for fd in kept:
            if fd >= 0:
                os.set_inheritable(fd, True)
        return ",".join(str(x) for x in (pid, *kept))

    def go(self) -> None:
        """The bundle is written, the create may begin."""
        os.write(self.bundle_w, b"g")

    def keep_monitor_ends(self) -> None:
        """In a monitor that forked the create child itself (no exec: sibling.py): our ends stay, the
        child's go."""
        for fd in (self.out_w, self.err_w, self.in_r, self.result_w, self.go_r, self.bundle_r):
            os.close(fd)

    def close(self) -> None:
        for fd in (self.out_r, self.out_w, self.err_r, self.err_w, self.in_r, self.in_w):
            if fd >= 0:
                os.close(fd)
        for fd in (self.result_r, self.result_w, self.go_r, self.go_w, self.bundle_r, self.bundle_w):
            os.close(fd)
