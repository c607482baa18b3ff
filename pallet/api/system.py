"""_ping, version, info, events, system/df."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

from pallet.api.server import API_VERSION, MIN_API_VERSION, Request
from pallet.engine.views import when


def ping(req: Request) -> None:
    extra = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}
    req.send(200, b"OK", "text/plain; charset=utf-8", extra)


def _pallet_version() -> str:
    try:
        from importlib.metadata import version

        return version("pallet")
    except Exception:  # noqa: BLE001 - not installed as a distribution: a source tree
        return "0.0.0-dev"


def _arch() -> str:
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def version(req: Request) -> dict[str, Any]:
    u = os.uname()
    v = _pallet_version()
    return {
        "Platform": {"Name": "Pallet Engine"},
        "Components": [
            {
                "Name": "Engine",
                "Version": v,
                "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION},
            }
        ],
        "Version": v,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "python" + platform.python_version(),
        "Os": "linux",
        "Arch": _arch(),
        "KernelVersion": u.release,
        "BuildTime": "",
    }


def info(req: Request) -> dict[str, Any]:
    eng = req.engine
    recs = eng.all()
    states = [eng.status(r) for r in recs]
    u = os.uname()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cgroup2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    return {
        "ID": "",
        "Containers": len(recs),
        "ContainersRunning": states.count("running"),
        "ContainersPaused": states.count("paused"),
        "ContainersStopped": len(recs) - states.count("running") - states.count("paused"),
        "Images": len(eng.images.all()),
        "Driver": eng.images.snapshotter_name,
        "DriverStatus": [],
        "DockerRootDir": str(req.server.root),
        "Plugins": {"Volume": [], "Network": [], "Log": ["json-file"]},
        "MemoryLimit": True,
        "SwapLimit": True,
        "CpuCfsPeriod": True,
        "CpuCfsQuota": True,
        "CPUShares": True,
        "CPUSet": True,
        "PidsLimit": True,
        "IPv4Forwarding": True,
        "Debug": req.server.debug,
        "NFd": len(os.listdir("/proc/self/fd")),
        "NGoroutines": 0,
        "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": "2" if cgroup2 else "1",
        "KernelVersion": u.release,
        "OperatingSystem": _os_name(),
        "OSType": "linux",
        "OSVersion": "",
        "Architecture": u.machine,
        "NCPU": os.cpu_count() or 1,
        "MemTotal": mem,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": [], "Mirrors": []},
        "Name": u.nodename,
        "Labels": [],
        "ExperimentalBuild": False,
        "ServerVersion": _pallet_version(),
        "Runtimes": {
            "pallet-runtime": {"path": "pallet-runtime"},
            "runc": {"path": "runc"},
            "crun": {"path": "crun"},
        },
        "DefaultRuntime": "pallet-runtime",
        "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": False},
        "LiveRestoreEnabled": True,
        "Isolation": "",
        "InitBinary": "tini-static",
        "SecurityOptions": ["name=seccomp,profile=builtin", "name=cgroupns"],
        "Warnings": [],
    }


def _os_name() -> str:
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "linux"


# -- events ----------------------------------------------------------------------------------------------


def _when(text: str | None, default: float) -> float:
    if not text:
        return default
    return when(text)


def docker_event(ev: dict[str, Any]) -> dict[str, Any]:
    attrs = ev["Actor"]["Attributes"]
    return {
        "status": ev["Action"],
        "id": ev["Actor"]["ID"],
        "from": attrs.get("image", ""),
        "Type": ev.get("Type", "container"),
        "Action": ev["Action"],
        "Actor": ev["Actor"],
        "scope": "local",
        "time": ev["time"],
        "timeNano": ev["timeNano"],
    }


def _keep(ev: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    attrs = ev["Actor"]["Attributes"]
    cid = ev["Actor"]["ID"]
    checks: dict[str, Callable[[str], bool]] = {
        "container": lambda v: v in (attrs.get("name"), cid) or cid.startswith(v),
        "event": lambda v: ev["Action"].split(":")[0] == v,
        "image": lambda v: attrs.get("image") == v,
        "type": lambda v: ev.get("Type", "container") == v,
        "label": lambda v: attrs.get(v.partition("=")[0]) == v.partition("=")[2] if "=" in v else v in attrs,
    }
    for k, vs in filters.items():
        if k not in checks:
            from pallet.errors import InvalidArgument

            raise InvalidArgument(f"invalid filter '{k}'")
        if not any(checks[k](v) for v in vs):
            return False
    return True


def events(req: Request) -> None:
    """Recorded events from ``since``; without ``until`` it goes on streaming new ones as they are
    appended (the log is a file that CLI, service and monitors append to: an inotify watch on its
    directory wakes us, as it does ``pallet events``)."""
    from pallet.engine import events as ev_log
    from pallet.linux import syscalls as s

    now = time.time()
    since = _when(req.query.get("since"), now)
    until = _when(req.query.get("until"), float("inf"))
    filters = req.filters()
    out = req.stream()
    path = ev_log.path(req.server.root)
    sysc = s.default()
    ino = sysc.inotify_init1(s.IN_NONBLOCK | s.IN_CLOEXEC)
    try:
        # watch before the first read: an append between the read and the watch would be missed
        sysc.inotify_add_watch(ino, str(path.parent), s.IN_MODIFY | s.IN_CREATE | s.IN_MOVED_TO)
        _follow(req, out, path, ino, since, until, filters)
    finally:
        os.close(ino)


def _follow(
    req: Request, out: Any, path: Any, ino: int, since: float, until: float, filters: dict[str, list[str]]
) -> None:
    import json

    from pallet.api.server import drain

    offset = 0
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        end = data.rfind(b"\n") + 1
        offset += end
        for raw in data[:end].splitlines():
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            t = ev["timeNano"] / 1e9
            if t < since:
                continue
            if t > until:
                out.close()
                return
            if _keep(ev, filters):
                out.json(docker_event(ev))
        left = until - time.time()
        if left < 0:
            out.close()
            return
        if _client_gone(req, None if left == float("inf") else left, ino):
            return
        drain(ino)


def _client_gone(req: Request, timeout: float | None, *fds: int) -> bool:
    """Sleep up to ``timeout``, or until one of ``fds`` is readable; True if the client hung up meanwhile."""
    import select
    import socket

    conn = req.handler.connection
    readable, _, _ = select.select([conn, *fds], [], [], timeout)
    if conn not in readable:
        return False
    try:
        return not conn.recv(1, socket.MSG_PEEK)
    except OSError:
        return True


def df(req: Request) -> dict[str, Any]:
    from pallet.api.containers import summary
    from pallet.api.images import summary as image_summary

    eng = req.engine
    usage = dict(eng.images.writable_snapshots())
    ctrs = []
    for rec in eng.all():
        s = summary(eng, rec)
        s["SizeRw"] = usage.get(rec.id, 0)
        ctrs.append(s)
    imgs = [image_summary(eng.images, i) for i in eng.images.all()]
    return {
        "LayersSize": sum(i["Size"] for i in imgs),
        "Images": imgs,
        "Containers": ctrs,
        "Volumes": [],
        "BuildCache": [],
    }
