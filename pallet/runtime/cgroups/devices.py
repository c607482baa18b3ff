"""Device access rules: checked once, then written as v1 ``devices.allow``/``devices.deny`` lines or
compiled into a BPF_PROG_TYPE_CGROUP_DEVICE program for v2 (there is no devices file on v2).

OCI rules are applied in order and a later rule wins, as successive writes to v1's files do. The
program keeps that meaning by testing the rules last-first and returning at the first match; an
access no rule covers is denied, as after v1's ``a *:* rwm`` deny.
"""

from __future__ import annotations

import struct

from pallet.runtime.cgroups.common import CgroupValueError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any

# Devices every container gets on top of its own rules (runc's specconv.AllowedDevices).
DEFAULT_ALLOWED: list[dict[str, Any]] = [
    {"allow": True, "type": "c", "major": None, "minor": None, "access": "m"},
    {"allow": True, "type": "b", "major": None, "minor": None, "access": "m"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # /dev/null
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},  # /dev/random
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},  # /dev/full
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},  # /dev/tty
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},  # /dev/zero
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},  # /dev/urandom
    {"allow": True, "type": "c", "major": 136, "minor": None, "access": "rwm"},  # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},  # /dev/ptmx
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},  # /dev/net/tun
]


def check_rules(rules: list[Any]) -> None:
    for i, r in enumerate(rules):
        f = f"cgroup: linux.resources.devices[{i}]"
        if not isinstance(r, dict):
            raise CgroupValueError(f"{f}: must be an object, not {r!r}")
        if not isinstance(r.get("allow"), bool):
            raise CgroupValueError(f"{f}.allow: must be true or false, not {r.get('allow')!r}")
        t = r.get("type", "a")
        if t not in ("a", "b", "c", None):
            raise CgroupValueError(f"{f}.type: unknown device type {t!r} (want a, b or c)")
        for key in ("major", "minor"):
            v = r.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < -1):
                raise CgroupValueError(f"{f}.{key}: must be a device number or -1, not {v!r}")
        acc = r.get("access", "rwm")
        if acc is None:
            acc = "rwm"
        if not isinstance(acc, str) or acc == "" or set(acc) - set("rwm") or len(set(acc)) != len(acc):
            raise CgroupValueError(f"{f}.access: must be letters from rwm, not {acc!r}")


def effective_rules(rules: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The container's rules followed by the devices every container may use."""
    return list(rules or []) + DEFAULT_ALLOWED


def _num(v: Any) -> int | None:
    return None if v is None or v == -1 else int(v)


def v1_line(rule: dict[str, Any]) -> tuple[str, str]:
    """(file, line) for v1: ("devices.allow", "c 1:3 rwm")."""
    t = rule.get("type") or "a"
    f = "devices.allow" if rule["allow"] else "devices.deny"
    if t == "a":
        return f, "a"
    major, minor = _num(rule.get("major")), _num(rule.get("minor"))
    ma = "*" if major is None else str(major)
    mi = "*" if minor is None else str(minor)
    return f, f"{t} {ma}:{mi} {rule.get('access') or 'rwm'}"


# -- eBPF program ------------------------------------------------------------------------------------
# struct bpf_cgroup_dev_ctx { u32 access_type; /* (access << 16) | type */ u32 major; u32 minor; }

DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
_ACC = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}

# opcodes (linux/bpf_common.h, linux/bpf.h)
_LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_AND32_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_RSH32_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
_MOV32_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X
_MOV64_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_JNE_X = 0x5D  # BPF_JMP | BPF_JNE | BPF_X
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_EXIT = 0x95  # BPF_JMP | BPF_EXIT


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def device_program(rules: list[dict[str, Any]]) -> bytes:
    """Compile rules (in OCI order) into eBPF instructions: r0 = 1 allows, r0 = 0 denies.

    Registers after the prologue: r2 = device type, r3 = requested access, r4 = major, r5 = minor.
    """
    prog = [
        _insn(_LDX_W, dst=2, src=1, off=0),
        _insn(_AND32_K, dst=2, imm=0xFFFF),
        _insn(_LDX_W, dst=3, src=1, off=0),
        _insn(_RSH32_K, dst=3, imm=16),
        _insn(_LDX_W, dst=4, src=1, off=4),
        _insn(_LDX_W, dst=5, src=1, off=8),
    ]
    for rule in reversed(rules):
        t = rule.get("type") or "a"
        acc = 0
        for ch in rule.get("access") or "rwm":
            acc |= _ACC[ch]
        # the tests of one block; each jumps past the block when it fails
        tests: list[tuple[int, int, int, int]] = []  # (code, dst, src, imm)
        if acc != 7:
            # allow needs every requested bit granted, (req & acc) == req; deny needs one bit, != 0
            tests.append((_JNE_X, 1, 3, 0) if rule["allow"] else (_JEQ_K, 1, 0, 0))
        if t != "a":
            tests.append((_JNE_K, 2, 0, DEV_BLOCK if t == "b" else DEV_CHAR))
            major, minor = _num(rule.get("major")), _num(rule.get("minor"))
            if major is not None:
                tests.append((_JNE_K, 4, 0, major))
            if minor is not None:
                tests.append((_JNE_K, 5, 0, minor))
        length = len(tests) + 2 + (2 if acc != 7 else 0)
        if acc != 7:
            prog.append(_insn(_MOV32_X, dst=1, src=3))
            prog.append(_insn(_AND32_K, dst=1, imm=acc))
        done = 2 if acc != 7 else 0
        for code, dst, src, imm in tests:
            prog.append(_insn(code, dst=dst, src=src, off=length - done - 1, imm=imm))
            done += 1
        prog.append(_insn(_MOV64_K, dst=0, imm=1 if rule["allow"] else 0))
        prog.append(_insn(_EXIT))
        if not tests:
            # matches everything: the rules before it can never decide (and the verifier
            # refuses unreachable code)
            return b"".join(prog)
    prog.append(_insn(_MOV64_K, dst=0, imm=0))
    prog.append(_insn(_EXIT))
    return b"".join(prog)


def evaluate(rules: list[dict[str, Any]], dev_type: str, major: int, minor: int, access: str) -> bool:
    """The decision the program makes, computed in Python: the reference the unit tests hold it to."""
    req = 0
    for ch in access:
        req |= _ACC[ch]
    for rule in reversed(rules):
        t = rule.get("type") or "a"
        if t != "a":
            if t != dev_type:
                continue
            ma, mi = _num(rule.get("major")), _num(rule.get("minor"))
            if ma is not None and ma != major or mi is not None and mi != minor:
                continue
        acc = 0
        for ch in rule.get("access") or "rwm":
            acc |= _ACC[ch]
        if rule["allow"] and req & acc == req:
            return True
        if not rule["allow"] and req & acc:
            return False
    return False


# -- v1 transitions ------------------------------------------------------------------------------------
# The v1 kernel keeps a default (allow or deny everything) and a list of exceptions to it; an "a" rule
# sets the default and clears the list, any other rule adds to or removes from the list. Updating a
# running container by "deny a" then the allows would leave it without /dev/null for a moment, so,
# as runc does, compute the state the rules lead to and write only the difference.

Key = tuple[str, str, str]  # (type, major, minor) with "*" for any


class V1State:
    def __init__(self, default_allow: bool, exceptions: dict[Key, set[str]] | None = None) -> None:
        self.default_allow = default_allow
        self.exceptions: dict[Key, set[str]] = exceptions or {}

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, V1State)
            and self.default_allow == other.default_allow
            and self.exceptions == other.exceptions
        )

    def apply(self, rule: dict[str, Any]) -> None:
        t = rule.get("type") or "a"
        if t == "a":
            self.default_allow = bool(rule["allow"])
            self.exceptions = {}
            return
        major, minor = _num(rule.get("major")), _num(rule.get("minor"))
        key = (t, "*" if major is None else str(major), "*" if minor is None else str(minor))
        access = set(rule.get("access") or "rwm")
        if rule["allow"] != self.default_allow:
            self.exceptions.setdefault(key, set()).update(access)  # the kernel merges same-device entries
        elif key in self.exceptions:
            self.exceptions[key] -= access
            if not self.exceptions[key]:
                del self.exceptions[key]


def v1_parse_list(text: str) -> V1State:
    """devices.list: "a *:* rwm" alone when everything is allowed, else the allowed exceptions."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if lines == [["a", "*:*", "rwm"]]:
        return V1State(True)
    state = V1State(False)
    for t, numbers, access in lines:
        major, _, minor = numbers.partition(":")
        state.exceptions.setdefault((t, major, minor), set()).update(access)
    return state


def v1_target(rules: list[dict[str, Any]]) -> V1State:
    """Where the rules lead from a whitelist with nothing in it (runc starts from there too)."""
    state = V1State(False)
    for rule in effective_rules(rules):
        state.apply(rule)
    return state


def v1_transition(current: V1State, target: V1State) -> list[tuple[str, str]]:
    """The (file, line) writes from ``current`` to ``target``: new grants before removals, so no
    device the container keeps is ever denied on the way."""

    def line(key: Key, access: set[str]) -> str:
        return f"{key[0]} {key[1]}:{key[2]} {''.join(c for c in 'rwm' if c in access)}"

    if current.default_allow != target.default_allow or current.default_allow:
        # the default changes (a new cgroup inherits "a *:* rwm"): reset, then the exceptions
        reset = ("devices.allow" if target.default_allow else "devices.deny", "a")
        grant = "devices.deny" if target.default_allow else "devices.allow"
        return [reset] + [(grant, line(k, a)) for k, a in sorted(target.exceptions.items())]
    writes: list[tuple[str, str]] = []
    for key, access in sorted(target.exceptions.items()):
        missing = access - current.exceptions.get(key, set())
        if missing:
            writes.append(("devices.allow", line(key, missing)))
    for key, access in sorted(current.exceptions.items()):
        extra = access - target.exceptions.get(key, set())
        if extra:
            writes.append(("devices.deny", line(key, extra)))
    return writes
