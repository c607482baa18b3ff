"""The OCI runtime spec (config.json): loading, validation with errors that name the field, and
the default spec that `pallet-runtime spec` writes (runc's, so bundles move between runtimes).

Validation checks shape and types only; whether the host can apply a value is the runtime's business.
"""

from __future__ import annotations

import json
import os
import re

from pallet.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any

OCI_VERSION = "1.2.0"

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")

Spec = dict[str, "Any"]  # a string: typing is not imported at run time


def validate_id(container_id: str) -> None:
    """runc's rule: letters, digits and `_ . + -`, and never a path."""
    if not container_id or not _ID_RE.match(container_id) or len(container_id) > 1024:
        raise InvalidArgument(f"invalid container id {container_id!r}: use letters, digits and _ . + -")


def load(bundle: str) -> Spec:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InvalidArgument(f"bundle {bundle}: no config.json") from None
    except IsADirectoryError:
        raise InvalidArgument(f"{path}: is a directory") from None
    try:
        spec: Spec = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{path}: malformed JSON: {e}") from None
    validate(spec)
    return spec


def _type_error(field: str, want: str, value: Any) -> InvalidArgument:
    return InvalidArgument(
        f"config.json: {field}: expected {want}, got {type(value).__name__} {json.dumps(value)[:60]}"
    )


def _expect(obj: Any, field: str, typ: type | tuple[type, ...], want: str) -> Any:
    if not isinstance(obj, typ) or (isinstance(obj, bool) and typ in (int, (int,))):
        raise _type_error(field, want, obj)
    return obj


def _opt(parent: dict[str, Any], key: str, prefix: str, typ: type | tuple[type, ...], want: str) -> Any:
    if key not in parent or parent[key] is None:
        return None
    return _expect(parent[key], f"{prefix}{key}", typ, want)


def _str_list(value: Any, field: str) -> list[str]:
    _expect(value, field, list, "a list of strings")
    for i, s in enumerate(value):
        _expect(s, f"{field}[{i}]", str, "a string")
    return value  # type: ignore[no-any-return]


def validate(spec: Any) -> None:
    """Raise InvalidArgument naming the first field whose shape is wrong."""
    _expect(spec, "(top level)", dict, "an object")
    if "ociVersion" not in spec:
        raise InvalidArgument("config.json: ociVersion: missing")
    _expect(spec["ociVersion"], "ociVersion", str, "a string")
    root = spec.get("root")
    if root is None:
        raise InvalidArgument("config.json: root: missing")
    _expect(root, "root", dict, "an object")
    _expect(root.get("path"), "root.path", str, "a string")
    _opt(root, "readonly", "root.", bool, "a boolean")
    proc = spec.get("process")
    if proc is not None:
        _validate_process(proc, "process.")
    for key in ("hostname", "domainname"):
        _opt(spec, key, "", str, "a string")
    for i, m in enumerate(_opt(spec, "mounts", "", list, "a list") or []):
        f = f"mounts[{i}]"
        _expect(m, f, dict, "an object")
        _expect(m.get("destination"), f + ".destination", str, "a string")
        _opt(m, "source", f + ".", str, "a string")
        _opt(m, "type", f + ".", str, "a string")
        if m.get("options") is not None:
            _str_list(m["options"], f + ".options")
        for key in ("uidMappings", "gidMappings"):
            validate_mappings(_opt(m, key, f + ".", list, "a list") or [], f"{f}.{key}")
        if bool(m.get("uidMappings")) != bool(m.get("gidMappings")):
            raise InvalidArgument(
                f"config.json: {f}: an idmapped mount needs both uidMappings and gidMappings"
            )
    hooks = _opt(spec, "hooks", "", dict, "an object") or {}
    for kind, entries in hooks.items():
        if kind not in HOOK_KINDS:
            raise InvalidArgument(
                f"config.json: hooks.{kind}: unknown hook kind (want one of {', '.join(HOOK_KINDS)})"
            )
        for i, h in enumerate(_expect(entries, f"hooks.{kind}", list, "a list")):
            f = f"hooks.{kind}[{i}]"
            _expect(h, f, dict, "an object")
            _expect(h.get("path"), f + ".path", str, "a string")
            if not os.path.isabs(h["path"]):
                raise InvalidArgument(f"config.json: {f}.path: must be absolute, got {h['path']!r}")
            if h.get("args") is not None:
                _str_list(h["args"], f + ".args")
            if h.get("env") is not None:
                _str_list(h["env"], f + ".env")
            t = _opt(h, "timeout", f + ".", int, "an integer")
            if t is not None and t <= 0:
                raise InvalidArgument(f"config.json: {f}.timeout: must be positive, got {t}")
    _opt(spec, "annotations", "", dict, "an object")
    linux = _opt(spec, "linux", "", dict, "an object")
    if linux is not None:
        _validate_linux(linux)


def _validate_process(proc: Any, p: str) -> None:
    _expect(proc, "process", dict, "an object")
    args = proc.get("args")
    if args is None or args == []:
        raise InvalidArgument("config.json: process.args: missing (the command to run)")
    _str_list(args, p + "args")
    if proc.get("env") is not None:
        _str_list(proc["env"], p + "env")
    cwd = proc.get("cwd")
    _expect(cwd, p + "cwd", str, "a string")
    if not os.path.isabs(cwd):
        raise InvalidArgument(f"config.json: process.cwd: must be an absolute path, got {cwd!r}")
    _opt(proc, "terminal", p, bool, "a boolean")
    _opt(proc, "noNewPrivileges", p, bool, "a boolean")
    _opt(proc, "oomScoreAdj", p, int, "an integer")
    _opt(proc, "apparmorProfile", p, str, "a string")
    _opt(proc, "selinuxLabel", p, str, "a string")
    cs = _opt(proc, "consoleSize", p, dict, "an object")
    if cs is not None:
        _expect(cs.get("height"), p + "consoleSize.height", int, "an integer")
        _expect(cs.get("width"), p + "consoleSize.width", int, "an integer")
    user = _opt(proc, "user", p, dict, "an object")
    if user is not None:
        _expect(user.get("uid", 0), p + "user.uid", int, "an integer")
        _expect(user.get("gid", 0), p + "user.gid", int, "an integer")
        _opt(user, "umask", p + "user.", int, "an integer")
        for i, g in enumerate(_opt(user, "additionalGids", p + "user.", list, "a list") or []):
            _expect(g, f"{p}user.additionalGids[{i}]", int, "an integer")
    caps = _opt(proc, "capabilities", p, dict, "an object")
    if caps is not None:
        for k, v in caps.items():
            if k not in ("bounding", "effective", "inheritable", "permitted", "ambient"):
                raise InvalidArgument(f"config.json: process.capabilities.{k}: unknown capability set")
            _str_list(v or [], f"{p}capabilities.{k}")
    for i, r in enumerate(_opt(proc, "rlimits", p, list, "a list") or []):
        f = f"{p}rlimits[{i}]"
        _expect(r, f, dict, "an object")
        _expect(r.get("type"), f + ".type", str, "a string")
        _expect(r.get("hard"), f + ".hard", int, "an integer")
        _expect(r.get("soft"), f + ".soft", int, "an integer")


def validate_mappings(maps: list[Any], field: str) -> None:
    """uid/gid mappings: whole numbers in range, a positive size, and no two ranges overlapping on either
    side (the kernel would refuse the map half-way, after the container was partly made)."""
    ranges: list[tuple[int, int, int, int]] = []
    for i, m in enumerate(maps):
        f = f"{field}[{i}]"
        _expect(m, f, dict, "an object")
        for k in ("containerID", "hostID", "size"):
            v = _expect(m.get(k), f"{f}.{k}", int, "an integer")
            if not 0 <= v < 1 << 32 or (k == "size" and v == 0):
                raise InvalidArgument(f"config.json: {f}.{k}: out of range ({v})")
        if m["containerID"] + m["size"] > 1 << 32 or m["hostID"] + m["size"] > 1 << 32:
            raise InvalidArgument(f"config.json: {f}: range ends past 4294967295")
        ranges.append((i, m["containerID"], m["hostID"], m["size"]))
    for a, ca, ha, sa in ranges:
        for b, cb, hb, sb in ranges:
            if a < b and (ca < cb + sb and cb < ca + sa or ha < hb + sb and hb < ha + sa):
                raise InvalidArgument(f"config.json: {field}[{b}]: overlaps {field}[{a}]")


def _validate_linux(linux: dict[str, Any]) -> None:
    seen: set[str] = set()
    for i, ns in enumerate(_opt(linux, "namespaces", "linux.", list, "a list") or []):
        f = f"linux.namespaces[{i}]"
        _expect(ns, f, dict, "an object")
        t = ns.get("type")
        _expect(t, f + ".type", str, "a string")
        if t not in NAMESPACE_TYPES:
            raise InvalidArgument(
                f"config.json: {f}.type: unknown namespace type {t!r} (want one of {', '.join(NAMESPACE_TYPES)})"
            )
        if t in seen:
            raise InvalidArgument(f"config.json: {f}.type: namespace {t!r} listed twice")
        seen.add(t)
        path = _opt(ns, "path", f + ".", str, "a string")
        if path is not None and path and not os.path.isabs(path):
            raise InvalidArgument(f"config.json: {f}.path: must be absolute, got {path!r}")
    for key in ("uidMappings", "gidMappings"):
        validate_mappings(_opt(linux, key, "linux.", list, "a list") or [], f"linux.{key}")
    for i, d in enumerate(_opt(linux, "devices", "linux.", list, "a list") or []):
        f = f"linux.devices[{i}]"
        _expect(d, f, dict, "an object")
        _expect(d.get("path"), f + ".path", str, "a string")
        t = _expect(d.get("type"), f + ".type", str, "a string")
        if t not in ("c", "b", "u", "p"):
            raise InvalidArgument(f"config.json: {f}.type: unknown device type {t!r} (want c, b, u or p)")
        if t != "p":
            _expect(d.get("major"), f + ".major", int, "an integer")
            _expect(d.get("minor"), f + ".minor", int, "an integer")
    for key in ("maskedPaths", "readonlyPaths"):
        if linux.get(key) is not None:
            _str_list(linux[key], f"linux.{key}")
    sysctl = _opt(linux, "sysctl", "linux.", dict, "an object") or {}
    for k, v in sysctl.items():
        _expect(v, f"linux.sysctl.{k}", str, "a string")
    _opt(linux, "cgroupsPath", "linux.", str, "a string")
    _opt(linux, "resources", "linux.", dict, "an object")
    prop = _opt(linux, "rootfsPropagation", "linux.", str, "a string")
    if prop and prop not in (
        "private",
        "rprivate",
        "slave",
        "rslave",
        "shared",
        "rshared",
        "unbindable",
        "runbindable",
    ):
        raise InvalidArgument(f"config.json: linux.rootfsPropagation: unknown propagation {prop!r}")
    pers = _opt(linux, "personality", "linux.", dict, "an object")
    if pers is not None:
        dom = pers.get("domain")
        if dom not in ("LINUX", "LINUX32"):
            raise InvalidArgument(
                f"config.json: linux.personality.domain: unknown domain {dom!r} (want LINUX or LINUX32)"
            )
    seccomp = _opt(linux, "seccomp", "linux.", dict, "an object")
    if seccomp is not None:
        validate_seccomp(seccomp)
    offsets = _opt(linux, "timeOffsets", "linux.", dict, "an object") or {}
    for clock, off in offsets.items():
        if clock not in ("monotonic", "boottime"):
            raise InvalidArgument(
                f"config.json: linux.timeOffsets.{clock}: unknown clock (want monotonic or boottime)"
            )
        _expect(off, f"linux.timeOffsets.{clock}", dict, "an object")


SECCOMP_ACTIONS = (
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
)  # fmt: skip
SECCOMP_ARCHES = (
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
)  # fmt: skip
SECCOMP_OPS = (
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
)  # fmt: skip
SECCOMP_FLAGS = (
    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
)  # fmt: skip
# syscalls the runtime itself makes between loading the filter and execve: a notify on them would wait
# for an agent that has not received the listener fd yet (runc refuses `write` for the same reason)
_NO_NOTIFY = ("write", "sendmsg")
_ERRNO_ACTIONS = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")


def _one_of(value: Any, field: str, allowed: tuple[str, ...], what: str) -> str:
    _expect(value, field, str, "a string")
    if value not in allowed:
        raise InvalidArgument(f"config.json: {field}: unknown {what} {value!r}")
    return value  # type: ignore[no-any-return]


def _errno_ret(obj: dict[str, Any], key: str, field: str) -> None:
    v = _opt(obj, key, field, int, "an integer")
    if v is not None and not 0 <= v <= 0xFFFF:
        raise InvalidArgument(f"config.json: {field}{key}: must be between 0 and 65535, got {v}")


def validate_seccomp(sc: dict[str, Any]) -> None:
    """linux.seccomp: every action, architecture, operator and flag name known, every shape right."""
    p = "linux.seccomp."
    default = _one_of(sc.get("defaultAction"), p + "defaultAction", SECCOMP_ACTIONS, "seccomp action")
    if default == "SCMP_ACT_NOTIFY":
        raise InvalidArgument(f"config.json: {p}defaultAction: SCMP_ACT_NOTIFY cannot be the default action")
    _errno_ret(sc, "defaultErrnoRet", p)
    if sc.get("defaultErrnoRet") is not None and default not in _ERRNO_ACTIONS:
        raise InvalidArgument(
            f"config.json: {p}defaultErrnoRet: only meaningful with SCMP_ACT_ERRNO or SCMP_ACT_TRACE"
        )
    for i, a in enumerate(_opt(sc, "architectures", p, list, "a list") or []):
        _one_of(a, f"{p}architectures[{i}]", SECCOMP_ARCHES, "architecture")
    for i, f in enumerate(_opt(sc, "flags", p, list, "a list") or []):
        _one_of(f, f"{p}flags[{i}]", SECCOMP_FLAGS, "seccomp flag")
    listener = _opt(sc, "listenerPath", p, str, "a string")
    if listener and not os.path.isabs(listener):
        raise InvalidArgument(f"config.json: {p}listenerPath: must be absolute, got {listener!r}")
    _opt(sc, "listenerMetadata", p, str, "a string")
    for i, rule in enumerate(_opt(sc, "syscalls", p, list, "a list") or []):
        f = f"{p}syscalls[{i}]"
        _expect(rule, f, dict, "an object")
        names = _str_list(rule.get("names"), f + ".names")
        if not names:
            raise InvalidArgument(f"config.json: {f}.names: empty (name at least one syscall)")
        act = _one_of(rule.get("action"), f + ".action", SECCOMP_ACTIONS, "seccomp action")
        _errno_ret(rule, "errnoRet", f + ".")
        if rule.get("errnoRet") is not None and act not in _ERRNO_ACTIONS:
            raise InvalidArgument(
                f"config.json: {f}.errnoRet: only meaningful with SCMP_ACT_ERRNO or SCMP_ACT_TRACE"
            )
        if act == "SCMP_ACT_NOTIFY":
            if not listener:
                raise InvalidArgument(f"config.json: {f}.action: SCMP_ACT_NOTIFY needs {p}listenerPath")
            for n in names:
                if n in _NO_NOTIFY:
                    raise InvalidArgument(
                        f"config.json: {f}.action: SCMP_ACT_NOTIFY on {n!r} would deadlock the runtime"
                    )
        for j, arg in enumerate(_opt(rule, "args", f + ".", list, "a list") or []):
            fa = f"{f}.args[{j}]"
            _expect(arg, fa, dict, "an object")
            idx = _expect(arg.get("index"), fa + ".index", int, "an integer")
            if not 0 <= idx <= 5:
                raise InvalidArgument(f"config.json: {fa}.index: must be between 0 and 5, got {idx}")
            for k in ("value", "valueTwo"):
                v = _opt(arg, k, fa + ".", int, "an integer")
                if v is not None and not 0 <= v < 1 << 64:
                    raise InvalidArgument(f"config.json: {fa}.{k}: must fit in 64 bits unsigned, got {v}")
            _one_of(arg.get("op"), fa + ".op", SECCOMP_OPS, "seccomp operator")


DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
DEFAULT_MASKED = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
]  # fmt: skip
DEFAULT_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def default_spec(rootless: bool = False) -> Spec:
    """runc's `spec` template: sh in a terminal, the usual mounts, new pid/net/ipc/uts/mount namespaces."""
    spec: Spec = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(DEFAULT_CAPS) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "pallet",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": list(DEFAULT_MASKED),
            "readonlyPaths": list(DEFAULT_READONLY),
        },
    }  # fmt: skip
    if rootless:
        uid, gid = os.getuid(), os.getgid()
        linux = spec["linux"]
        linux["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
        linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"] + [
            {"type": "user"}
        ]
        del linux["resources"]
        mounts = [m for m in spec["mounts"] if m["destination"] != "/sys"]
        for m in mounts:
            if m["destination"] == "/dev/pts":
                m["options"] = [o for o in m["options"] if o != "gid=5"]
        mounts.insert(
            5,
            {
                "destination": "/sys",
                "type": "none",
                "source": "/sys",
                "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
            },
        )
        spec["mounts"] = [m for m in mounts if m["destination"] != "/sys/fs/cgroup"]
    return spec
