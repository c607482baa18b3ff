"""cgroupsPath resolution (runc's rules), driver detection and the systemd driver's error."""

from __future__ import annotations

import os

import pytest

from pallet.runtime.cgroups import CgroupError, open_manager
from pallet.runtime.cgroups.common import CgroupValueError, clean_path, inner_path, parse_proc_cgroup

V1_SELF = "9:name=systemd:/\n8:pids:/user/1\n4:memory:/api/x\n3:cpu,cpuacct:/svc\n0::/hybrid\n"


def test_clean_path_never_climbs_above_its_base() -> None:
    assert clean_path("../../etc") == "etc"
    assert clean_path("a/../../b") == "b"
    assert clean_path("/a/../../b") == "/b"
    assert clean_path("/a//b/") == "/a/b"
    assert clean_path("") == ""


def test_inner_path_defaults_to_the_container_id() -> None:
    assert inner_path(None, "web") == "web"
    assert inner_path("", "web") == "web"
    assert inner_path("/machine/web", "web") == "/machine/web"
    assert inner_path("pallet/web", "web") == "pallet/web"
    with pytest.raises(CgroupValueError):
        inner_path(None, "..")
    with pytest.raises(CgroupValueError, match="root of the hierarchy"):
        inner_path("/a/..", "web")


def test_parse_proc_cgroup_splits_comounted_controllers() -> None:
    own = parse_proc_cgroup(V1_SELF)
    assert own["cpu"] == own["cpuacct"] == "/svc"
    assert own["memory"] == "/api/x"
    assert own["name=systemd"] == "/"
    assert own[""] == "/hybrid"


def test_v1_absolute_path_is_used_as_is_under_every_hierarchy(fake_v1, proc_cgroup) -> None:
    m = open_manager("/pallet/c1", "c1", root=str(fake_v1.root), proc_cgroup=proc_cgroup(V1_SELF))
    assert m.version == 1
    assert m.paths["memory"] == str(fake_v1.root / "memory/pallet/c1")
    assert m.paths["cpu"] == str(fake_v1.root / "cpu/pallet/c1")
    assert m.paths[""] == str(fake_v1.root / "unified/pallet/c1")
    assert "name=systemd" not in m.paths


def test_v1_relative_path_is_below_our_own_cgroup(fake_v1, proc_cgroup) -> None:
    m = open_manager("box/c1", "c1", root=str(fake_v1.root), proc_cgroup=proc_cgroup(V1_SELF))
    assert m.paths["memory"] == str(fake_v1.root / "memory/api/x/box/c1")
    assert m.paths["cpuacct"] == str(fake_v1.root / "cpuacct/svc/box/c1")
    assert m.paths["pids"] == str(fake_v1.root / "pids/user/1/box/c1")
    assert m.paths["freezer"] == str(fake_v1.root / "freezer/box/c1")  # absent from /proc/self/cgroup: root


def test_v1_default_is_the_container_id_below_our_own_cgroup(fake_v1, proc_cgroup) -> None:
    m = open_manager(None, "web", root=str(fake_v1.root), proc_cgroup=proc_cgroup(V1_SELF))
    assert m.paths["memory"] == str(fake_v1.root / "memory/api/x/web")


def test_v2_absolute_relative_and_default(fake_v2, proc_cgroup) -> None:
    pc = proc_cgroup("0::/user.slice/session-1.scope\n")
    root = fake_v2.root
    assert open_manager("/a/b", "c", root=str(root), proc_cgroup=pc).paths == {"": str(root / "a/b")}
    # relative: below the parent of our own cgroup, which holds processes and so cannot have children
    assert open_manager("a/b", "c", root=str(root), proc_cgroup=pc).paths == {
        "": str(root / "user.slice/a/b")
    }
    assert open_manager(None, "c", root=str(root), proc_cgroup=pc).paths == {"": str(root / "user.slice/c")}
    assert open_manager("../../x", "c", root=str(root), proc_cgroup=pc).paths == {
        "": str(root / "user.slice/x")
    }


def test_detection_picks_the_driver_from_the_root(fake_v1, tmp_path) -> None:
    v2root = tmp_path / "v2"
    v2root.mkdir()
    (v2root / "cgroup.controllers").write_text("memory\n")
    assert open_manager("/x", "x", root=str(v2root)).version == 2
    assert open_manager("/x", "x", root=str(fake_v1.root)).version == 1


def test_open_manager_creates_nothing_and_is_deterministic(fake_v1, fake_v2) -> None:
    for fs in (fake_v1, fake_v2):
        before = sorted(os.walk(fs.root))
        a = open_manager("/p/c1", "c1", root=str(fs.root))
        b = open_manager("/p/c1", "c1", root=str(fs.root))
        assert a.paths == b.paths
        assert not a.exists()
        assert sorted(os.walk(fs.root)) == before
        assert fs.mkdirs == []


def test_systemd_driver_gives_a_clear_error_without_systemd(fake_v1, monkeypatch) -> None:
    import pallet.runtime.cgroups as cg

    monkeypatch.setattr(cg, "systemd_running", lambda: False)
    with pytest.raises(CgroupError, match="systemd cgroup driver: systemd is not running"):
        open_manager("system.slice:pallet:c1", "c1", systemd=True, root=str(fake_v1.root))
