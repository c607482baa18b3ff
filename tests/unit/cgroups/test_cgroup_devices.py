"""Device rules: the compiled eBPF program, run here by a small interpreter, must decide exactly as the
rules say (last matching rule wins, default deny) for every device and access combination."""

from __future__ import annotations

import itertools
import struct

import pytest

from pallet.runtime.cgroups.common import CgroupValueError
from pallet.runtime.cgroups.devices import (
    DEFAULT_ALLOWED,
    V1State,
    check_rules,
    device_program,
    effective_rules,
    evaluate,
    v1_line,
    v1_parse_list,
    v1_target,
    v1_transition,
)

_TYPES = {"b": 1, "c": 2}
_ACC = {"m": 1, "r": 2, "w": 4}


def run_program(prog: bytes, dev_type: str, major: int, minor: int, access: str) -> int:
    """Interpret the handful of eBPF opcodes device_program emits, over bpf_cgroup_dev_ctx."""
    acc = sum(_ACC[c] for c in access)
    ctx = struct.pack("<III", (acc << 16) | _TYPES[dev_type], major, minor)
    regs = [0] * 11
    insns = [struct.unpack_from("<BBhi", prog, i) for i in range(0, len(prog), 8)]
    pc, steps = 0, 0
    m32 = 0xFFFFFFFF
    while True:
        steps += 1
        assert steps < 10_000, "program does not terminate"
        code, regs_byte, off, imm = insns[pc]
        dst, src = regs_byte & 0xF, regs_byte >> 4
        pc += 1
        if code == 0x61:  # ldx w: only from the context (r1 at entry)
            assert src == 1 and pc <= 6, "context read after r1 was reused"
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == 0x54:
            regs[dst] = (regs[dst] & imm) & m32
        elif code == 0x74:
            regs[dst] = (regs[dst] >> imm) & m32
        elif code == 0xBC:
            regs[dst] = regs[src] & m32
        elif code == 0xB7:
            regs[dst] = imm
        elif code == 0x55:
            if regs[dst] != imm:
                pc += off
        elif code == 0x5D:
            if regs[dst] != regs[src]:
                pc += off
        elif code == 0x15:
            if regs[dst] == imm:
                pc += off
        elif code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


RULESETS = [
    [],
    [{"allow": False, "access": "rwm"}],
    [{"allow": True, "access": "rwm"}],
    [{"allow": True, "type": "a"}, {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}],
    [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": None, "access": "rw"},
        {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "w"},
        {"allow": True, "type": "b", "major": 8, "minor": 0, "access": "m"},
        {"allow": True, "type": "c", "major": -1, "minor": 7, "access": "r"},
    ],
]
DEVICES = [
    ("c", 1, 3),
    ("c", 10, 229),
    ("c", 10, 1),
    ("b", 8, 0),
    ("b", 8, 1),
    ("c", 4, 7),
    ("c", 136, 5),
    ("b", 1, 3),
]
ACCESSES = ["r", "w", "m", "rw", "rwm", "wm"]


@pytest.mark.parametrize("rules", RULESETS)
def test_program_decides_as_the_rules_say(rules) -> None:
    for full in (rules, effective_rules(rules)):
        prog = device_program(full)
        for (t, ma, mi), acc in itertools.product(DEVICES, ACCESSES):
            want = evaluate(full, t, ma, mi, acc)
            assert run_program(prog, t, ma, mi, acc) == int(want), (full, t, ma, mi, acc)


def test_reference_decisions() -> None:
    rules = RULESETS[4]
    assert not evaluate(rules, "c", 1, 3, "r")  # default deny
    assert evaluate(rules, "c", 10, 1, "rw")
    assert evaluate(rules, "c", 10, 229, "r")
    assert not evaluate(rules, "c", 10, 229, "rw")  # a later deny of w wins
    assert evaluate(rules, "b", 8, 0, "m") and not evaluate(rules, "b", 8, 0, "r")
    assert evaluate(rules, "c", 4, 7, "r")  # major -1 is a wildcard
    assert evaluate(effective_rules([{"allow": False, "access": "rwm"}]), "c", 1, 3, "rw")  # /dev/null


def test_nothing_after_a_catch_all_rule_is_emitted() -> None:
    # the verifier refuses unreachable instructions, so a catch-all ends the program
    prog = device_program(
        [{"allow": True, "type": "c", "major": 1, "minor": 3}, {"allow": False, "access": "rwm"}]
    )
    assert len(prog) // 8 == 6 + 2
    assert struct.unpack_from("<BBhi", prog, len(prog) - 8)[0] == 0x95


def test_v1_lines() -> None:
    assert v1_line({"allow": False, "access": "rwm"}) == ("devices.deny", "a")
    assert v1_line({"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}) == (
        "devices.allow",
        "c 1:3 rw",
    )
    assert v1_line({"allow": True, "type": "b", "major": None, "minor": -1}) == ("devices.allow", "b *:* rwm")
    assert DEFAULT_ALLOWED[2] == {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}


@pytest.mark.parametrize(
    "rule, match",
    [
        ({"allow": True, "type": "x"}, "unknown device type 'x'"),
        ({"allow": "yes"}, "allow: must be true or false"),
        ({"allow": True, "access": "rwx"}, "access: must be letters from rwm"),
        ({"allow": True, "access": ""}, "access: must be letters from rwm"),
        ({"allow": True, "major": -2}, "major: must be a device number"),
        ({"allow": True, "minor": "3"}, "minor: must be a device number"),
        ("c 1:3 rwm", "must be an object"),
    ],
)
def test_bad_rules_are_refused(rule, match) -> None:
    with pytest.raises(CgroupValueError, match=match):
        check_rules([rule])


def test_v1_state_follows_the_kernel_rules() -> None:
    st = V1State(False)
    st.apply({"allow": True, "type": "c", "major": 1, "minor": 3, "access": "r"})
    st.apply({"allow": True, "type": "c", "major": 1, "minor": 3, "access": "w"})  # merged
    st.apply({"allow": True, "type": "b", "major": None, "minor": None, "access": "m"})
    assert st.exceptions == {("c", "1", "3"): {"r", "w"}, ("b", "*", "*"): {"m"}}
    st.apply({"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rm"})  # takes r away
    assert st.exceptions[("c", "1", "3")] == {"w"}
    st.apply({"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"})  # nothing left: gone
    assert ("c", "1", "3") not in st.exceptions
    st.apply({"allow": True, "access": "rwm"})
    assert st.default_allow and st.exceptions == {}
    st.apply({"allow": False, "type": "c", "major": 5, "minor": 1, "access": "rwm"})  # an exception to allow
    assert st.exceptions == {("c", "5", "1"): {"r", "w", "m"}}


def test_v1_list_parsing() -> None:
    assert v1_parse_list("a *:* rwm\n") == V1State(True)
    assert v1_parse_list("") == V1State(False)
    assert v1_parse_list("c 1:3 rwm\nc 136:* rw\n").exceptions == {
        ("c", "1", "3"): {"r", "w", "m"},
        ("c", "136", "*"): {"r", "w"},
    }


def test_v1_transitions() -> None:
    target = v1_target([{"allow": False, "access": "rwm"}])
    assert v1_transition(target, target) == []
    writes = v1_transition(V1State(True), target)
    assert writes[0] == ("devices.deny", "a") and ("devices.allow", "c 1:3 rwm") in writes
    to_allow_all = v1_transition(target, v1_target([{"allow": True, "access": "rwm"}]))
    assert to_allow_all == [("devices.allow", "a")]
