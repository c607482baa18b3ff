"""Container verbs: run create start stop restart kill rm ps logs exec attach inspect wait rename pause
unpause top stats cp port update, and ``container <verb>`` / ``container prune``. Each parses docker's
flags into docker's Config/HostConfig shapes, calls pallet.engine and prints as docker prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from datetime import UTC, datetime

from pallet.cli.format import human_size, inspect_each, print_rows, render, since
from pallet.cli.grammar import REMAINDER, Command
from pallet.engine.views import (
    command_text,
    container_inspect,
    duration,
    ports_text,
    ps_filter,
    restart_policy,
    status_text,
    when,
)
from pallet.errors import InvalidArgument, NotFound, PalletError

TYPE_CHECKING = False  # typing costs ~1.8 ms of every `pallet run`: annotations only
if TYPE_CHECKING:  # argparse only when main needs it (help, errors)
    import argparse
    from typing import Any

PS_TABLE = (
    "table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}\\t{{.Status}}\\t{{.Ports}}\\t{{.Names}}"
)
PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT"}
PS_HEADERS |= {
    "RunningFor": "CREATED",
    "Status": "STATUS",
    "Ports": "PORTS",
    "Names": "NAMES",
    "State": "STATE",
}
STATS_TABLE = "table {{.ID}}\\t{{.Name}}\\t{{.CPUPerc}}\\t{{.MemUsage}}\\t{{.MemPerc}}\\t{{.PIDs}}"
STATS_HEADERS = {"ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT"}
STATS_HEADERS |= {"MemPerc": "MEM %", "PIDs": "PIDS"}


def engine(ctx: Any) -> Any:
    if getattr(ctx, "_engine", None) is None:
        from pallet.engine.containers import Engine

        ctx._engine = Engine(ctx.root, ctx.runroot, ctx.storage_driver)
        close = ctx.close

        def close_both() -> None:
            ctx._engine.close()
            close()

        ctx.close = close_both
    return ctx._engine


def _err(msg: str) -> None:
    print(f"Error: {msg}", file=sys.stderr)


# -- run / create ------------------------------------------------------------------------------------


def _ulimit(text: str) -> dict[str, Any]:
    name, _, vals = text.partition("=")
    soft, _, hard = vals.partition(":")
    try:
        return {"Name": name, "Soft": int(soft), "Hard": int(hard or soft)}
    except ValueError:
        raise InvalidArgument(f'invalid argument "{text}" for "--ulimit" flag') from None


def _rate(text: str, flag: str) -> dict[str, Any]:
    from pallet.engine.containers import parse_size

    path, _, rate = text.rpartition(":")
    if not path:
        raise InvalidArgument(f'invalid argument "{text}" for "{flag}" flag: bad format')
    return {"Path": path, "Rate": parse_size(rate, flag)}


def _env(args: argparse.Namespace) -> list[str]:
    out = []
    for f in args.env_file:
        try:
            lines = open(f).read().splitlines()
        except OSError as e:
            raise InvalidArgument(f"open {f}: {e.strerror}") from None
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line if "=" in line else f"{line}={os.environ.get(line, '')}")
    for var in args.env:
        out.append(var if "=" in var else f"{var}={os.environ.get(var, '')}")
    return out


def build_config(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    from pallet.engine.containers import parse_size

    cfg: dict[str, Any] = {
        "Image": args.image,
        "Cmd": args.command or None,
        "Env": _env(args),
        "WorkingDir": args.workdir,
        "User": args.user,
        "Hostname": args.hostname,
        "Tty": args.tty,
        "OpenStdin": args.interactive,
        "AttachStdin": args.interactive,
        "StopSignal": args.stop_signal,
        "Labels": dict(label.partition("=")[::2] for label in args.label),
    }
    if args.entrypoint is not None:
        cfg["Entrypoint"] = [args.entrypoint] if args.entrypoint else []
    if args.health_cmd:
        cfg["Healthcheck"] = {
            "Test": ["CMD-SHELL", args.health_cmd],
            "Interval": duration(args.health_interval, "--health-interval"),
            "Timeout": duration(args.health_timeout, "--health-timeout"),
            "Retries": args.health_retries,
            "StartPeriod": duration(args.health_start_period, "--health-start-period"),
        }
    if args.no_healthcheck:
        cfg["Healthcheck"] = {"Test": ["NONE"]}

    def mem(value: str | None, flag: str) -> int:
        return parse_size(value, flag) if value else 0

    swap = -1 if args.memory_swap == "-1" else mem(args.memory_swap, "--memory-swap")
    try:
        nano = int(float(args.cpus) * 1e9) if args.cpus else 0
    except ValueError:
        raise InvalidArgument(f'invalid argument "{args.cpus}" for "--cpus" flag: failed to parse') from None
    log_cfg: dict[str, str] = {}
    for o in args.log_opt:
        k, eq, v = o.partition("=")
        if not eq or k not in ("max-size", "max-file"):
            raise InvalidArgument(f"unknown log opt '{k}' for json-file log driver")
        if k == "max-size":
            parse_size(v, "--log-opt max-size")
        elif not v.isdigit() or int(v) < 1:
            raise InvalidArgument(f"invalid value for max-file: {v}")
        log_cfg[k] = v
    tmpfs = {}
    for t in args.tmpfs:
        dest, _, opts = t.partition(":")
        tmpfs[dest] = opts
    sysctls = {}
    for s in args.sysctl:
        k, eq, v = s.partition("=")
        if not eq:
            raise InvalidArgument(f"sysctl '{s}' is not allowed")
        sysctls[k] = v
    host: dict[str, Any] = {
        "AutoRemove": args.rm,
        "Privileged": args.privileged,
        "ReadonlyRootfs": args.read_only,
        "CapAdd": args.cap_add,
        "CapDrop": args.cap_drop,
        "SecurityOpt": args.security_opt,
        "Devices": args.device,
        "Sysctls": sysctls,
        "Tmpfs": tmpfs,
        "ShmSize": mem(args.shm_size, "--shm-size"),
        "Memory": mem(args.memory, "-m, --memory"),
        "MemorySwap": swap,
        "MemoryReservation": mem(args.memory_reservation, "--memory-reservation"),
        "NanoCpus": nano,
        "CpuShares": args.cpu_shares,
        "CpusetCpus": args.cpuset_cpus,
        "PidsLimit": args.pids_limit,
        "BlkioWeight": args.blkio_weight,
        "BlkioDeviceReadBps": [_rate(d, "--device-read-bps") for d in args.device_read_bps],
        "BlkioDeviceWriteBps": [_rate(d, "--device-write-bps") for d in args.device_write_bps],
        "OomScoreAdj": args.oom_score_adj,
        "Ulimits": [_ulimit(u) for u in args.ulimit],
        "Init": args.init,
        "RestartPolicy": restart_policy(args.restart),
        "StopTimeout": args.stop_timeout,
        "LogConfig": {"Type": "json-file", "Config": log_cfg},
        "PidMode": args.pid,
        "IpcMode": args.ipc,
        "UTSMode": args.uts,
        "NetworkMode": args.network,
        "Runtime": args.runtime,
        "CgroupParent": args.cgroup_parent,
        "Binds": args.volume,
    }
    from pallet.cli.networks import apply

    apply(args, cfg, host)
    if args.rm and args.restart != "no":
        raise InvalidArgument("Conflicting options: --restart and --rm")
    for key in ("PidMode", "IpcMode", "UTSMode"):
        mode = host[key]
        if (
            mode
            and mode != "host"
            and not mode.startswith("container:")
            and mode not in ("private", "shareable")
        ):
            raise InvalidArgument(f"invalid {key.replace('Mode', '').upper()} mode: {mode}")
    from pallet.engine.spec import capabilities, parse_signal

    capabilities(args.cap_add, args.cap_drop, args.privileged)  # refused at create, as docker does
    if args.stop_signal:
        parse_signal(args.stop_signal)
    return cfg, host


def _create(ctx: Any, args: argparse.Namespace) -> Any:
    cfg, host = build_config(args)
    return engine(ctx).create(cfg, host, args.name)


def cmd_create(ctx: Any, args: argparse.Namespace) -> int:
    print(_create(ctx, args).id)
    return 0


def cmd_run(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.engine.containers import StartError

    eng = engine(ctx)
    cfg, host = build_config(args)
    pre = eng.prelaunch(cfg, host)  # its monitor and init start while the container is made
    try:
        rec = eng.create(cfg, host, args.name, cid=pre[0] if pre else None)
    except BaseException:
        if pre:
            eng.drop(pre)
        raise
    launch = pre[1] if pre else None
    try:
        if args.detach:
            eng.start(rec.id, launch=launch)
            print(rec.id)
            return 0
        code = _start_attached(eng, rec, args.interactive, args.tty, remover=args.rm, launch=launch)
        if args.rm and code is not None:
            eng.remove(rec.id, force=True, volumes=True, exited=True)
        return 0 if code is None else code
    except StartError as e:
        _err(str(e))
        if args.rm:
            _quiet_rm(eng, rec.id)
        return e.exit_code
    except PalletError:
        if args.rm:  # a start refused before the runtime ran (an unknown --user): docker removes it too
            _quiet_rm(eng, rec.id)
        raise


def _quiet_rm(eng: Any, cid: str) -> None:
    try:
        eng.remove(cid, force=True, volumes=True)
    except NotFound:
        pass


def _start_attached(
    eng: Any, rec: Any, stdin: bool, tty: bool, remover: bool = False, launch: Any = None
) -> int | None:
    """Start with our stdio attached; the container's exit code, or None if we detached."""
    from pallet.engine import attach

    rec, sync = eng.start(rec.id, attach_wait=True, launch=launch)
    if sync < 0:
        raise InvalidArgument(f"container {rec.name} is already running")
    s = attach.connect(eng.sock(rec.id), attach.hello(stdin, tty, remover))
    with s:
        eng.finish_start(rec, sync)
        return attach.proxy(s, stdin, tty, eng.sock(rec.id))


# -- start / stop / kill / restart / rm / wait -------------------------------------------------------


def cmd_start(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.engine.containers import StartError

    eng = engine(ctx)
    failed = 0
    for name in args.containers:
        try:
            if args.attach:
                rec = eng.get(name)
                cfg = rec.config["Config"]
                code = _start_attached(eng, rec, args.interactive, bool(cfg.get("Tty")))
                return 0 if code is None else code
            eng.start(name)
            print(name)
        except StartError as e:
            _err(str(e))
            return e.exit_code
        except PalletError as e:
            _err(str(e))
            failed = 1
    return failed and 125


def _each(ctx: Any, names: list[str], fn: Any) -> int:
    failed = 0
    for name in names:
        try:
            fn(name)
            print(name)
        except PalletError as e:
            _err(str(e))
            failed = 125
    return failed


def cmd_stop(ctx: Any, args: argparse.Namespace) -> int:
    return _each(ctx, args.containers, lambda n: engine(ctx).stop(n, args.time, args.signal))


def cmd_restart(ctx: Any, args: argparse.Namespace) -> int:
    def restart(n: str) -> None:
        engine(ctx).stop(n, args.time, args.signal)
        engine(ctx).start(n)

    return _each(ctx, args.containers, restart)


def cmd_kill(ctx: Any, args: argparse.Namespace) -> int:
    return _each(ctx, args.containers, lambda n: engine(ctx).kill(n, args.signal))


def cmd_rm(ctx: Any, args: argparse.Namespace) -> int:
    return _each(ctx, args.containers, lambda n: engine(ctx).remove(n, args.force, args.volumes))


def cmd_wait(ctx: Any, args: argparse.Namespace) -> int:
    failed = 0
    for name in args.containers:
        try:
            print(engine(ctx).wait(name))
        except PalletError as e:
            _err(str(e))
            failed = 125
    return failed


def cmd_pause(ctx: Any, args: argparse.Namespace) -> int:
    return _each(ctx, args.containers, lambda n: engine(ctx).pause(n))


def cmd_unpause(ctx: Any, args: argparse.Namespace) -> int:
    return _each(ctx, args.containers, lambda n: engine(ctx).unpause(n))


def cmd_rename(ctx: Any, args: argparse.Namespace) -> int:
    engine(ctx).rename(args.container, args.new_name)
    return 0


# -- ps / inspect --------------------------------------------------------------------------------


def _ps_row(eng: Any, rec: Any, no_trunc: bool) -> dict[str, Any]:
    cfg = rec.config["Config"]
    cmd = command_text(cfg)
    created = datetime.fromtimestamp(rec.created, UTC)
    return {
        "ID": rec.id if no_trunc else rec.id[:12],
        "Image": cfg.get("Image", ""),
        "Command": json.dumps(cmd if no_trunc or len(cmd) <= 20 else cmd[:19] + "…", ensure_ascii=False),
        "CreatedAt": created.strftime("%Y-%m-%d %H:%M:%S +0000 UTC"),
        "RunningFor": since(created),
        "Status": status_text(eng, rec),
        "State": eng.status(rec),
        "Ports": ports_text(eng, rec),
        "Names": rec.name,
        "Labels": ",".join(f"{k}={v}" for k, v in (cfg.get("Labels") or {}).items()),
        "Mounts": ",".join(m.get("Name") or m["Source"] for m in rec.config.get("Mounts") or []),
        "Networks": rec.config["HostConfig"].get("NetworkMode") or "none",
    }


def cmd_ps(ctx: Any, args: argparse.Namespace) -> int:
    eng = engine(ctx)
    recs = eng.all()
    if not args.all and not args.filter:
        recs = [r for r in recs if eng.status(r) in ("running", "paused", "restarting")]
    recs = [r for r in recs if ps_filter(eng, r, args.filter)]
    if args.last is not None and args.last >= 0:
        recs = recs[: args.last]
    if args.latest:
        recs = recs[:1]
    if args.quiet:
        for r in recs:
            print(r.id if args.no_trunc else r.id[:12])
        return 0
    rows = [_ps_row(eng, r, args.no_trunc) for r in recs]
    sys.stdout.write(print_rows(args.format, PS_TABLE, PS_HEADERS, rows))
    return 0


def cmd_inspect(ctx: Any, args: argparse.Namespace) -> int:
    eng = engine(ctx)
    return inspect_each(args.format, args.containers, lambda name: container_inspect(eng, eng.get(name)), 125)


# -- logs / attach / exec ----------------------------------------------------------------------------


def cmd_logs(ctx: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from pallet.engine import logs

    eng = engine(ctx)
    rec = eng.get(args.container)
    path = Path(container_inspect(eng, rec)["LogPath"])
    running = eng.status(rec) in ("running", "paused", "restarting")
    if args.follow:
        first, rest = logs.follow(path, eng.sock(rec.id), running)
    else:
        first, rest = list(logs.read(path)), iter(())
    import itertools

    out, err = sys.stdout.buffer, sys.stderr.buffer
    try:
        # lazily: with -f, each new record is written as it comes
        for r in itertools.chain(logs.tail(first, args.tail), rest):
            line = r["log"].encode()
            if args.timestamps:
                line = r["time"].encode() + b" " + line
            f = out if r["stream"] == "stdout" else err
            f.write(line)
            f.flush()
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_attach(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.engine import attach

    eng = engine(ctx)
    rec = eng.get(args.container)
    if eng.status(rec) != "running":
        raise InvalidArgument("You cannot attach to a stopped container, start it first")
    cfg = rec.config["Config"]
    stdin = bool(cfg.get("OpenStdin")) and not args.no_stdin
    s = attach.connect(eng.sock(rec.id), attach.hello(stdin, bool(cfg.get("Tty"))))
    with s:
        code = attach.proxy(s, stdin, bool(cfg.get("Tty")), eng.sock(rec.id))
    return 0 if code is None else code


def cmd_exec(ctx: Any, args: argparse.Namespace) -> int:
    eng = engine(ctx)
    rec = eng._running(args.container)
    opts = {
        "tty": args.tty,
        "detach": args.detach,
        "workdir": args.workdir,
        "env": _env(args),
        "user": args.user,
    }
    opts["privileged"] = args.privileged
    argv = eng.exec_argv(rec, args.command, opts)
    try:
        if args.tty:
            return _exec_tty(eng, rec, argv, args)
        argv.append(rec.id)
        stdin = sys.stdin.fileno() if args.interactive else os.open(os.devnull, os.O_RDONLY)
        actions = [(os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, 1, 1), (os.POSIX_SPAWN_DUP2, 2, 2)]
        sys.stdout.flush()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        return _exec_result(eng, rec, os.waitstatus_to_exitcode(status))
    finally:
        eng.exec_done(argv)


def _exec_result(eng: Any, rec: Any, code: int) -> int:
    """The runtime's exit is the process's, unless the runtime logged that it could not start it."""
    from pallet.engine.monitor.main import invoke_code
    from pallet.engine.runtime_log import last_error

    logf = eng.rdir(rec.id) / "exec.log"
    msg = last_error(logf)
    logf.unlink(missing_ok=True)
    return invoke_code(msg) if msg else code


def _exec_tty(eng: Any, rec: Any, argv: list[str], args: argparse.Namespace) -> int:
    """exec -t: the runtime sends the pty master to our console socket; we copy between it and ours."""
    import selectors
    import socket
    import tempfile

    from pallet.engine import attach

    tmp = tempfile.mkdtemp(prefix="exec-", dir=str(eng.rdir(rec.id)))
    path = os.path.join(tmp, "console")
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(path)
    lst.listen(1)
    argv = [*argv, "--console-socket", path, rec.id]
    null = os.open(os.devnull, os.O_RDWR)
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, null, 0)])
    pidfd = os.pidfd_open(pid)
    master = -1
    sel = selectors.DefaultSelector()
    sel.register(lst, selectors.EVENT_READ)
    sel.register(pidfd, selectors.EVENT_READ)
    if any(k.fileobj is lst for k, _ in sel.select()):
        conn, _ = lst.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
            master = fds[0] if fds else -1
    sel.close()
    lst.close()
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    if master >= 0:
        size = attach.terminal_size(0)
        if size:
            import fcntl
            import struct
            import termios

            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
        _copy_pty(master, pidfd, args.interactive)
        os.close(master)
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return _exec_result(eng, rec, os.waitstatus_to_exitcode(status))


def _copy_pty(master: int, pidfd: int, stdin: bool) -> None:
    import selectors

    from pallet.engine import attach

    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ, "pty")
    if stdin:
        sel.register(0, selectors.EVENT_READ, "stdin")
    with attach.raw_terminal(0) if stdin else _nothing():
        while True:
            for key, _ in sel.select():
                if key.data == "pty":
                    try:
                        data = os.read(master, 32768)
                    except OSError:
                        data = b""
                    if not data:
                        return
                    sys.stdout.buffer.write(data)
                    sys.stdout.flush()
                else:
                    data = os.read(0, 32768)
                    if not data:
                        sel.unregister(0)
                        continue
                    os.write(master, data)


def _nothing() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


# -- top / stats / cp / port / update / prune -------------------------------------------------------------


def cmd_top(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.cli.format import tabwrite

    header, rows = engine(ctx).top(args.container)
    sys.stdout.write(tabwrite([header, *rows]))
    return 0


def _stats_row(
    eng: Any, rec: Any, prev: dict[str, Any] | None, dt: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    data = eng.stats(rec.id)
    cpu = data.get("cpu", {}).get("usage", {}).get("total", 0)
    mem = data.get("memory", {}).get("usage", {})
    usage, limit = mem.get("usage", 0), mem.get("limit", 0)
    host_mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = limit if 0 < limit < host_mem else host_mem
    perc = 0.0
    if prev is not None and dt > 0:
        perc = (cpu - prev["cpu"]) / (dt * 1e9) * 100
    row = {
        "ID": rec.id[:12],
        "Container": rec.id[:12],
        "Name": rec.name,
        "CPUPerc": f"{perc:.2f}%",
        "MemUsage": f"{_binary(usage)} / {_binary(limit)}",
        "MemPerc": f"{(usage / limit * 100 if limit else 0):.2f}%",
        "PIDs": str(data.get("pids", {}).get("current", 0)),
    }
    return row, {"cpu": cpu}


def _binary(n: float) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.4g}{units[i]}"


def cmd_stats(ctx: Any, args: argparse.Namespace) -> int:
    import time

    eng = engine(ctx)
    recs = [eng.get(n) for n in args.containers] if args.containers else eng.all()
    recs = [r for r in recs if eng.status(r) == "running"]
    prev: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    for r in recs:
        prev[r.id] = _stats_row(eng, r, None, 0)[1]
    try:
        return _stats_loop(eng, recs, prev, t0, args)
    except KeyboardInterrupt:
        return 0


def _stats_loop(
    eng: Any, recs: list[Any], prev: dict[str, dict[str, Any]], t0: float, args: argparse.Namespace
) -> int:
    import time

    while True:
        # docker samples twice to show a CPU rate; the pause is the sampling interval, not a child wait
        time.sleep(1.0)
        dt, t0 = time.monotonic() - t0, time.monotonic()
        rows = []
        for r in recs:
            try:
                row, prev[r.id] = _stats_row(eng, r, prev.get(r.id), dt)
                rows.append(row)
            except PalletError:
                continue
        if not args.no_stream and sys.stdout.isatty():
            sys.stdout.write("\x1b[2J\x1b[H")
        sys.stdout.write(print_rows(args.format, STATS_TABLE, STATS_HEADERS, rows))
        sys.stdout.flush()
        if args.no_stream:
            return 0


def cmd_cp(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.engine.copy import copy

    eng = engine(ctx)
    src, dst = args.src, args.dest
    if ":" in src and not src.startswith(("/", ".")):
        name, _, path = src.partition(":")
        copy(eng, eng.get(name), path, dst, to_container=False)
    elif ":" in dst and not dst.startswith(("/", ".")):
        name, _, path = dst.partition(":")
        copy(eng, eng.get(name), path, src, to_container=True)
    else:
        raise InvalidArgument("copying between containers is not supported; one of the paths must be local")
    return 0


def cmd_port(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.cli.networks import port

    eng = engine(ctx)
    return port(eng, eng.get(args.container), args.port)


def cmd_update(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.engine.containers import parse_size

    flags: list[str] = []
    host: dict[str, Any] = {}
    if args.memory:
        host["Memory"] = parse_size(args.memory, "-m, --memory")
        flags += ["--memory", str(host["Memory"])]
    if args.memory_swap:
        host["MemorySwap"] = -1 if args.memory_swap == "-1" else parse_size(args.memory_swap, "--memory-swap")
        flags += ["--memory-swap", str(host["MemorySwap"])]
    if args.memory_reservation:
        host["MemoryReservation"] = parse_size(args.memory_reservation, "--memory-reservation")
        flags += ["--memory-reservation", str(host["MemoryReservation"])]
    if args.cpus:
        host["NanoCpus"] = int(float(args.cpus) * 1e9)
        flags += ["--cpu-period", "100000", "--cpu-quota", str(host["NanoCpus"] * 100000 // 1_000_000_000)]
    if args.cpu_shares:
        host["CpuShares"] = args.cpu_shares
        flags += ["--cpu-share", str(args.cpu_shares)]
    if args.cpuset_cpus:
        host["CpusetCpus"] = args.cpuset_cpus
        flags += ["--cpuset-cpus", args.cpuset_cpus]
    if args.pids_limit:
        host["PidsLimit"] = args.pids_limit
        flags += ["--pids-limit", str(args.pids_limit)]
    if args.blkio_weight:
        host["BlkioWeight"] = args.blkio_weight
        flags += ["--blkio-weight", str(args.blkio_weight)]
    if args.restart:
        host["RestartPolicy"] = restart_policy(args.restart)
    return _each(ctx, args.containers, lambda n: engine(ctx).update(n, flags, host))


def cmd_prune(ctx: Any, args: argparse.Namespace) -> int:
    eng = engine(ctx)
    if not args.force:
        print("WARNING! This will remove all stopped containers.", file=sys.stderr)
    deleted, freed = [], 0
    usage = dict(eng.images.writable_snapshots())
    for rec in eng.all():
        if eng.status(rec) in ("exited", "created", "dead"):
            freed += usage.get(rec.id, 0)
            eng.remove(rec.id, force=True)
            deleted.append(rec.id)
    if deleted:
        print("Deleted Containers:")
        for d in deleted:
            print(d)
        print()
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


def cmd_events(ctx: Any, args: argparse.Namespace) -> int:
    """The events recorded, then live ones as they are appended (until --until, or until killed),
    filtered as docker's ``--filter container=|event=|image=``."""
    from pallet.engine import events

    since = when(args.since) if args.since else 0.0
    until = when(args.until) if args.until else float("inf")
    filters: dict[str, list[str]] = {}
    for f in args.filter:
        k, eq, v = f.partition("=")
        if not eq or k not in ("container", "event", "image", "type"):
            raise InvalidArgument(f"invalid filter '{f}'")
        filters.setdefault(k, []).append(v)
    for ev in events.follow(ctx.root, until):
        t = ev["timeNano"] / 1e9
        attrs = ev["Actor"]["Attributes"]
        if not since <= t <= until:
            continue
        if "container" in filters and not any(
            v in (attrs.get("name"), ev["Actor"]["ID"]) or ev["Actor"]["ID"].startswith(v)
            for v in filters["container"]
        ):
            continue
        if "event" in filters and ev["Action"].split(":")[0] not in filters["event"]:
            continue
        if "image" in filters and attrs.get("image") not in filters["image"]:
            continue
        if args.format:
            print(render(args.format, ev | {"ID": ev["Actor"]["ID"], "Status": ev["Action"]}), flush=True)
            continue
        stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        attr_text = ", ".join(f"{k}={v}" for k, v in sorted(attrs.items()))
        print(f"{stamp} container {ev['Action']} {ev['Actor']['ID']} ({attr_text})", flush=True)
    return 0


# -- registration ----------------------------------------------------------------------------------------------


def _run_flags(p: Command) -> None:
    a = p.add_argument
    a("-i", "--interactive", action="store_true")
    a("-t", "--tty", action="store_true")
    a("-d", "--detach", action="store_true")
    a("--rm", action="store_true")
    a("--name")
    a("-e", "--env", action="append", default=[])
    a("--env-file", action="append", default=[])
    a("-w", "--workdir")
    a("-u", "--user")
    a("-h", "--hostname")
    a("--entrypoint")
    a("-l", "--label", action="append", default=[])
    a("-v", "--volume", action="append", default=[])
    a("--read-only", action="store_true")
    a("--tmpfs", action="append", default=[])
    a("--shm-size")
    a("-m", "--memory")
    a("--memory-swap")
    a("--memory-reservation")
    a("--cpus")
    a("-c", "--cpu-shares", type=int)
    a("--cpuset-cpus")
    a("--pids-limit", type=int)
    a("--blkio-weight", type=int)
    a("--device-read-bps", action="append", default=[])
    a("--device-write-bps", action="append", default=[])
    a("--oom-score-adj", type=int)
    a("--ulimit", action="append", default=[])
    a("--cap-add", action="append", default=[])
    a("--cap-drop", action="append", default=[])
    a("--privileged", action="store_true")
    a("--security-opt", action="append", default=[])
    a("--device", action="append", default=[])
    a("--sysctl", action="append", default=[])
    a("--init", action="store_true")
    a("--restart", default="no")
    a("--stop-signal")
    a("--stop-timeout", type=int)
    a("--health-cmd")
    a("--health-interval")
    a("--health-retries", type=int, default=3)
    a("--health-timeout")
    a("--health-start-period")
    a("--no-healthcheck", action="store_true")
    a("--log-opt", action="append", default=[])
    a("--log-driver", default="json-file", choices=["json-file"])
    a("--pid")
    a("--ipc")
    a("--uts")
    a("--network", "--net", default="bridge")
    a("--runtime")
    a("--cgroup-parent")
    from pallet.cli.networks import run_flags

    run_flags(p)  # -p/-P, --network-alias, --ip, --dns*, --add-host, --mount, --volumes-from
    a("image")
    a("command", nargs=REMAINDER)


def _verbs(sub: Any, prefix: str = "") -> None:
    def verb(name: str, fn: Any, help: str, **kw: Any) -> Command:
        p: Command = sub.add_parser(name, help=help, add_help=name not in ("run", "create"), **kw)
        if name in ("run", "create"):
            p.add_argument("--help", action="help")
        p.set_defaults(func=fn)
        return p

    _run_flags(verb("run", cmd_run, "create and run a new container from an image"))
    _run_flags(verb("create", cmd_create, "create a new container"))
    p = verb("start", cmd_start, "start one or more stopped containers")
    p.add_argument("-a", "--attach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("containers", nargs="+")
    for name, fn, help in (
        ("stop", cmd_stop, "stop running containers"),
        ("restart", cmd_restart, "restart containers"),
    ):
        p = verb(name, fn, help)
        p.add_argument("-t", "--time", "--timeout", type=int)
        p.add_argument("-s", "--signal")
        p.add_argument("containers", nargs="+")
    p = verb("kill", cmd_kill, "kill running containers")
    p.add_argument("-s", "--signal", default="SIGKILL")
    p.add_argument("containers", nargs="+")
    p = verb("rm", cmd_rm, "remove containers")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-v", "--volumes", action="store_true")
    p.add_argument("containers", nargs="+")
    for name, fn, help in (
        ("wait", cmd_wait, "block until containers stop, then print their exit codes"),
        ("pause", cmd_pause, "pause all processes within containers"),
        ("unpause", cmd_unpause, "unpause all processes within containers"),
    ):
        verb(name, fn, help).add_argument("containers", nargs="+")
    p = verb("ps", cmd_ps, "list containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format")
    p.add_argument("-n", "--last", type=int)
    p.add_argument("-l", "--latest", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p = verb("logs", cmd_logs, "fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("container")
    p = verb("exec", cmd_exec, "execute a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("container")
    p.add_argument("command", nargs=REMAINDER)
    p = verb("attach", cmd_attach, "attach to a running container's stdio")
    p.add_argument("--no-stdin", action="store_true")
    p.add_argument("container")
    p = verb("inspect", cmd_inspect, "low-level information on containers")
    p.add_argument("-f", "--format")
    p.add_argument("containers", nargs="+")
    p = verb("rename", cmd_rename, "rename a container")
    p.add_argument("container")
    p.add_argument("new_name")
    p = verb("top", cmd_top, "display the running processes of a container")
    p.add_argument("container")
    p = verb("stats", cmd_stats, "live resource usage of containers")
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("--format")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("containers", nargs="*")
    p = verb("cp", cmd_cp, "copy files between a container and the local filesystem")
    p.add_argument("src")
    p.add_argument("dest")
    p = verb("port", cmd_port, "list port mappings of a container")
    p.add_argument("container")
    p.add_argument("port", nargs="?")
    p = verb("update", cmd_update, "update the resources of containers")
    for flag in ("--memory", "--memory-swap", "--memory-reservation", "--cpus", "--cpuset-cpus", "--restart"):
        p.add_argument(flag, *(["-m"] if flag == "--memory" else []))
    for flag in ("--cpu-shares", "--pids-limit", "--blkio-weight"):
        p.add_argument(flag, type=int)
    p.add_argument("containers", nargs="+")
    p = verb("events", cmd_events, "the containers' lifecycle events, recorded then live")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format")


def register(sub: Any) -> None:
    _verbs(sub)
    container = sub.add_parser("container", help="manage containers")
    container.set_defaults(help_parser=container)
    csub = container.add_subparsers(dest="container_command", metavar="COMMAND", parser_class=type(container))
    if "container" not in sys.argv[1:]:
        return  # `pallet`, --help, a typo replay every module into argparse: not this group's ~24 parsers (~15 ms)
    _verbs(csub)
    p = csub.add_parser("prune", help="remove all stopped containers")
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(func=cmd_prune)
    p = csub.add_parser("ls", help="list containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format")
    p.add_argument("-n", "--last", type=int)
    p.add_argument("-l", "--latest", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.set_defaults(func=cmd_ps)
