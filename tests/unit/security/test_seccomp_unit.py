"""seccomp without a kernel filter: validation, the Docker profile's data, BPF compilation, load order."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pallet.errors import InvalidArgument
from pallet.linux import syscalls as s
from pallet.linux.fake import FakeSyscalls
from pallet.oci import runtime_spec
from pallet.oci.defaults import DOCKER_DEFAULT_CAPABILITIES, docker_seccomp_profile
from pallet.runtime import mountopts, process
from pallet.runtime.seccomp import compile_filter, features


def _allowed(profile: dict[str, Any]) -> set[str]:
    return {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args")
            for n in r["names"]}  # fmt: skip


def test_docker_capabilities_are_dockers_fourteen() -> None:
    assert len(DOCKER_DEFAULT_CAPABILITIES) == 14 == len(set(DOCKER_DEFAULT_CAPABILITIES))
    assert "CAP_SYS_ADMIN" not in DOCKER_DEFAULT_CAPABILITIES and "CAP_NET_RAW" in DOCKER_DEFAULT_CAPABILITIES


def test_docker_profile_depends_on_caps_and_arch() -> None:
    base = docker_seccomp_profile(list(DOCKER_DEFAULT_CAPABILITIES), arch="x86_64", kernel=(6, 1))
    runtime_spec.validate_seccomp(base)
    assert base["defaultAction"] == "SCMP_ACT_ERRNO" and base["defaultErrnoRet"] == 1
    assert base["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = _allowed(base)
    assert {"read", "chroot", "arch_prctl", "ptrace"} <= allowed  # CAP_SYS_CHROOT is a default cap
    assert not {"mount", "unshare", "reboot", "swapon", "keyctl", "add_key"} & allowed
    clone = [r for r in base["syscalls"] if r["names"] == ["clone"]]
    assert clone == [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}]  # fmt: skip
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38} in base["syscalls"]
    admin = docker_seccomp_profile([*DOCKER_DEFAULT_CAPABILITIES, "SYS_ADMIN"], arch="x86_64")
    assert {"mount", "unshare", "clone", "clone3", "setns"} <= _allowed(admin)
    assert not [r for r in admin["syscalls"] if r["action"] != "SCMP_ACT_ALLOW"]
    arm = docker_seccomp_profile([], arch="arm64", kernel=(4, 4))
    assert "arch_prctl" not in _allowed(arm) and "set_tls" in _allowed(arm) and "ptrace" not in _allowed(arm)
    assert "chroot" not in _allowed(arm) and arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    s390 = docker_seccomp_profile([], arch="s390x")
    assert [r["args"][0]["index"] for r in s390["syscalls"] if r["names"] == ["clone"]] == [1]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"defaultAction": "SCMP_ACT_NOTIFY"}, "defaultAction"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 70000}, "defaultErrnoRet"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}, "defaultErrnoRet: only meaningful"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_LOG", "errnoRet": 1}]},
         "syscalls[0].errnoRet"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "rel/sock"}, "listenerPath"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_LOG"}]}, "names"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
          "syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]}, "deadlock"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO",
          "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]}, "args[0].value"),
    ],
)  # fmt: skip
def test_seccomp_validation_names_the_field(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(field)):
        runtime_spec.validate_seccomp(bad)


def test_compile_skips_unknown_names_and_splits_same_arg_conditions() -> None:
    base = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"]}
    one = compile_filter({**base, "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]})
    unknown = compile_filter(
        {**base, "syscalls": [{"names": ["mkdir", "no_such_call"], "action": "SCMP_ACT_ERRNO"}]}
    )
    assert one.program == unknown.program and one.flags == 0
    eq = [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"} for v in (1, 2)]
    both = compile_filter(
        {**base, "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": eq}]}
    )
    # as runc: two conditions on one argument are two rules (either value), the same filter as writing them apart
    apart = compile_filter(
        {
            **base,
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [c]} for c in eq],
        }
    )
    assert both.program == apart.program
    anded = [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]
    one_rule = compile_filter(
        {**base, "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": anded}]}
    )
    two_rules = compile_filter(
        {
            **base,
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [c]} for c in anded],
        }
    )
    assert one_rule.program != two_rules.program


def test_compile_flags_and_listener() -> None:
    prof = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock", "listenerMetadata": "m",
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                      "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", "SECCOMP_FILTER_FLAG_TSYNC"],
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}  # fmt: skip
    c = compile_filter(prof)
    assert c.flags == (s.SECCOMP_FILTER_FLAG_LOG | s.SECCOMP_FILTER_FLAG_SPEC_ALLOW
                       | s.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV | s.SECCOMP_FILTER_FLAG_NEW_LISTENER)  # fmt: skip
    assert (c.listener_path, c.listener_metadata) == ("/run/agent.sock", "m")
    # without a notify rule there is no listener, and WAIT_KILLABLE_RECV alone would be refused by the kernel
    prof["syscalls"] = [{"names": ["mkdir"], "action": "SCMP_ACT_LOG"}]
    c = compile_filter(prof)
    assert c.flags == s.SECCOMP_FILTER_FLAG_LOG | s.SECCOMP_FILTER_FLAG_SPEC_ALLOW and c.listener_path == ""


@pytest.mark.parametrize("nnp", [True, False])
def test_filter_load_order(monkeypatch: pytest.MonkeyPatch, nnp: bool) -> None:
    """With no_new_privs the filter goes on last; without it, before capabilities are dropped."""
    sysc = FakeSyscalls()
    monkeypatch.setattr(process, "switch_user", lambda sys, proc: sysc.calls.append(("setresuid", ())))
    monkeypatch.setattr(process, "close_fds", lambda keep: sysc.calls.append(("close_fds", ())))
    monkeypatch.setattr(process, "reset_signals", lambda: None)

    class Exec(Exception):
        pass

    def execve(*a: Any) -> None:
        raise Exec

    monkeypatch.setattr(process.os, "execve", execve)
    proc = {"args": ["true"], "noNewPrivileges": nnp, "user": {"uid": 1000, "gid": 1000}}
    with pytest.raises(Exec):
        process.exec_process(sysc, proc, "/bin/true", set(), lambda: sysc.seccomp_set_filter(0, b""))
    names = sysc.names()
    seccomp, capset = names.index("seccomp_set_filter"), names.index("capset")
    if nnp:
        set_nnp = sysc.calls.index(("prctl", (s.PR_SET_NO_NEW_PRIVS, 1)))
        assert capset < set_nnp < seccomp and names[-1] == "seccomp_set_filter"
        assert names.index("close_fds") < seccomp
    else:
        assert seccomp < names.index("setresuid") < capset


def test_recursive_mount_options() -> None:
    assert mountopts.recursive(["rro", "rnosuid", "nodev"]) == (s.MOUNT_ATTR_RDONLY | s.MOUNT_ATTR_NOSUID, 0)
    assert mountopts.recursive(["rro", "rrw"]) == (0, s.MOUNT_ATTR_RDONLY)
    assert mountopts.recursive(["rnoatime"]) == (s.MOUNT_ATTR_NOATIME, s.MOUNT_ATTR__ATIME)
    assert mountopts.recursive(["rnoatime", "rstrictatime"]) == (
        s.MOUNT_ATTR_STRICTATIME,
        s.MOUNT_ATTR__ATIME,
    )
    flags, _, data = mountopts.parse(["rbind", "rro", "ro"])
    assert flags == s.MS_BIND | s.MS_REC | s.MS_RDONLY and data == ""


@pytest.mark.parametrize(
    ("maps", "msg"),
    [
        ([{"containerID": 0, "hostID": 1, "size": 0}], r"\[0\]\.size: out of range"),
        ([{"containerID": 0, "hostID": 1, "size": 10}, {"containerID": 5, "hostID": 100, "size": 1}], "overlaps"),
        ([{"containerID": 0, "hostID": 1, "size": 10}, {"containerID": 50, "hostID": 9, "size": 1}], "overlaps"),
        ([{"containerID": 0, "hostID": 4294967295, "size": 2}], "past 4294967295"),
    ],
)  # fmt: skip
def test_mapping_validation(maps: list[dict[str, int]], msg: str) -> None:
    with pytest.raises(InvalidArgument, match=msg):
        runtime_spec.validate_mappings(maps, "linux.uidMappings")


def test_features_report_what_validation_accepts() -> None:
    f = features(FakeSyscalls())
    assert f["enabled"] and set(f["actions"]) == set(runtime_spec.SECCOMP_ACTIONS)
    assert set(f["operators"]) == set(runtime_spec.SECCOMP_OPS) and set(f["knownFlags"]) == set(
        runtime_spec.SECCOMP_FLAGS
    )
    assert "SCMP_ARCH_X86_64" in f["archs"] and set(f["archs"]) <= set(runtime_spec.SECCOMP_ARCHES)
    assert f["supportedFlags"] == ["SECCOMP_FILTER_FLAG_TSYNC"]  # the fake kernel knows none of the others
