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
