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


def run_verb(root: str, log_path: str, args: list[str]) -> int:
    """``pallet-runtime --root ROOT --log LOG --log-format json ARGS...`` without the exec."""
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
                )
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


def create_then_start(root: str, log_path: str, args: list[str], result_w: int, go_r: int, db: str) -> int:
    """``create`` then, when the monitor says so, ``start`` — one child, one import of the runtime, for
    both verbs (~15 ms each here). The protocol, over two pipes:

      child → monitor (result_w): create's exit code (``0``/``1``), then EOF
      monitor → child (go_r):     the state to record once started (marshal), then EOF; EOF alone:
                                  do not start (the monitor gave up, or died: the container stays created)

    The record of the running state is written here, after a successful start, so that the monitor
    needs no second child (and no second import of SQLite) for it; the store is imported while the
    monitor waits for its client to attach.
    """
    code = run_verb(root, log_path, args)
    os.write(result_w, b"%d" % code)
    os.close(result_w)
    if code != 0:
        return code
    from pallet.engine.store import record_state

    chunks = []
    while chunk := os.read(go_r, 65536):
        chunks.append(chunk)
    if not chunks:
        return 0
    fields = marshal.loads(b"".join(chunks))
    code = run_verb(root, log_path, ["start", args[-1]])
    if code == 0:
        try:
            record_state(db, args[-1], fields)
        except Exception:  # noqa: BLE001 - as the monitor's record(): the container runs regardless
            pass
    return code
