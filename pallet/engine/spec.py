"""The OCI runtime spec of a container: the image's config, then the user's flags, over docker's
defaults (moby's oci/defaults.go and daemon/oci_linux.go are the reference for every value here).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from pallet.errors import InvalidArgument, NotFound
from pallet.oci.capabilities import CAPABILITY_NAMES
from pallet.oci.defaults import DOCKER_DEFAULT_CAPABILITIES, docker_seccomp_profile
from pallet.oci.runtime_spec import DEFAULT_READONLY

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MASKED = [
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
]  # fmt: skip
READONLY = DEFAULT_READONLY
# docker's default device cgroup: nothing, then mknod of any, the standard nodes, ptys and tun
DEVICE_RULES: list[dict[str, Any]] = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": 1, "minor": n, "access": "rwm"} for n in (3, 5, 7, 8, 9)),
    *({"allow": True, "type": "c", "major": 5, "minor": n, "access": "rwm"} for n in (0, 1, 2)),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},
]
ALL_CAPS = CAPABILITY_NAMES
INIT_PATH = "/sbin/docker-init"
TINI = "/usr/bin/tini-static"


def default_caps() -> list[str]:
    return list(DOCKER_DEFAULT_CAPABILITIES)


def seccomp_profile(caps: list[str]) -> dict[str, Any]:
    """docker's default profile for a container with these capabilities."""
    return dict(docker_seccomp_profile(caps))


def parse_signal(text: str) -> int:
    t = text.strip().upper()
    if t.isdigit():
        return int(t)
    name = t if t.startswith("SIG") else "SIG" + t
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidArgument(f"Invalid signal: {text}") from None


def host_caps() -> list[str]:
    """Every capability in our bounding set (ALL_CAPS is in kernel number order): --privileged gives
    what the engine can give, as a host without, say, CAP_SYS_RESOURCE cannot grant it to anyone."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                mask = int(line.split()[1], 16)
                return [c for i, c in enumerate(ALL_CAPS) if mask >> i & 1]
    return list(ALL_CAPS)


def _cap(name: str) -> str:
    n = name.upper()
    return n if n.startswith("CAP_") else "CAP_" + n


def capabilities(add: list[str], drop: list[str], privileged: bool) -> list[str]:
    """docker's rule: start from the defaults (or all with --privileged); ALL in drop or add wins first."""
    if privileged:
        return host_caps()
    adds, drops = [_cap(c) for c in add], [_cap(c) for c in drop]
    for c in adds + drops:
        if c != "CAP_ALL" and c not in ALL_CAPS:
            raise InvalidArgument(f'unknown capability: "{c}"')
    caps = [] if "CAP_ALL" in drops else default_caps()
    if "CAP_ALL" in adds:
        caps = host_caps()
    caps = [c for c in caps if c not in drops]
    return caps + [c for c in adds if c != "CAP_ALL" and c not in caps]


def _passwd(rootfs: Path, name: str) -> list[str] | None:
    for line in _lines(rootfs, "/etc/passwd"):
        f = line.split(":")
        if len(f) >= 7 and (f[0] == name or (name.isdigit() and f[2] == name)):
            return f
    return None


def _lines(rootfs: Path, path: str) -> list[str]:
    """A file of the image, resolved inside its root: an image whose /etc is a link to /etc must not
    make us read the host's passwd."""
    from pallet.engine.copy import resolve_in

    try:
        target = resolve_in(rootfs, path)
    except InvalidArgument:  # a link loop in the image: no entries
        return []
    try:
        return target.read_text(errors="replace").splitlines() if not target.is_symlink() else []
    except OSError:
        return []


def resolve_user(rootfs: Path, user: str) -> tuple[int, int, list[int], str]:
    """docker's --user: name|uid[:group|gid] through the image's /etc/passwd and /etc/group;
    returns (uid, gid, additional gids, home)."""
    name, _, group = (user or "0").partition(":")
    pw = _passwd(rootfs, name)
    if pw is None and not name.isdigit():
        raise NotFound(f"unable to find user {name}: no matching entries in passwd file")
    uid = int(pw[2]) if pw else int(name)
    gid = int(pw[3]) if pw else 0
    home = pw[5] if pw else "/"
    groups = _lines(rootfs, "/etc/group")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = [g for g in groups if g.split(":")[0] == group]
            if not found:
                raise NotFound(f"unable to find group {group}: no matching entries in group file")
            gid = int(found[0].split(":")[2])
    extra = []
    if pw is not None:
        for g in groups:
            f = g.split(":")
            if len(f) >= 4 and pw[0] in f[3].split(",") and int(f[2]) != gid:
                extra.append(int(f[2]))
    return uid, gid, extra, home


def _env_set(env: list[str], key: str) -> bool:
    return any(e.split("=", 1)[0] == key for e in env)


def _device(spec: str) -> tuple[dict[str, Any], dict[str, Any]]:
    parts = spec.split(":")
    host = parts[0]
    dest = parts[1] if len(parts) > 1 and parts[1].startswith("/") else host
    perms = parts[-1] if len(parts) > 1 and not parts[-1].startswith("/") else "rwm"
    try:
        st = os.stat(host)
    except OSError as e:
        raise InvalidArgument(
            f"error gathering device information while adding custom device {host!r}: {e.strerror}"
        ) from None
    import stat as S

    kind = "c" if S.S_ISCHR(st.st_mode) else "b" if S.S_ISBLK(st.st_mode) else ""
    if not kind:
        raise InvalidArgument(f'"{host}" is not a device node')
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    dev = {"path": dest, "type": kind, "major": major, "minor": minor, "fileMode": S.S_IMODE(st.st_mode)}
    dev |= {"uid": 0, "gid": 0}
    return dev, {"allow": True, "type": kind, "major": major, "minor": minor, "access": perms}


def _major_minor(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as e:
        raise InvalidArgument(f"{path}: {e.strerror}") from None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def resources(hc: dict[str, Any]) -> dict[str, Any]:
    """linux.resources from docker's HostConfig resource fields (already parsed to numbers)."""
    r: dict[str, Any] = {"devices": list(DEVICE_RULES)}
    if hc.get("Privileged"):
        r["devices"] = [{"allow": True, "access": "rwm"}]
    mem: dict[str, Any] = {}
    if hc.get("Memory"):
        mem["limit"] = hc["Memory"]
        swap = hc.get("MemorySwap") or 0
        mem["swap"] = -1 if swap == -1 else (swap if swap else hc["Memory"] * 2)
    if hc.get("MemoryReservation"):
        mem["reservation"] = hc["MemoryReservation"]
    if mem:
        r["memory"] = mem
    cpu: dict[str, Any] = {}
    if hc.get("NanoCpus"):
        cpu["period"] = 100000
        cpu["quota"] = hc["NanoCpus"] * 100000 // 1_000_000_000
    if hc.get("CpuShares"):
        cpu["shares"] = hc["CpuShares"]
    if hc.get("CpusetCpus"):
        cpu["cpus"] = hc["CpusetCpus"]
    if cpu:
        r["cpu"] = cpu
    if hc.get("PidsLimit"):
        r["pids"] = {"limit": hc["PidsLimit"]}
    blkio: dict[str, Any] = {}
    if hc.get("BlkioWeight"):
        blkio["weight"] = hc["BlkioWeight"]
    for key, field in (
        ("BlkioDeviceReadBps", "throttleReadBpsDevice"),
        ("BlkioDeviceWriteBps", "throttleWriteBpsDevice"),
    ):
        for d in hc.get(key) or []:
            major, minor = _major_minor(d["Path"])
            blkio.setdefault(field, []).append({"major": major, "minor": minor, "rate": d["Rate"]})
    if blkio:
        r["blockIO"] = blkio
    return r


def _namespace_path(kind: str, mode: str, pids: dict[str, int]) -> dict[str, str] | None:
    """``--pid/--ipc/--uts``: "" (new), "host" (none), "container:NAME" (that container's)."""
    if not mode or mode == "private" or mode == "shareable":
        return {"type": kind}
    if mode == "host":
        return None
    if mode.startswith("container:"):
        pid = pids.get(mode)
        if not pid:
            raise InvalidArgument(f"cannot join the {kind} namespace of {mode}: it is not running")
        nsname = {"network": "net", "mount": "mnt"}.get(kind, kind)
        return {"type": kind, "path": f"/proc/{pid}/ns/{nsname}"}
    raise InvalidArgument(f'invalid {kind} mode "{mode}"')


def generate(
    cid: str,
    config: dict[str, Any],
    host: dict[str, Any],
    rootfs: Path,
    files: Path,
    ns_pids: dict[str, int],
) -> dict[str, Any]:
    """The config.json of a container: ``config`` is docker's Config (image config merged with the
    user's flags), ``host`` its HostConfig; ``files`` holds hostname, hosts and resolv.conf."""
    args = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    if not args:
        raise InvalidArgument("no command specified")
    if host.get("Init"):
        args = [INIT_PATH, "--", *args]
    uid, gid, extra, home = resolve_user(rootfs, config.get("User") or "")
    env = [DEFAULT_PATH, f"HOSTNAME={config['Hostname']}"]
    if config.get("Tty"):
        env.append("TERM=xterm")
    for e in config.get("Env") or []:
        key = e.split("=", 1)[0]
        env = [x for x in env if x.split("=", 1)[0] != key] + [e]
    if not _env_set(env, "HOME"):
        env.append(f"HOME={home}")
    privileged = bool(host.get("Privileged"))
    caps = capabilities(host.get("CapAdd") or [], host.get("CapDrop") or [], privileged)
    process: dict[str, Any] = {
        "terminal": bool(config.get("Tty")),
        "user": {"uid": uid, "gid": gid, **({"additionalGids": extra} if extra else {})},
        "args": args,
        "env": env,
        "cwd": config.get("WorkingDir") or "/",
        "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
        "noNewPrivileges": "no-new-privileges" in (host.get("SecurityOpt") or [])
        or "no-new-privileges:true" in (host.get("SecurityOpt") or []),
    }
    if host.get("OomScoreAdj"):
        process["oomScoreAdj"] = host["OomScoreAdj"]
    if host.get("Ulimits"):
        process["rlimits"] = [
            {"type": "RLIMIT_" + u["Name"].upper(), "soft": u["Soft"], "hard": u["Hard"]}
            for u in host["Ulimits"]
        ]
    shm = int(host.get("ShmSize") or 64 * 1024 * 1024)
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro" if not privileged else "rw"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro" if not privileged else "rw"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm // 1024}k"]},
    ]  # fmt: skip
    for name in ("resolv.conf", "hostname", "hosts"):
        mounts.append(
            {
                "destination": f"/etc/{name}",
                "type": "bind",
                "source": str(files / name),
                "options": ["rbind", "rprivate"],
            }
        )
    for dest, opts in (host.get("Tmpfs") or {}).items():
        mounts.append(
            {
                "destination": dest,
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "noexec", *[o for o in opts.split(",") if o]],
            }
        )
    for b in host.get("Mounts") or []:
        if b.get("Type") == "tmpfs":  # --mount type=tmpfs
            opts = ["nosuid", "nodev", "noexec", *b.get("Options", []), "ro" if b.get("ReadOnly") else "rw"]
            mounts.append({"destination": b["Target"], "type": "tmpfs", "source": "tmpfs", "options": opts})
            continue
        mounts.append(
            {"destination": b["Target"], "type": "bind", "source": b["Source"],
             "options": ["rbind", b.get("Propagation") or "rprivate", "ro" if b.get("ReadOnly") else "rw"]}
        )  # fmt: skip
    if host.get("Init"):
        mounts.append({"destination": INIT_PATH, "type": "bind", "source": TINI, "options": ["bind", "ro"]})
    namespaces = [{"type": "mount"}]
    for kind, key in (("pid", "PidMode"), ("ipc", "IpcMode"), ("uts", "UTSMode")):
        ns = _namespace_path(kind, host.get(key) or "", ns_pids)
        if ns is not None:
            namespaces.append(ns)
    net = host.get("NetworkMode") or "none"
    if net != "host":
        # SandboxKey: the namespace the engine made and wired (pallet.engine.network), joined by path
        key = host.get("SandboxKey")
        namespaces.append({"type": "network", "path": key} if key else {"type": "network"})
    namespaces.append({"type": "cgroup"})
    devices, rules = [], []
    for d in host.get("Devices") or []:
        dev, rule = _device(d)
        devices.append(dev)
        rules.append(rule)
    res = resources(host)
    res["devices"] += rules
    linux: dict[str, Any] = {
        "resources": res,
        "cgroupsPath": f"{host.get('CgroupParent') or '/pallet'}/{cid}",
        "namespaces": namespaces,
        "maskedPaths": [] if privileged else list(MASKED),
        "readonlyPaths": [] if privileged else list(READONLY),
    }
    if devices:
        linux["devices"] = devices
    if host.get("Sysctls"):
        linux["sysctl"] = dict(host["Sysctls"])
    secopts = host.get("SecurityOpt") or []
    if not privileged and "seccomp=unconfined" not in secopts and "seccomp:unconfined" not in secopts:
        custom = [o.split("=", 1)[1] for o in secopts if o.startswith("seccomp=")]
        if custom:
            import json

            try:
                linux["seccomp"] = json.loads(Path(custom[0]).read_text())
            except (OSError, ValueError) as e:
                raise InvalidArgument(f"opening seccomp profile ({custom[0]}) failed: {e}") from None
        else:
            linux["seccomp"] = seccomp_profile(caps)
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2-dev",
        "process": process,
        "root": {"path": str(rootfs), "readonly": bool(host.get("ReadonlyRootfs"))},
        "mounts": mounts,
        "linux": linux,
        "annotations": {"io.pallet.container.name": config.get("Name", "")},
    }
    if host.get("UTSMode") != "host":
        spec["hostname"] = config["Hostname"]
    return spec
