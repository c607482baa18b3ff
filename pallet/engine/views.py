"""What the engine's objects look like to docker's tools: the JSON of ``inspect`` and of the API's lists,
``ps``'s status words, docker's filters and its time and duration syntax. The CLI and the API both
serialise through these functions, so ``pallet inspect`` and ``GET /containers/{id}/json`` agree.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from datetime import UTC, datetime

from pallet.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any

# the image config keys ``commit`` carries over from a container
IMAGE_CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "Volumes", "StopSignal")

# what the engine mounts over a container's root, as docker's init layer: never part of its changes
MOUNTPOINTS = frozenset({"etc/hostname", "etc/hosts", "etc/resolv.conf", "sbin/docker-init"})


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, the words docker prints before "ago"."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def since(when: datetime | None) -> str:
    if when is None:
        return "N/A"
    return human_duration((datetime.now(UTC) - when).total_seconds()) + " ago"


def duration(text: str | None, flag: str) -> int:
    """Go's time.ParseDuration subset (h m s ms us ns), in nanoseconds."""
    if not text:
        return 0
    import re

    units = {"h": 3600e9, "m": 60e9, "s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise InvalidArgument(f'invalid argument "{text}" for "{flag}" flag: time: invalid duration "{text}"')
    return int(sum(float(a) * units[b] for a, b in parts))


def parse_time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text[:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    except ValueError:
        return None


def when(text: str) -> float:
    """docker's --since/--until: a unix timestamp, an RFC 3339 time, or a duration ago (10m, 1h30m)."""
    import time

    try:
        return float(text)
    except ValueError:
        pass
    t = parse_time(text if "." in text else text.rstrip("Z") + ".0Z")
    if t is not None:
        return t.timestamp()
    return time.time() - duration(text, "--since") / 1e9


def restart_policy(text: str) -> dict[str, Any]:
    name, _, count = text.partition(":")
    if name not in ("no", "on-failure", "always", "unless-stopped") or (count and name != "on-failure"):
        raise InvalidArgument(f"invalid restart policy: {text}")
    try:
        return {"Name": name, "MaximumRetryCount": int(count or 0)}
    except ValueError:
        raise InvalidArgument(
            f"invalid restart policy: maximum retry count must be an integer: {text}"
        ) from None


# -- containers -------------------------------------------------------------------------------------


def command_text(cfg: dict[str, Any]) -> str:
    return " ".join([*(cfg.get("Entrypoint") or []), *(cfg.get("Cmd") or [])])


def status_text(eng: Any, rec: Any) -> str:
    st = eng.status(rec)
    s = rec.state
    if st == "running":
        text = "Up " + since(parse_time(s.get("StartedAt", ""))).removesuffix(" ago")
        health = (s.get("Health") or {}).get("Status")
        if health:
            text += f" (health: {health})" if health == "starting" else f" ({health})"
        return text
    if st == "paused":
        return "Up " + since(parse_time(s.get("StartedAt", ""))).removesuffix(" ago") + " (Paused)"
    if st == "restarting":
        return f"Restarting ({s.get('ExitCode', 0)}) " + since(parse_time(s.get("FinishedAt", "")))
    if st == "exited":
        return f"Exited ({s.get('ExitCode', 0)}) " + since(parse_time(s.get("FinishedAt", "")))
    if st == "dead":
        return "Dead"
    return "Created"


def ps_filter(eng: Any, rec: Any, filters: list[str]) -> bool:
    by: dict[str, list[str]] = {}
    for f in filters:
        k, eq, v = f.partition("=")
        if not eq or k not in ("status", "name", "id", "label", "exited", "ancestor", "health"):
            raise InvalidArgument(f"invalid filter '{f}'")
        by.setdefault(k, []).append(v)
    cfg = rec.config["Config"]
    checks: dict[str, Callable[[str], bool]] = {
        "status": lambda v: eng.status(rec) == v,
        "name": lambda v: v in rec.name,
        "id": lambda v: rec.id.startswith(v),
        "label": lambda v: (
            (v.partition("=")[0] in (cfg.get("Labels") or {}))
            and ("=" not in v or (cfg.get("Labels") or {}).get(v.partition("=")[0]) == v.partition("=")[2])
        ),
        "exited": lambda v: eng.status(rec) == "exited" and str(rec.state.get("ExitCode")) == v,
        "ancestor": lambda v: cfg.get("Image") == v or rec.config.get("Image", "").startswith(v),
        "health": lambda v: (rec.state.get("Health") or {}).get("Status", "none") == v,
    }
    return all(any(checks[k](v) for v in vs) for k, vs in by.items())


def container_inspect(eng: Any, rec: Any) -> dict[str, Any]:
    cfg, host, st = rec.config["Config"], rec.config["HostConfig"], rec.state
    status = eng.status(rec)
    args = [*(cfg.get("Entrypoint") or []), *(cfg.get("Cmd") or [])]
    d = eng.cdir(rec.id)
    state = {
        "Status": status,
        "Running": status in ("running", "paused"),
        "Paused": status == "paused",
        "Restarting": status == "restarting",
        "OOMKilled": bool(st.get("OOMKilled")) and status != "running",
        "Dead": status == "dead",
        "Pid": st.get("Pid", 0) if status in ("running", "paused") else 0,
        "ExitCode": st.get("ExitCode", 0),
        "Error": st.get("Error", ""),
        "StartedAt": st.get("StartedAt", "0001-01-01T00:00:00Z"),
        "FinishedAt": st.get("FinishedAt", "0001-01-01T00:00:00Z"),
    }
    if st.get("Health"):
        state["Health"] = st["Health"]
    return {
        "Id": rec.id,
        "Created": datetime.fromtimestamp(rec.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "Path": args[0] if args else "",
        "Args": args[1:],
        "State": state,
        "Image": rec.config.get("Image", ""),
        "ResolvConfPath": str(d / "resolv.conf"),
        "HostnamePath": str(d / "hostname"),
        "HostsPath": str(d / "hosts"),
        "LogPath": str(d / f"{rec.id}-json.log"),
        "Name": "/" + rec.name,
        "RestartCount": st.get("RestartCount", 0),
        "Driver": rec.config.get("Driver", ""),
        "Platform": "linux",
        "HostConfig": host,
        "Mounts": rec.config.get("Mounts") or [],
        "Config": cfg,
        "NetworkSettings": network_settings(eng, rec),
    }


def port_rows(eng: Any, rec: Any) -> list[dict[str, Any]]:
    return list(eng.networks.published(rec.id))


def exposed_ports(rec: Any) -> dict[str, Any]:
    return dict(rec.config["Config"].get("ExposedPorts") or {}) | (
        rec.config["HostConfig"].get("ExposedPorts") or {}
    )


def ports_text(eng: Any, rec: Any) -> str:
    """``ps``'s PORTS column: 0.0.0.0:8080->80/tcp, and exposed ports that publish nothing."""
    maps = port_rows(eng, rec)
    out = [f"{m['hostIP'] or '0.0.0.0'}:{m['hostPort']}->{m['containerPort']}/{m['protocol']}" for m in maps]
    done = {f"{m['containerPort']}/{m['protocol']}" for m in maps}
    out += [p for p in exposed_ports(rec) if p not in done]
    return ", ".join(out)


def network_settings(eng: Any, rec: Any) -> dict[str, Any]:
    """inspect's NetworkSettings: per network its endpoint, the published ports, the sandbox."""
    nets = {}
    for name, ep in eng.networks.endpoints_of(rec.id).items():
        nets[name] = {
            "Aliases": ep.get("aliases") or None, "NetworkID": ep["NetworkID"], "Gateway": ep.get("gateway", ""),
            "IPAddress": ep.get("ip", ""), "IPPrefixLen": ep.get("prefix", 0), "MacAddress": ep.get("mac", ""),
        }  # fmt: skip
    mode = rec.config["HostConfig"].get("NetworkMode") or "none"
    if not nets and mode in ("host", "none"):
        nets[mode] = {}
    first = next(iter(nets.values()), {})
    ports: dict[str, Any] = {p: None for p in exposed_ports(rec)}
    for m in port_rows(eng, rec):
        key = f"{m['containerPort']}/{m['protocol']}"
        ports[key] = (ports.get(key) or []) + [
            {"HostIp": m["hostIP"] or "0.0.0.0", "HostPort": str(m["hostPort"])}
        ]
    return {
        "SandboxKey": eng.networks.sandbox_key(rec.id), "Ports": ports, "Networks": nets,
        "IPAddress": first.get("IPAddress", ""), "Gateway": first.get("Gateway", ""),
        "MacAddress": first.get("MacAddress", ""), "IPPrefixLen": first.get("IPPrefixLen", 0),
    }  # fmt: skip


# -- images -----------------------------------------------------------------------------------------


def image_has_label(image: Any, want: str) -> bool:
    """``label=KEY`` or ``label=KEY=VALUE``, as docker's filter."""
    labels = image.config.config.get("Labels") or {}
    key, eq, value = want.partition("=")
    return key in labels and (not eq or labels[key] == value)


def image_ref_matches(ref: Any, patterns: list[str]) -> bool:
    names = [ref.familiar(), str(ref), ref.familiar_name(), ref.name]
    return any(fnmatch.fnmatchcase(n, p) or fnmatch.fnmatchcase(n, p + ":*") for n in names for p in patterns)


def image_inspect(imgs: Any, image: Any) -> dict[str, Any]:
    cfg = image.config
    return {
        "Id": str(image.id),
        "RepoTags": [t.familiar() for t in image.tags],
        "RepoDigests": [],
        "Parent": "",
        "Comment": cfg.history[-1].comment if cfg.history else "",
        "Created": cfg.created,
        "Author": cfg.author,
        "Config": cfg.config,
        "Architecture": cfg.architecture,
        "Variant": cfg.variant or None,
        "Os": cfg.os,
        "Size": imgs.size(image),
        "RootFS": {"Type": "layers", "Layers": [str(d) for d in cfg.diff_ids]},
        "Metadata": {"LastTagTime": iso_time(image.record.last_tag_time)},
        "Descriptor": {
            "mediaType": image.manifest.media_type,
            "digest": str(image.record.manifest),
            "size": imgs.content.info(image.record.manifest).size,
        },
    }


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if ts else "0001-01-01T00:00:00Z"


# -- networks ---------------------------------------------------------------------------------------


def network_created(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pseudo_network(name: str) -> dict[str, Any]:
    import hashlib

    nid = hashlib.sha256(b"pallet network " + name.encode()).hexdigest()
    return {"Id": nid, "Name": name, "Created": 0.0, "Driver": name if name != "none" else "null",
            "Internal": False, "Labels": {}, "Subnet": "", "Gateway": ""}  # fmt: skip


def network_match(f: str, n: dict[str, Any]) -> bool:
    k, eq, v = f.partition("=")
    if not eq:
        raise InvalidArgument(f"invalid filter '{f}'")
    if k == "name":
        return v in n["Name"]
    if k == "id":
        return bool(n["Id"].startswith(v))
    if k == "driver":
        return bool(n["Driver"] == v)
    if k == "label":
        lk, leq, lv = v.partition("=")
        return lk in n["Labels"] and (not leq or n["Labels"][lk] == lv)
    if k == "type":
        builtin = n["Name"] in ("bridge", "host", "none")
        return builtin if v == "builtin" else not builtin
    raise InvalidArgument(f"invalid filter '{k}'")


def network_list(nets: Any) -> list[dict[str, Any]]:
    """The engine's networks and docker's two built-in ones, host and none."""
    return [*nets.all(), pseudo_network("host"), pseudo_network("none")]


def network_get(nets: Any, ref: str) -> dict[str, Any]:
    if ref in ("host", "none"):
        return pseudo_network(ref)
    net: dict[str, Any] = nets.get(ref)
    return net


def network_inspect(nets: Any, n: dict[str, Any]) -> dict[str, Any]:
    conts = nets.containers_of(n["Id"]) if n["Name"] not in ("host", "none") else {}
    return {
        "Name": n["Name"], "Id": n["Id"], "Created": network_created(n["Created"]), "Scope": "local",
        "Driver": n["Driver"], "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {},
                 "Config": [{"Subnet": n["Subnet"], "Gateway": n["Gateway"]}] if n["Subnet"] else []},
        "Internal": n["Internal"], "Attachable": False, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": conts,
        "Options": {"com.docker.network.bridge.name": n["Bridge"]} if n.get("Bridge") else {},
        "Labels": n["Labels"],
    }  # fmt: skip


# -- volumes ------------------------------------------------------------------------------------------


def volume_filter(vols: Any, rows: list[dict[str, Any]], key: str, val: str) -> list[dict[str, Any]] | None:
    """The volumes of ``rows`` that docker's filter ``key=val`` keeps; None for a key docker does not have."""
    if key == "dangling":
        want = val.lower() in ("true", "1")
        return [v for v in rows if (not vols.users(v["Name"])) == want]
    if key == "name":
        return [v for v in rows if val in v["Name"]]
    if key == "label":
        lk, leq, lv = val.partition("=")
        return [v for v in rows if lk in v["Labels"] and (not leq or v["Labels"][lk] == lv)]
    if key == "driver":
        return [v for v in rows if v["Driver"] == val]
    return None
