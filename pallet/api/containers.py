"""Container endpoints (all but the streams, in streams.py): each translates docker's JSON to the
engine's calls, the same calls the CLI verbs make, and the engine's records back to docker's JSON."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from pallet.api.server import HTTPError, Request
from pallet.engine.views import (
    MOUNTPOINTS,
    command_text,
    container_inspect,
    network_settings,
    port_rows,
    ps_filter,
    restart_policy,
    status_text,
)
from pallet.errors import FailedPrecondition, InvalidArgument, NotFound

# the HostConfig fields the engine acts on (pallet.engine.spec and the monitor)
HOST_KEYS = (
    "AutoRemove Privileged ReadonlyRootfs CapAdd CapDrop SecurityOpt Sysctls Tmpfs ShmSize Memory MemorySwap "
    "MemoryReservation NanoCpus CpuShares CpusetCpus PidsLimit BlkioWeight BlkioDeviceReadBps "
    "BlkioDeviceWriteBps OomScoreAdj Ulimits Init RestartPolicy LogConfig PidMode IpcMode UTSMode "
    "NetworkMode Runtime CgroupParent Binds"
).split()
CONFIG_KEYS = (
    "Image Cmd Entrypoint Env WorkingDir User Hostname Tty OpenStdin AttachStdin StopSignal Labels "
    "Healthcheck Volumes"
).split()


def engine_config(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """docker's create body → the engine's (Config, HostConfig), checked as the CLI checks its flags."""
    from pallet.engine.spec import capabilities, parse_signal

    cfg = {k: body[k] for k in CONFIG_KEYS if body.get(k) is not None}
    if not cfg.get("Image"):
        raise InvalidArgument("Config.Image is required")
    hc = body.get("HostConfig") or {}
    host: dict[str, Any] = {k: hc[k] for k in HOST_KEYS if hc.get(k) not in (None, "", [], {})}
    host["Devices"] = [
        f"{d['PathOnHost']}:{d.get('PathInContainer') or d['PathOnHost']}:{d.get('CgroupPermissions') or 'rwm'}"
        for d in hc.get("Devices") or []
    ]
    _network_config(body, hc, cfg, host)
    log = host.get("LogConfig") or {}
    if log.get("Type") not in (None, "", "json-file"):
        raise InvalidArgument(f"logging driver {log['Type']!r} is not supported (json-file only)")
    host["LogConfig"] = {"Type": "json-file", "Config": log.get("Config") or {}}
    restart = host.get("RestartPolicy") or {}
    name = restart.get("Name") or "no"
    count = restart.get("MaximumRetryCount") or 0
    host["RestartPolicy"] = restart_policy(f"{name}:{count}" if name == "on-failure" and count else name)
    if host.get("AutoRemove") and name != "no":
        raise InvalidArgument("Conflicting options: RestartPolicy and AutoRemove")
    if body.get("StopTimeout") is not None:
        host["StopTimeout"] = body["StopTimeout"]
    capabilities(host.get("CapAdd") or [], host.get("CapDrop") or [], bool(host.get("Privileged")))
    if cfg.get("StopSignal"):
        parse_signal(cfg["StopSignal"])
    if isinstance(cfg.get("Cmd"), str):
        cfg["Cmd"] = [cfg["Cmd"]]
    if isinstance(cfg.get("Entrypoint"), str):
        cfg["Entrypoint"] = [cfg["Entrypoint"]]
    return cfg, host


def _network_config(
    body: dict[str, Any], hc: dict[str, Any], cfg: dict[str, Any], host: dict[str, Any]
) -> None:
    """docker's PortBindings, Mounts, NetworkingConfig… → the fields pallet.cli.networks.apply fills
    from flags (PortSpecs, MountSpecs, Aliases, IPAddress), which the engine reads."""
    from pallet.engine.network import ports

    specs = []
    for key, binds in (hc.get("PortBindings") or {}).items():
        for b in binds or [{}]:
            hp, hip = (b or {}).get("HostPort") or "", (b or {}).get("HostIp") or ""
            specs.append(f"{hip}:{hp}:{key}" if hip else f"{hp}:{key}" if hp else key)
    for sp in specs:
        ports.parse(sp)
    exposed = dict(body.get("ExposedPorts") or {})
    for sp in specs:
        for m in ports.parse(sp):
            exposed[f"{m['containerPort']}/{m['protocol']}"] = {}
    if exposed:
        cfg["ExposedPorts"] = exposed
        host["ExposedPorts"] = exposed
    mounts = []
    for m in hc.get("Mounts") or []:
        parts = [f"type={m.get('Type') or 'volume'}", f"target={m['Target']}"]
        if m.get("Source"):
            parts.append(f"source={m['Source']}")
        if m.get("ReadOnly"):
            parts.append("readonly")
        mounts.append(",".join(parts))
    mode = host.get("NetworkMode") or "default"
    eps = ((body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}).get(mode) or {}
    host.update(
        NetworkMode="bridge" if mode == "default" else mode,
        PortSpecs=specs, PublishAllPorts=bool(hc.get("PublishAllPorts")), Aliases=eps.get("Aliases") or [],
        IPAddress=(eps.get("IPAMConfig") or {}).get("IPv4Address") or "", ExtraHosts=hc.get("ExtraHosts") or [],
        Dns=hc.get("Dns") or [], DnsSearch=hc.get("DnsSearch") or [], DnsOptions=hc.get("DnsOptions") or [],
        MountSpecs=mounts, VolumesFrom=hc.get("VolumesFrom") or [],
    )  # fmt: skip


def create(req: Request) -> dict[str, Any]:
    body = req.body.json()
    cfg, host = engine_config(body)
    rec = req.engine.create(cfg, host, req.query.get("name") or None)
    req.send(201, json.dumps({"Id": rec.id, "Warnings": []}).encode())
    return {}


# -- reading ----------------------------------------------------------------------------------------------


def summary(eng: Any, rec: Any) -> dict[str, Any]:
    """One container as GET /containers/json lists it."""
    cfg = rec.config["Config"]
    net = rec.config["HostConfig"].get("NetworkMode") or "none"
    return {
        "Id": rec.id,
        "Names": ["/" + rec.name],
        "Image": cfg.get("Image", ""),
        "ImageID": rec.config.get("Image", ""),
        "Command": command_text(cfg),
        "Created": int(rec.created),
        "Ports": _ports(eng, rec),
        "Labels": cfg.get("Labels") or {},
        "State": eng.status(rec),
        "Status": status_text(eng, rec),
        "HostConfig": {"NetworkMode": net},
        "NetworkSettings": {"Networks": {n: _endpoint() | ep for n, ep in _networks_of(eng, rec).items()}},
        "Mounts": rec.config.get("Mounts") or [],
    }


def _networks_of(eng: Any, rec: Any) -> dict[str, Any]:
    nets: dict[str, Any] = network_settings(eng, rec)["Networks"]
    return nets


def _ports(eng: Any, rec: Any) -> list[dict[str, Any]]:
    return [
        {"IP": m["hostIP"] or "0.0.0.0", "PrivatePort": int(m["containerPort"]), "PublicPort": int(m["hostPort"]),
         "Type": m["protocol"]}
        for m in port_rows(eng, rec)
    ]  # fmt: skip


def _endpoint() -> dict[str, Any]:
    return {
        "IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": "", "EndpointID": "", "Gateway": "",
        "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0, "MacAddress": "",
    }  # fmt: skip


def list_containers(req: Request) -> list[dict[str, Any]]:
    eng = req.engine
    recs = eng.all()
    filters = req.filters()
    if not req.flag("all"):
        recs = [r for r in recs if eng.status(r) in ("running", "paused", "restarting")]
    flat = [f"{k}={v}" for k, vs in filters.items() for v in vs if k != "label"]
    labels = [f"label={v}" for v in filters.get("label", [])]
    # docker: values of one key are alternatives, except labels, which must all match
    recs = [r for r in recs if ps_filter(eng, r, flat) and all(ps_filter(eng, r, [x]) for x in labels)]
    limit = req.number("limit", -1)
    if limit is not None and limit > 0:
        recs = recs[:limit]
    out = [summary(eng, r) for r in recs]
    if req.flag("size"):
        usage = dict(eng.images.writable_snapshots())
        for o in out:
            o["SizeRw"] = usage.get(o["Id"], 0)
    return out


def inspect(req: Request) -> dict[str, Any]:
    eng = req.engine
    rec = eng.get(req.args["id"])
    d = container_inspect(eng, rec)
    net = d["HostConfig"].get("NetworkMode") or "none"
    ns = d.get("NetworkSettings") or {}
    ns["Networks"] = {name: _endpoint() | ep for name, ep in (ns.get("Networks") or {}).items()}
    d["NetworkSettings"] = {"Bridge": "", "SandboxID": "", "HairpinMode": False} | _endpoint() | ns
    d["AppArmorProfile"] = ""
    d["ExecIDs"] = [x for x, e in req.server.execs.items() if e.cid == rec.id and e.running] or None
    d["GraphDriver"] = {"Name": d.get("Driver", ""), "Data": {}}
    d["MountLabel"] = d["ProcessLabel"] = ""
    defaults = {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
                "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": [],
                "Cmd": None, "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None,
                "OnBuild": None, "Labels": {}}  # fmt: skip
    d["Config"] = defaults | {k: v for k, v in d["Config"].items() if v is not None}
    host_defaults = {"Binds": None, "NetworkMode": net, "PortBindings": {}, "RestartPolicy": {"Name": "no"},
                     "AutoRemove": False, "Privileged": False, "ReadonlyRootfs": False, "Memory": 0,
                     "LogConfig": {"Type": "json-file", "Config": {}}}  # fmt: skip
    d["HostConfig"] = host_defaults | {k: v for k, v in d["HostConfig"].items() if v is not None}
    return d


# -- state changes ----------------------------------------------------------------------------------------


def start(req: Request) -> None:
    from pallet.engine.containers import StartError

    eng = req.engine
    rec = eng.get(req.args["id"])
    if eng.status(rec) in ("running", "restarting"):
        raise HTTPError(304, "container already started")
    waiting = req.server.hub.take(rec.id)
    try:
        _start(eng, rec, waiting)
    except StartError:
        if rec.config["HostConfig"].get("AutoRemove"):
            eng.remove(rec.id, force=True, volumes=True)  # as docker's daemon and `pallet run --rm`
        raise
    finally:
        req.server.hub.started()
    return None


def _start(eng: Any, rec: Any, waiting: list[Any]) -> None:
    from pallet.engine import attach

    if not waiting:
        eng.start(rec.id)
        return
    # someone attached before the start (docker run): the monitor holds the process until they are in
    try:
        rec, sync = eng.start(rec.id, attach_wait=True)
    except Exception as e:
        for p in waiting:
            p.give(None, str(e))
        raise
    for p in waiting:
        p.give(attach.connect(eng.sock(rec.id), b"a%d" % p.stdin))
    eng.finish_start(rec, sync)


def stop(req: Request) -> None:
    eng = req.engine
    rec = eng.get(req.args["id"])
    if eng.status(rec) not in ("running", "restarting", "paused"):
        raise HTTPError(304, "container already stopped")
    eng.stop(rec.id, req.number("t"), req.query.get("signal") or None)
    return None


def restart(req: Request) -> None:
    eng = req.engine
    rec = eng.get(req.args["id"])
    eng.stop(rec.id, req.number("t"), req.query.get("signal") or None)
    eng.start(rec.id)
    req.server.hub.started()
    return None


def kill(req: Request) -> None:
    req.engine.kill(req.args["id"], req.query.get("signal") or "SIGKILL")
    return None


def wait(req: Request) -> None:
    """``not-running`` (default): now if it is not running; ``next-exit``: the exit after the next
    start (docker run asks before it starts); ``removed``: that, and the record gone (--rm)."""
    eng = req.engine
    cond = req.query.get("condition") or "not-running"
    if cond not in ("not-running", "next-exit", "removed"):
        raise InvalidArgument(f"invalid condition: {cond!r}")
    rec = eng.get(req.args["id"])
    # the headers go at once: docker's client waits for them before it starts the container
    out = req.stream()
    out.json(_wait(req, eng, rec, cond))
    out.close()


def _wait(req: Request, eng: Any, rec: Any, cond: str) -> dict[str, Any]:
    code = int(rec.state.get("ExitCode", 0))
    started = rec.state.get("StartedAt")
    hub = req.server.hub
    if cond != "not-running":
        # wait for a start: by us, or by a CLI beside us (the hub wakes us on its database writes)
        with hub.cond:
            while True:
                try:
                    rec = eng.get(rec.id)
                except NotFound:  # started, exited and removed (--rm) before we looked again
                    return {"StatusCode": _died(req, rec.id, code), "Error": None}
                if eng.status(rec) in ("running", "paused", "restarting"):
                    break
                if rec.state.get("StartedAt") != started and eng.status(rec) == "exited":
                    break  # started and already gone
                if cond == "removed" and eng.status(rec) in ("exited", "dead") and rec.state.get("StartedAt"):
                    break
                hub.cond.wait()
    try:
        code = eng.wait(rec.id)
    except (NotFound, OSError, FailedPrecondition):
        # the monitor went away as we asked (it exits with its container): the record has the code,
        # or, for an --rm container its monitor removed meanwhile, the event log's "die"
        try:
            code = int(eng.get(rec.id).state.get("ExitCode", code))
        except NotFound:
            code = _died(req, rec.id, code)
    if cond == "removed":
        deadline = time.monotonic() + 30
        with hub.cond:
            while time.monotonic() < deadline:
                try:
                    r = eng.get(rec.id)
                    code = int(r.state.get("ExitCode", code))
                except NotFound:
                    break
                if not r.config["HostConfig"].get("AutoRemove"):
                    break  # nobody will remove it: docker would wait for a rm; we answer at the exit
                # the monitor removes it right after the exit; its delete wakes the hub
                hub.cond.wait(deadline - time.monotonic())
    return {"StatusCode": code, "Error": None}


def _died(req: Request, cid: str, default: int) -> int:
    from pallet.engine import events

    for ev in reversed(events.read(req.server.root)):
        if ev["Actor"]["ID"] == cid and ev["Action"] == "die":
            return int(ev["Actor"]["Attributes"].get("exitCode", default))
    return default


def remove(req: Request) -> None:
    req.engine.remove(req.args["id"], req.flag("force"), req.flag("v"))
    return None


def rename(req: Request) -> None:
    name = req.query.get("name") or ""
    if not name:
        raise InvalidArgument("name is required")
    req.engine.rename(req.args["id"], name)
    return None


def pause(req: Request) -> None:
    req.engine.pause(req.args["id"])
    return None


def unpause(req: Request) -> None:
    req.engine.unpause(req.args["id"])
    return None


def top(req: Request) -> dict[str, Any]:
    header, rows = req.engine.top(req.args["id"])
    return {"Titles": header, "Processes": rows}


def prune(req: Request) -> dict[str, Any]:
    eng = req.engine
    usage = dict(eng.images.writable_snapshots())
    deleted, freed = [], 0
    for rec in eng.all():
        if eng.status(rec) in ("exited", "created", "dead"):
            freed += usage.get(rec.id, 0)
            eng.remove(rec.id, force=True)
            deleted.append(rec.id)
    return {"ContainersDeleted": deleted or None, "SpaceReclaimed": freed}


def update(req: Request) -> dict[str, Any]:
    body = req.body.json()
    flags: list[str] = []
    host: dict[str, Any] = {}
    for key, flag in (
        ("Memory", "--memory"),
        ("MemorySwap", "--memory-swap"),
        ("MemoryReservation", "--memory-reservation"),
        ("CpuShares", "--cpu-share"),
        ("CpusetCpus", "--cpuset-cpus"),
        ("PidsLimit", "--pids-limit"),
        ("BlkioWeight", "--blkio-weight"),
        ("CpuQuota", "--cpu-quota"),
        ("CpuPeriod", "--cpu-period"),
    ):
        if body.get(key):
            host[key] = body[key]
            flags += [flag, str(body[key])]
    if body.get("NanoCpus"):
        host["NanoCpus"] = body["NanoCpus"]
        flags += ["--cpu-period", "100000", "--cpu-quota", str(body["NanoCpus"] * 100000 // 1_000_000_000)]
    if body.get("RestartPolicy", {}).get("Name"):
        rp = body["RestartPolicy"]
        count = rp.get("MaximumRetryCount") or 0
        host["RestartPolicy"] = restart_policy(
            f"{rp['Name']}:{count}" if rp["Name"] == "on-failure" and count else rp["Name"]
        )
    req.engine.update(req.args["id"], flags, host)
    return {"Warnings": []}


# -- stats ----------------------------------------------------------------------------------------------------


def _system_cpu() -> int:
    """/proc/stat's cpu line in nanoseconds, as docker's system_cpu_usage."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:8]
    return sum(int(x) for x in fields) * (10**9 // os.sysconf("SC_CLK_TCK"))


def docker_stats(rec: Any, data: dict[str, Any], pre: dict[str, Any] | None) -> dict[str, Any]:
    cpu = data.get("cpu", {}).get("usage", {})
    mem = data.get("memory", {}).get("usage", {})
    host_mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = mem.get("limit", 0)
    ncpu = os.cpu_count() or 1
    cpu_stats = {
        "cpu_usage": {
            "total_usage": cpu.get("total", 0),
            "percpu_usage": cpu.get("percpu") or None,
            "usage_in_kernelmode": cpu.get("kernel", 0),
            "usage_in_usermode": cpu.get("user", 0),
        },
        "system_cpu_usage": _system_cpu(),
        "online_cpus": ncpu,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }
    empty_cpu = {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": ncpu,
                 "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}  # fmt: skip
    return {
        "read": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "preread": (pre or {}).get("read", "0001-01-01T00:00:00Z"),
        "id": rec.id,
        "name": "/" + rec.name,
        "pids_stats": {"current": data.get("pids", {}).get("current", 0)},
        "blkio_stats": {"io_service_bytes_recursive": None},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_stats,
        "precpu_stats": (pre or {}).get("cpu_stats", empty_cpu),
        "memory_stats": {
            "usage": mem.get("usage", 0),
            "max_usage": mem.get("max", 0),
            "limit": limit if 0 < limit < host_mem else host_mem,
            "stats": data.get("memory", {}).get("raw") or {},
        },
        "networks": {},
    }


def stats(req: Request) -> None:
    eng = req.engine
    rec = eng.get(req.args["id"])
    streaming = req.flag("stream", True)
    one_shot = req.flag("one-shot")
    if eng.status(rec) != "running":
        # docker answers a stopped container with zeroed stats
        data: dict[str, Any] = {}
        req.send(200, json.dumps(docker_stats(rec, data, None)).encode())
        return
    pre = None
    if not streaming and not one_shot:
        pre = docker_stats(rec, eng.stats(rec.id), None)  # two samples: docker's CPU % needs a pair
        time.sleep(1.0)
    out = req.stream()
    while True:
        try:
            cur = docker_stats(rec, eng.stats(rec.id), pre)
        except Exception:  # noqa: BLE001 - the container went away: the stream ends
            break
        out.json(cur)
        if not streaming:
            break
        pre = cur
        from pallet.api.system import _client_gone

        if _client_gone(req, 1.0):
            return
    out.close()


# -- files --------------------------------------------------------------------------------------------------


def changes(req: Request) -> list[dict[str, Any]]:
    from pallet.image.rootfs import diff

    eng = req.engine
    rec = eng.get(req.args["id"])
    kinds = {"C": 0, "A": 1, "D": 2}
    return [{"Path": p, "Kind": kinds[k]} for k, p in diff(eng.images, rec.id, MOUNTPOINTS)]


def export(req: Request) -> None:
    from pallet.api.images import _Writer
    from pallet.image.rootfs import export as export_rootfs

    eng = req.engine
    rec = eng.get(req.args["id"])
    out = req.stream("application/x-tar")
    export_rootfs(eng.images, rec.id, _Writer(out))  # type: ignore[arg-type]
    out.close()


def _archive(
    req: Request, verb: str, stat_only: bool = False
) -> tuple[Any, Any, bool, subprocess.Popen[bytes]]:
    """Start pallet.api.archive on the container's side (its snapshot mounted for the call if it is
    not running)."""
    path = req.query.get("path") or ""
    if not path:
        raise InvalidArgument("path is required")
    eng = req.engine
    from pallet.engine import copy

    rec = eng.get(req.args["id"])
    w, mounted = copy.where(eng, rec)
    env = os.environ | ({"PALLET_ARCHIVE_STAT_ONLY": "1"} if stat_only else {})
    try:
        p = subprocess.Popen(
            [sys.executable, "-m", "pallet.api.archive", verb, json.dumps(vars(w)), path],
            stdin=subprocess.PIPE if verb == "put" else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
    except BaseException:
        _release(req, rec, mounted)
        raise
    return rec, w, mounted, p


def _release(req: Request, rec: Any, mounted: bool) -> None:
    if mounted:
        req.engine._unmount_rootfs(rec.id)


def _archive_failed(req: Request, rec: Any, p: subprocess.Popen[bytes], missing: str) -> None:
    assert p.stderr is not None
    err = p.stderr.read().decode(errors="replace").strip().splitlines()
    code = p.wait()
    if code == 2:
        raise NotFound(missing)
    raise InvalidArgument(f"container {rec.name}: archive: {err[-1] if err else f'exit {code}'}")


def _archive_stat(req: Request, stat_only: bool) -> tuple[Any, bool, subprocess.Popen[bytes], str]:
    rec, _, mounted, p = _archive(req, "get", stat_only)
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line:
        try:
            _archive_failed(
                req, rec, p, f"Could not find the file {req.query['path']} in container {rec.name}"
            )
        finally:
            _release(req, rec, mounted)
    return rec, mounted, p, base64.b64encode(line.strip()).decode()


def archive_head(req: Request) -> None:
    rec, mounted, p, hdr = _archive_stat(req, stat_only=True)
    p.wait()
    _release(req, rec, mounted)
    req.send(200, b"", "application/x-tar", {"X-Docker-Container-Path-Stat": hdr})


def archive_get(req: Request) -> None:
    rec, mounted, p, hdr = _archive_stat(req, stat_only=False)
    assert p.stdout is not None
    try:
        out = req.stream("application/x-tar", {"X-Docker-Container-Path-Stat": hdr})
        while chunk := p.stdout.read1(1 << 16):  # type: ignore[attr-defined]  # a BufferedReader
            out.write(chunk)
        if p.wait() == 0:
            out.close()  # a failure midway leaves the answer unfinished: the client sees an error
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        _release(req, rec, mounted)


def archive_put(req: Request) -> None:
    """The body (a tar) goes to pallet.api.archive, which extracts it inside the container's root."""
    rec, _, mounted, p = _archive(req, "put")
    assert p.stdin is not None
    try:
        try:
            while chunk := req.body.read(1 << 16):
                p.stdin.write(chunk)
            p.stdin.close()
        except BrokenPipeError:
            pass  # it refused: its exit says why
        if p.wait() != 0:
            _archive_failed(
                req, rec, p, f"Could not find the directory {req.query['path']} in container {rec.name}"
            )
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        _release(req, rec, mounted)
    req.send(200, b"", "text/plain")  # docker answers 200 here (docker-py checks for it)
