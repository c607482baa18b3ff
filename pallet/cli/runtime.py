"""pallet-runtime: the OCI runtime command line, runc-compatible (verbs, flags, exit codes, JSON).

Each verb is a short function over pallet.runtime.container.Runtime. Errors print one line to
stderr (and, with --log, a JSON or text record that containerd's shim reads) and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from pallet import __version__
from pallet.errors import InvalidArgument, PalletError
from pallet.oci.runtime_spec import OCI_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:  # every container start pays for this module's imports: annotations only
    from typing import Any


def _id(c: argparse.ArgumentParser) -> None:
    c.add_argument("id")


def _create_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("-b", "--bundle", default=".")
    c.add_argument("--pid-file")
    c.add_argument("--console-socket")
    c.add_argument("--preserve-fds", type=int, default=0)
    c.add_argument("--no-pivot", action="store_true")
    c.add_argument("--no-new-keyring", action="store_true")
    c.add_argument("id")


def _run_args(c: argparse.ArgumentParser) -> None:
    _create_args(c)
    c.add_argument("-d", "--detach", action="store_true")
    c.add_argument("--keep", action="store_true", help="do not delete the container after it exits")


def _kill_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("-a", "--all", action="store_true")
    c.add_argument("id")
    c.add_argument("signal", nargs="?", default="SIGTERM")


def _delete_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("-f", "--force", action="store_true")
    c.add_argument("id")


def _list_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("-q", "--quiet", action="store_true")
    c.add_argument("-f", "--format", default="table", choices=["table", "json"])


def _ps_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("-f", "--format", default="table", choices=["table", "json"])
    c.add_argument("id")
    c.add_argument("ps_args", nargs=argparse.REMAINDER)


def _exec_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("-p", "--process")
    c.add_argument("-t", "--tty", action="store_true")
    c.add_argument("--console-socket")
    c.add_argument("--cwd")
    c.add_argument("-e", "--env", action="append", default=[])
    c.add_argument("-u", "--user")
    c.add_argument("--additional-gids", "-g", action="append", default=[])
    c.add_argument("-c", "--cap", action="append", default=[])
    c.add_argument("--no-new-privs", action="store_true")
    c.add_argument("--apparmor")
    c.add_argument("--process-label")
    c.add_argument("-d", "--detach", action="store_true")
    c.add_argument("--pid-file")
    c.add_argument("--preserve-fds", type=int, default=0)
    c.add_argument("--ignore-paused", action="store_true")
    c.add_argument("id")
    c.add_argument("args", nargs=argparse.REMAINDER)


def _spec_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--rootless", action="store_true")
    c.add_argument("-b", "--bundle", default=".")


def _events_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--stats", action="store_true")
    c.add_argument("--interval", default="5s")
    c.add_argument("id")


def _update_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("-r", "--resources")
    c.add_argument("--cpu-share", dest="cpu_shares", help=argparse.SUPPRESS)  # runc's spelling
    for flag in ("--memory", "--memory-reservation", "--memory-swap", "--kernel-memory", "--kernel-memory-tcp",
                 "--cpu-shares", "--cpu-quota", "--cpu-period", "--cpu-burst", "--cpu-rt-period", "--cpu-rt-runtime",
                 "--cpuset-cpus", "--cpuset-mems", "--blkio-weight", "--pids-limit", "--l3-cache-schema", "--mem-bw-schema"):  # fmt: skip
        c.add_argument(flag)
    c.add_argument("id")


# verb -> (help, arguments); the parser is built for the verb in use only (argparse is slow to build)
VERB_ARGS: dict[str, tuple[str, Any]] = {
    "create": ("create a container", _create_args),
    "run": ("create and start a container", _run_args),
    "start": ("start a created container", _id),
    "state": ("print a container's state as JSON", _id),
    "kill": ("send a signal to a container's init", _kill_args),
    "delete": ("delete a container", _delete_args),
    "list": ("list containers", _list_args),
    "ps": ("processes running in a container", _ps_args),
    "exec": ("run a process in a running container", _exec_args),
    "pause": ("freeze every process of a container", _id),
    "resume": ("thaw a paused container", _id),
    "spec": ("write a default config.json", _spec_args),
    "features": ("what this runtime supports, as JSON", lambda c: None),
    "events": ("resource usage and OOM events of a container", _events_args),
    "update": ("change the resource limits of a running container", _update_args),
}
_GLOBAL_WITH_VALUE = {"--root", "--log", "--log-format", "--criu", "--rootless"}


def _verb_of(argv: list[str]) -> str | None:
    """The first argument that is neither a global flag nor its value, if it names a verb."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _GLOBAL_WITH_VALUE:
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        return a if a in VERB_ARGS else None
    return None


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pallet-runtime", description="Pallet's OCI runtime (runc-compatible)")
    p.add_argument(
        "--root", default=None, help="state directory (default $PALLET_RUNTIME_ROOT or /run/pallet-runtime)"
    )
    p.add_argument("--log", default=None, help="log file (default: stderr only)")
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    p.add_argument("--debug", action="store_true")
    p.add_argument("--systemd-cgroup", action="store_true", help="use systemd to manage cgroups")
    p.add_argument("--criu", help=argparse.SUPPRESS)
    p.add_argument("--rootless", default="auto", help=argparse.SUPPRESS)
    p.add_argument("-v", "--version", action="store_true")
    sub = p.add_subparsers(dest="verb", metavar="COMMAND")
    for verb, (text, add_args) in VERB_ARGS.items():
        if only is None or verb == only:
            add_args(sub.add_parser(verb, help=text))
    return p


def default_root() -> str:
    """--root when not given: $PALLET_RUNTIME_ROOT, else runc's convention for our name."""
    if os.environ.get("PALLET_RUNTIME_ROOT"):
        return os.environ["PALLET_RUNTIME_ROOT"]
    if os.geteuid() != 0:
        return os.path.join(
            os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}", "pallet-runtime"
        )
    return "/run/pallet-runtime"


def parse_signal(text: str) -> int:
    t = text.upper()
    if t.isdigit():
        n = int(t)
        if 0 < n < signal.NSIG:
            return n
        raise InvalidArgument(f"invalid signal {text!r}")
    name = t if t.startswith("SIG") else "SIG" + t
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidArgument(f"invalid signal {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(_verb_of(argv)).parse_args(argv)
    if args.version:
        print(f"pallet-runtime version {__version__}\nspec: {OCI_VERSION}")
        return 0
    if not args.verb:
        _parser().print_help()
        return 1
    from pallet.runtime.container import Options, Runtime, RuntimeLog, describe

    log = RuntimeLog(args.log, args.log_format, args.debug)

    rt = Runtime(
        Options(
            root=args.root or default_root(), systemd_cgroup=args.systemd_cgroup, debug=args.debug, log=log
        )
    )
    try:
        return int(VERBS[args.verb](rt, args) or 0)
    except (PalletError, OSError) as e:
        return _fail(log, describe(e), e if args.debug else None)
    except KeyboardInterrupt:
        return 130


def _fail(log: Any, msg: str, exc: BaseException | None) -> int:
    if exc is not None:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    log("error", msg)
    print(f"pallet-runtime: {msg}", file=sys.stderr)
    return 1


def _create_request(args: argparse.Namespace, foreground: bool = False) -> Any:
    from pallet.runtime.container import CreateRequest

    return CreateRequest(
        container_id=args.id,
        bundle=args.bundle,
        pid_file=os.path.abspath(args.pid_file) if args.pid_file else None,
        console_socket=args.console_socket,
        preserve_fds=args.preserve_fds,
        no_pivot=args.no_pivot,
        no_new_keyring=args.no_new_keyring,
        foreground_console=foreground,
    )


def cmd_create(rt: Any, args: argparse.Namespace) -> int:
    rt.create(_create_request(args))
    return 0


def cmd_start(rt: Any, args: argparse.Namespace) -> int:
    rt.start(args.id)
    return 0


def cmd_run(rt: Any, args: argparse.Namespace) -> int:
    from pallet.runtime import container

    foreground = not args.detach
    st, sd, master = rt.create(
        _create_request(args, foreground=foreground and not args.console_socket), subreaper=foreground
    )
    try:
        rt.start(args.id)
    except BaseException:
        rt.delete(args.id, force=True)
        raise
    if args.detach:
        return 0
    try:
        return container.wait_foreground(st.pid, master)
    finally:
        if not args.keep:
            try:
                rt.delete(args.id, force=True)
            except PalletError:
                pass


def cmd_state(rt: Any, args: argparse.Namespace) -> int:
    print(json.dumps(rt.state(args.id), indent=2))
    return 0


def cmd_kill(rt: Any, args: argparse.Namespace) -> int:
    rt.kill(args.id, parse_signal(args.signal), all_processes=args.all)
    return 0


def cmd_delete(rt: Any, args: argparse.Namespace) -> int:
    rt.delete(args.id, force=args.force)
    return 0


def cmd_list(rt: Any, args: argparse.Namespace) -> int:
    from pallet.runtime.state import list_ids

    states = []
    for cid in list_ids(rt.opts.root):
        try:
            states.append(rt.state(cid))
        except PalletError:
            continue
    if args.quiet:
        for s in states:
            print(s["id"])
    elif args.format == "json":
        print(json.dumps(states))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"]) for s in states]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_ps(rt: Any, args: argparse.Namespace) -> int:
    st, _sd, _status = rt.load(args.id)
    mgr = rt._cgroup(st)
    pids = (
        sorted(mgr.pids()) if mgr is not None and mgr.exists() else ([st.pid] if _status != "stopped" else [])
    )
    if args.format == "json":
        print(json.dumps(pids))
        return 0
    import subprocess

    ps_args = [a for a in args.ps_args if a != "--"] or ["-ef"]
    out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=True).stdout.splitlines()
    header = out[0]
    try:
        col = header.split().index("PID")
    except ValueError:
        raise InvalidArgument(f"ps {' '.join(ps_args)}: output has no PID column") from None
    print(header)
    for line in out[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            print(line)
    return 0


def _exec_process(rt: Any, args: argparse.Namespace) -> dict[str, Any]:
    from pallet.runtime import container

    if args.process:
        return container.load_process_file(args.process)
    if not args.args:
        raise InvalidArgument("exec: give --process FILE or the command to run")
    st, _sd, _ = rt.load(args.id)
    proc: dict[str, Any] = json.loads(json.dumps(st.config.get("process") or {}))
    proc["args"] = [a for a in args.args if a != "--"] if args.args[0] == "--" else args.args
    proc["terminal"] = args.tty
    if args.cwd:
        proc["cwd"] = args.cwd
    proc["env"] = (proc.get("env") or []) + args.env
    if args.user:
        uid, _, gid = args.user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise InvalidArgument(f"--user {args.user!r}: want UID[:GID] as numbers")
        proc["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    if args.additional_gids:
        proc.setdefault("user", {})["additionalGids"] = [int(g) for g in args.additional_gids]
    if args.cap:
        capsets = proc.setdefault("capabilities", {})
        for name in args.cap:
            for s in ("bounding", "effective", "permitted", "ambient"):
                capsets.setdefault(s, [])
                if name not in capsets[s]:
                    capsets[s].append(name)
    if args.no_new_privs:
        proc["noNewPrivileges"] = True
    if args.apparmor:
        proc["apparmorProfile"] = args.apparmor
    return proc


def cmd_exec(rt: Any, args: argparse.Namespace) -> int:
    from pallet.runtime import container

    proc = _exec_process(rt, args)
    foreground = not args.detach
    relay = foreground and bool(proc.get("terminal")) and not args.console_socket
    pid, master = rt.exec(
        args.id,
        proc,
        console_socket=args.console_socket,
        pid_file=os.path.abspath(args.pid_file) if args.pid_file else None,
        preserve_fds=args.preserve_fds,
        foreground=foreground,
        relay_console=relay,
    )
    if not foreground:
        return 0
    return container.wait_foreground(pid, master)


def cmd_pause(rt: Any, args: argparse.Namespace) -> int:
    rt.pause(args.id)
    return 0


def cmd_resume(rt: Any, args: argparse.Namespace) -> int:
    rt.resume(args.id)
    return 0


def cmd_spec(rt: Any, args: argparse.Namespace) -> int:
    from pallet.oci.runtime_spec import default_spec

    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise InvalidArgument(f"{path} exists: remove it first")
    with open(path, "w") as f:
        json.dump(default_spec(args.rootless), f, indent=2)
        f.write("\n")
    return 0


def cmd_features(rt: Any, args: argparse.Namespace) -> int:
    from pallet.linux.syscalls import default
    from pallet.oci.runtime_spec import HOOK_KINDS
    from pallet.runtime import caps, mountopts, seccomp
    from pallet.runtime.init import NS_FLAGS

    features = {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": list(HOOK_KINDS),
        "mountOptions": sorted(set(mountopts.FLAGS) | set(mountopts.PROPAGATION) | set(mountopts.RECURSIVE)),
        "linux": {
            "namespaces": sorted(NS_FLAGS),
            "capabilities": caps.NAMES[: caps.last_cap() + 1],
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": seccomp.features(default()),
            "apparmor": {"enabled": os.path.exists("/sys/kernel/security/apparmor")},
            "selinux": {"enabled": os.path.exists("/sys/fs/selinux/enforce")},
            "mountExtensions": {"idmap": {"enabled": True}},
        },
        "annotations": {"org.opencontainers.runtime-spec.features": "pallet-runtime"},
    }
    print(json.dumps(features, indent=2))
    return 0


def cmd_events(rt: Any, args: argparse.Namespace) -> int:
    st, _sd, status = rt.load(args.id)
    mgr = rt._cgroup(st)
    if mgr is None or not mgr.exists():
        raise InvalidArgument(f"container {args.id!r}: events: it has no cgroup ({status})")
    if args.stats:
        print(json.dumps({"type": "stats", "id": args.id, "data": mgr.stats()}))
        return 0
    from pallet.runtime.cgroups import oom

    # runc's shape: one JSON object a line, stats every interval and OOMs as they happen
    for event in oom.stream(mgr, _duration(args.interval)):
        print(json.dumps({"id": args.id, **event}), flush=True)
    return 0


def _duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for u in ("ms", "s", "m", "h"):
        if text.endswith(u) and text[: -len(u)].replace(".", "", 1).isdigit():
            return float(text[: -len(u)]) * units[u]
    raise InvalidArgument(f"--interval {text!r}: want a duration like 5s or 500ms")


def cmd_update(rt: Any, args: argparse.Namespace) -> int:
    st, _sd, status = rt.load(args.id)
    if status == "stopped":
        raise InvalidArgument(f"container {args.id!r}: cannot update: it is stopped")
    if args.resources:
        try:
            data = sys.stdin.read() if args.resources == "-" else open(args.resources).read()
            res = json.loads(data)
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"--resources {args.resources}: {e}") from None
    else:
        res = _resources_from_flags(args)
    rt._cgroup(st).set(res)
    return 0


def _resources_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    def num(v: str | None, flag: str) -> int | None:
        if v is None:
            return None
        try:
            return _size(v)
        except ValueError:
            raise InvalidArgument(f"{flag} {v!r}: not a number") from None

    res: dict[str, Any] = {}
    mem = {k: num(getattr(args, a), f) for k, a, f in (("limit", "memory", "--memory"), ("reservation", "memory_reservation", "--memory-reservation"), ("swap", "memory_swap", "--memory-swap"))}  # fmt: skip
    if any(v is not None for v in mem.values()):
        res["memory"] = {k: v for k, v in mem.items() if v is not None}
    cpu = {k: num(getattr(args, a), f) for k, a, f in (("shares", "cpu_shares", "--cpu-shares"), ("quota", "cpu_quota", "--cpu-quota"), ("period", "cpu_period", "--cpu-period"), ("burst", "cpu_burst", "--cpu-burst"), ("realtimePeriod", "cpu_rt_period", "--cpu-rt-period"), ("realtimeRuntime", "cpu_rt_runtime", "--cpu-rt-runtime"))}  # fmt: skip
    cpu = {k: v for k, v in cpu.items() if v is not None}
    if args.cpuset_cpus is not None:
        cpu["cpus"] = args.cpuset_cpus
    if args.cpuset_mems is not None:
        cpu["mems"] = args.cpuset_mems
    if cpu:
        res["cpu"] = cpu
    if args.pids_limit is not None:
        res["pids"] = {"limit": num(args.pids_limit, "--pids-limit")}
    if args.blkio_weight is not None:
        res["blockIO"] = {"weight": num(args.blkio_weight, "--blkio-weight")}
    return res


def _size(v: str) -> int:
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = v.strip().lower().rstrip("b")
    if t and t[-1] in mult:
        return int(float(t[:-1]) * mult[t[-1]])
    return int(t)


VERBS = {
    "create": cmd_create, "start": cmd_start, "run": cmd_run, "state": cmd_state, "kill": cmd_kill,
    "delete": cmd_delete, "list": cmd_list, "ps": cmd_ps, "exec": cmd_exec, "pause": cmd_pause,
    "resume": cmd_resume, "spec": cmd_spec, "features": cmd_features, "events": cmd_events, "update": cmd_update,
}  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
