"""The engine's pure parts, without root: spec generation, users, capabilities, sizes, config merge,
json-file logs and their rotation, the container store, cp's path resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pallet.engine import spec
from pallet.engine.containers import merge_config, parse_size
from pallet.engine.copy import resolve_in
from pallet.engine.monitor.logs import JsonLog
from pallet.engine.monitor.main import invoke_code
from pallet.engine.store import ContainerStore
from pallet.errors import AlreadyExists, InvalidArgument, NotFound
from pallet.oci.defaults import DOCKER_DEFAULT_CAPABILITIES


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
    )
    (tmp_path / "etc/group").write_text("root:x:0:\napp:x:1000:\nwheel:x:10:app\nstaff:x:50:\n")
    return tmp_path


def test_users(rootfs: Path) -> None:
    assert spec.resolve_user(rootfs, "") == (0, 0, [], "/root")
    assert spec.resolve_user(rootfs, "app") == (1000, 1000, [10], "/home/app")
    assert spec.resolve_user(rootfs, "app:staff") == (1000, 50, [10], "/home/app")
    assert spec.resolve_user(rootfs, "1234:5") == (1234, 5, [], "/")
    with pytest.raises(NotFound, match="unable to find user nobody: no matching entries in passwd file"):
        spec.resolve_user(rootfs, "nobody")
    with pytest.raises(NotFound, match="unable to find group nogroup"):
        spec.resolve_user(rootfs, "app:nogroup")
    (rootfs / "etc/passwd").rename(rootfs / "passwd")
    (rootfs / "etc/passwd").symlink_to("/passwd")  # an absolute link means the image's /passwd
    assert spec.resolve_user(rootfs, "app")[0] == 1000
    (rootfs / "etc/passwd").unlink()
    (rootfs / "etc/passwd").symlink_to("/etc/shadow-of-host/../../../../etc/passwd")
    with pytest.raises(NotFound):  # never the host's passwd (which has root) through the image's link
        spec.resolve_user(rootfs, "root")


def test_capabilities() -> None:
    assert spec.capabilities([], [], False) == list(DOCKER_DEFAULT_CAPABILITIES)
    caps = spec.capabilities(["sys_admin"], ["CAP_NET_RAW", "chown"], False)
    assert "CAP_SYS_ADMIN" in caps and "CAP_NET_RAW" not in caps and "CAP_CHOWN" not in caps
    assert spec.capabilities(["KILL"], ["ALL"], False) == ["CAP_KILL"]
    with pytest.raises(InvalidArgument, match='unknown capability: "CAP_NOPE"'):
        spec.capabilities(["NOPE"], [], False)


def test_sizes_and_signals() -> None:
    assert parse_size("64m", "-m") == 64 * 1024**2
    assert parse_size("1g", "-m") == 1024**3
    assert parse_size("512", "-m") == 512
    assert parse_size("2kb", "-m") == 2048
    for bad in ("abc", "-1m", "12q", ""):
        with pytest.raises(InvalidArgument, match="invalid size"):
            parse_size(bad, "-m, --memory")
    assert (
        spec.parse_signal("TERM") == 15
        and spec.parse_signal("SIGKILL") == 9
        and spec.parse_signal("10") == 10
    )
    with pytest.raises(InvalidArgument):
        spec.parse_signal("SIGNOPE")


def test_merge_config() -> None:
    image = {"Env": ["PATH=/x", "A=1"], "Entrypoint": ["/ep"], "Cmd": ["serve"], "Labels": {"a": "1"}}
    cfg = merge_config(image, {"Env": ["A=2", "B=3"], "Cmd": ["other"], "Labels": {"b": "2"}})
    assert (
        cfg["Env"] == ["PATH=/x", "A=2", "B=3"] and cfg["Entrypoint"] == ["/ep"] and cfg["Cmd"] == ["other"]
    )
    assert cfg["Labels"] == {"a": "1", "b": "2"}
    cfg = merge_config(image, {"Entrypoint": ["sh"], "Cmd": None})
    assert cfg["Entrypoint"] == ["sh"] and cfg["Cmd"] is None  # docker: --entrypoint drops the image's Cmd


def test_generate(rootfs: Path, tmp_path: Path) -> None:
    config = {"Hostname": "abc", "Cmd": ["echo", "hi"], "Env": ["X=1"], "User": "app", "Tty": True}
    host = {"Init": True, "Memory": 1 << 26, "NanoCpus": 500_000_000, "PidsLimit": 9, "ShmSize": 1 << 20,
            "Tmpfs": {"/run": "size=1m"}, "PidMode": "host", "CgroupParent": "/mine"}  # fmt: skip
    oci = spec.generate("f" * 64, config, host, rootfs, tmp_path, {})
    p = oci["process"]
    assert p["args"] == [spec.INIT_PATH, "--", "echo", "hi"]
    assert p["env"] == [spec.DEFAULT_PATH, "HOSTNAME=abc", "TERM=xterm", "X=1", "HOME=/home/app"]
    assert p["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10]} and p["terminal"] is True
    assert oci["hostname"] == "abc" and oci["linux"]["cgroupsPath"] == "/mine/" + "f" * 64
    assert {"type": "pid"} not in oci["linux"]["namespaces"] and {"type": "network"} in oci["linux"][
        "namespaces"
    ]
    r = oci["linux"]["resources"]
    assert r["memory"] == {"limit": 1 << 26, "swap": 1 << 27} and r["cpu"] == {
        "period": 100000,
        "quota": 50000,
    }
    assert r["pids"] == {"limit": 9} and r["devices"][0] == {"allow": False, "access": "rwm"}
    dests = {m["destination"]: m for m in oci["mounts"]}
    assert "size=1024k" in dests["/dev/shm"]["options"] and dests["/run"]["type"] == "tmpfs"
    assert (
        dests["/etc/hosts"]["source"] == str(tmp_path / "hosts")
        and dests[spec.INIT_PATH]["source"] == spec.TINI
    )
    assert "/proc/kcore" in oci["linux"]["maskedPaths"] and "/proc/sys" in oci["linux"]["readonlyPaths"]
    with pytest.raises(InvalidArgument, match="no command specified"):
        spec.generate("f" * 64, {"Hostname": "a"}, {}, rootfs, tmp_path, {})


def test_invoke_codes() -> None:
    assert invoke_code('exec "nosuch": executable file not found in $PATH') == 127
    assert invoke_code("exec /etc: permission denied") == 126
    assert invoke_code("cgroup: no space left") == 125


def test_json_log_rotation(tmp_path: Path) -> None:
    log = JsonLog(str(tmp_path / "c.log"), max_size=300, max_file=3)
    written = []
    for i in range(20):
        written += log.write("stdout", f"line {i}\n".encode())
    log.write("stderr", b"partial")
    written += log.flush()
    recs = [json.loads(x) for x in written]
    assert recs[0]["log"] == "line 0\n" and recs[-1] == recs[-1] | {"log": "partial", "stream": "stderr"}
    assert recs[0]["time"].endswith("Z") and len(recs[0]["time"]) == 30
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["c.log", "c.log.1", "c.log.2"]  # bounded: max-file 3
    for name in files:
        assert (tmp_path / name).stat().st_size <= 300
    kept = [
        json.loads(x)["log"]
        for f in ("c.log.2", "c.log.1", "c.log")
        for x in (tmp_path / f).read_text().splitlines()
    ]
    assert kept[-1] == "partial" and kept[-2] == "line 19\n"  # newest kept, in order, no record split


def test_json_log_long_line(tmp_path: Path) -> None:
    log = JsonLog(str(tmp_path / "c.log"), max_size=0, max_file=1)
    out = log.write("stdout", b"x" * 40000)
    assert [len(json.loads(x)["log"]) for x in out] == [16384, 16384]  # docker's 16 KiB split
    assert [len(json.loads(x)["log"]) for x in log.flush()] == [40000 - 32768]


def test_store(tmp_path: Path) -> None:
    st = ContainerStore(tmp_path / "c.db")
    st.add("ab" * 32, "web", {"Config": {}}, {"Status": "created"})
    st.add("ac" * 32, "db", {"Config": {}}, {"Status": "created"})
    assert st.get("web").id == "ab" * 32 and st.get("/web").id == "ab" * 32 and st.get("abab").name == "web"
    with pytest.raises(InvalidArgument, match="multiple IDs found"):
        st.get("a")
    with pytest.raises(NotFound, match="No such container: zz"):
        st.get("zz")
    with pytest.raises(AlreadyExists, match='"/web" is already in use by container "' + "ab" * 32):
        st.add("ad" * 32, "web", {}, {})
    st.update_state("ab" * 32, lambda s: s.update(Status="running"))
    assert st.get("web").status == "running"
    with pytest.raises(AlreadyExists):
        st.rename("ab" * 32, "db")
    st.delete("ab" * 32)
    assert [r.name for r in st.all()] == ["db"]
    st.close()


def test_resolve_in(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/abs").symlink_to("/etc/passwd")
    (tmp_path / "etc/rel").symlink_to("../../../../etc")
    assert resolve_in(tmp_path, "/etc/abs") == tmp_path / "etc/passwd"  # the image's /, not the host's
    assert resolve_in(tmp_path, "etc/rel/x") == tmp_path / "etc/x"
    assert resolve_in(tmp_path, "/../../x") == tmp_path / "x"
