"""Mount specs (-v, --mount, --volumes-from, VOLUME) into docker's Mounts; volume records; copy-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pallet.engine.volumes import Volumes, copy_up
from pallet.errors import Conflict, InvalidArgument, NotFound


def test_bind_volume_and_anonymous_specs(tmp_path: Path) -> None:
    vols = Volumes(tmp_path / "root")
    host = tmp_path / "h"
    host.mkdir()
    ms = vols.mounts(
        {"Volumes": {"/img": {}, "/named": {}}},
        {"Binds": [f"{host}:/b:ro,rshared", "named:/named", "/anon"],
         "MountSpecs": ["type=tmpfs,target=/t,tmpfs-size=1m", f"type=bind,src={host},dst=/b2,readonly"]},
        [],
    )  # fmt: skip
    by = {m["Destination"]: m for m in ms}
    assert by["/b"] | {} == by["/b"] and by["/b"]["Type"] == "bind" and by["/b"]["ReadOnly"]
    assert by["/b"]["Propagation"] == "rshared"
    assert (
        by["/named"]["Type"] == "volume" and by["/named"]["Name"] == "named" and not by["/named"]["Anonymous"]
    )
    assert by["/anon"]["Anonymous"] and by["/img"]["Anonymous"] and by["/img"]["CopyUp"]
    assert by["/t"]["Type"] == "tmpfs" and by["/t"]["Options"] == ["size=1m"]
    assert by["/b2"]["ReadOnly"] and by["/b2"]["Source"] == str(host)
    assert {v["Name"] for v in vols.all()} == {"named", by["/anon"]["Name"], by["/img"]["Name"]}
    vols.mounts({}, {"MountSpecs": ["type=volume,source=lab,target=/l,volume-label=team=a"]}, [])
    assert vols.get("lab")["Labels"] == {"team": "a"}


@pytest.mark.parametrize(
    "binds, specs, msg",
    [
        (["x:/a:bogus"], [], "invalid mode: bogus"),
        (["x:rel"], [], "invalid volume specification"),
        (["/a:/b:c:d"], [], "invalid volume specification"),
        (["vol:/a:rshared"], [], "propagation applies to bind mounts only"),
        ([], ["type=bind,target=/x"], "source is required"),
        ([], ["type=volume,target=/x,colour=blue"], "unexpected key 'colour'"),
        ([], ["type=volume,source=v1,target=/x,volume-opt=type=nfs"], "the local driver takes no options"),
        ([], ["type=tmpfs,source=x,target=/x"], "source must not be set"),
        (["aa:/x", "bb:/x"], [], "Duplicate mount point: /x"),
    ],
)
def test_bad_specs_make_nothing(tmp_path: Path, binds: list[str], specs: list[str], msg: str) -> None:
    vols = Volumes(tmp_path / "root")
    with pytest.raises(InvalidArgument, match=msg):
        vols.mounts({}, {"Binds": binds, "MountSpecs": specs}, [])
    assert vols.all() == []


def test_volume_records(tmp_path: Path) -> None:
    vols = Volumes(tmp_path / "root")
    v = vols.create("keep", {"a": "b"})
    assert vols.create("keep") == v  # creating an existing volume returns it
    assert v["Labels"] == {"a": "b"} and Path(v["Mountpoint"]).is_dir()
    with pytest.raises(InvalidArgument, match="invalid characters"):
        vols.create("-bad")
    with pytest.raises(InvalidArgument, match="plugin"):
        vols.create("x1", driver="nfs")
    anon = vols.create(anonymous=True)
    gone, _ = vols.prune()
    assert gone == [anon["Name"]]
    assert [x["Name"] for x in vols.all()] == ["keep"]
    assert vols.prune(all_volumes=True, labels=["a=c"])[0] == []
    assert vols.prune(all_volumes=True, labels=["a=b"])[0] == ["keep"]
    with pytest.raises(NotFound, match="no such volume"):
        vols.remove("keep")


def test_in_use_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vols = Volumes(tmp_path / "root")
    vols.create("used")
    monkeypatch.setattr(vols, "users", lambda name: ["c0ffee"])
    with pytest.raises(Conflict, match=r"remove used: volume is in use - \[c0ffee\]"):
        vols.remove("used")


def test_copy_up_keeps_modes_and_does_not_follow_symlinks_out(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "srv/app/sub").mkdir(parents=True)
    (rootfs / "srv/app/f").write_text("x")
    os.chmod(rootfs / "srv/app", 0o750)
    os.symlink("/etc/passwd", rootfs / "srv/app/link")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    os.symlink(str(outside), rootfs / "esc")
    vols = Volumes(tmp_path / "root")
    ms = vols.mounts({"Volumes": {"/srv/app": {}, "/esc": {}}}, {}, [])
    copy_up(rootfs, ms)
    app = Path(next(m["Source"] for m in ms if m["Destination"] == "/srv/app"))
    assert (app / "f").read_text() == "x" and (app / "sub").is_dir()
    assert os.readlink(app / "link") == "/etc/passwd"
    assert oct(app.stat().st_mode & 0o777) == oct(0o750)
    esc = Path(next(m["Source"] for m in ms if m["Destination"] == "/esc"))
    assert list(esc.iterdir()) == []
