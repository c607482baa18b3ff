"""Runtime pieces that need no root: spec validation, capabilities, mount options, paths, state."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pallet.errors import AlreadyExists, InvalidArgument, NotFound
from pallet.linux import syscalls as s
from pallet.oci import runtime_spec
from pallet.runtime import caps, mountopts
from pallet.runtime.container import _host_id, exit_status
from pallet.runtime.rootfs import RootfsError, secure_join
from pallet.runtime.state import State, StateDir, proc_start_time


def test_default_spec_is_valid_and_rootless_variant_maps_us() -> None:
    runtime_spec.validate(runtime_spec.default_spec())
    spec = runtime_spec.default_spec(rootless=True)
    runtime_spec.validate(spec)
    types = {n["type"] for n in spec["linux"]["namespaces"]}
    assert "user" in types and "network" not in types
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
    assert not any(m["destination"] == "/sys/fs/cgroup" for m in spec["mounts"])


@pytest.mark.parametrize("cid", ["abc", "a.b-c_d+e", "0" * 64])
def test_valid_ids(cid: str) -> None:
    runtime_spec.validate_id(cid)


@pytest.mark.parametrize("cid", ["", "../x", "a/b", ".hidden", "-x", "a b", "x" * 1025])
def test_invalid_ids(cid: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid container id"):
        runtime_spec.validate_id(cid)


def test_load_reports_malformed_json_with_path(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(InvalidArgument, match=r"config.json: malformed JSON"):
        runtime_spec.load(str(tmp_path))


def test_validation_names_nested_field() -> None:
    spec = runtime_spec.default_spec()
    spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": "1000", "size": 1}]
    with pytest.raises(InvalidArgument, match=r"linux.uidMappings\[0\].hostID: expected an integer, got str"):
        runtime_spec.validate(spec)


def test_booleans_are_not_integers() -> None:
    spec = runtime_spec.default_spec()
    spec["process"]["user"]["uid"] = True
    with pytest.raises(InvalidArgument, match="process.user.uid: expected an integer"):
        runtime_spec.validate(spec)


def test_caps_parse_and_unknown_name() -> None:
    sets = caps.parse({"bounding": ["CAP_KILL", "net_raw"], "ambient": []})
    assert sets["bounding"] == (1 << 5) | (1 << 13)
    assert sets["effective"] == 0
    with pytest.raises(
        InvalidArgument, match=r"process.capabilities.permitted: unknown capability 'CAP_NOPE'"
    ):
        caps.parse({"permitted": ["CAP_NOPE"]})


def test_check_grantable_names_missing_capability() -> None:
    sets = caps.parse({"effective": ["CAP_SYS_RESOURCE", "CAP_KILL"]})
    bounding = (1 << (caps.last_cap() + 1)) - 1 & ~(1 << caps.NUMBERS["CAP_SYS_RESOURCE"])
    with pytest.raises(InvalidArgument, match="CAP_SYS_RESOURCE not in this host's capability bounding set"):
        caps.check_grantable(sets, bounding)
    caps.check_grantable(caps.parse({"effective": ["CAP_KILL"]}), bounding)


def test_mount_options_to_flags() -> None:
    flags, prop, data = mountopts.parse(["rbind", "ro", "nosuid", "rslave", "mode=755", "size=1m"])
    assert flags == s.MS_BIND | s.MS_REC | s.MS_RDONLY | s.MS_NOSUID
    assert prop == [s.MS_SLAVE | s.MS_REC]
    assert data == "mode=755,size=1m"
    flags, _, _ = mountopts.parse(["ro", "rw", "noexec", "exec"])
    assert flags == 0  # later options win, as mount(8)


def test_secure_join_clamps_dotdot_and_resolves_symlinks_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "abs").symlink_to("/etc")  # absolute: means the container's /etc
    (root / "rel").symlink_to("../../../../etc")  # climbs: clamped at the root
    (root / "loop").symlink_to("loop")
    r = str(root)
    assert secure_join(r, "/../../x") == f"{r}/x"
    assert secure_join(r, "/abs/passwd") == f"{r}/etc/passwd"
    assert secure_join(r, "rel/shadow") == f"{r}/etc/shadow"
    assert secure_join(r, "/a/./b/../c") == f"{r}/a/c"
    with pytest.raises(RootfsError, match="too many levels of symbolic links"):
        secure_join(r, "/loop")


def test_state_dir_roundtrip_and_duplicate(tmp_path: Path) -> None:
    sd = StateDir(str(tmp_path), "c1")
    sd.create()
    with pytest.raises(AlreadyExists):
        StateDir(str(tmp_path), "c1").create()
    st = State(
        id="c1", bundle="/b", rootfs="/b/rootfs", pid=os.getpid(), pid_start=proc_start_time(os.getpid()) or 0
    )
    sd.save(st)
    assert sd.load() == st
    assert json.loads((tmp_path / "c1" / "state.json").read_text())["id"] == "c1"
    sd.remove()
    with pytest.raises(NotFound, match="container 'c1': does not exist"):
        sd.load()


def test_oci_state_shape() -> None:
    st = State(id="c", bundle="/b", rootfs="/b/r", pid=42, created="t", owner="root", annotations={"a": "b"})
    assert st.oci_state("running") == {
        "ociVersion": runtime_spec.OCI_VERSION, "id": "c", "pid": 42, "status": "running", "bundle": "/b",
        "rootfs": "/b/r", "created": "t", "owner": "root", "annotations": {"a": "b"},
    }  # fmt: skip
    assert st.oci_state("stopped")["pid"] == 0


def test_proc_start_time_of_self_and_of_nobody() -> None:
    assert proc_start_time(os.getpid()) == proc_start_time(os.getpid()) > 0
    assert proc_start_time(2**22 + 12345) is None


def test_host_id_mapping() -> None:
    maps = [
        {"containerID": 0, "hostID": 100000, "size": 1000},
        {"containerID": 1000, "hostID": 5000, "size": 1},
    ]
    assert _host_id(maps, 0) == 100000
    assert _host_id(maps, 999) == 100999
    assert _host_id(maps, 1000) == 5000
    assert _host_id(None, 7) == 7


def test_exit_status_of_signal_and_code() -> None:
    assert exit_status(3 << 8) == 3
    assert exit_status(9) == 128 + 9
