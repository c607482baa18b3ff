"""config.json fields applied for real: process, user, capabilities, mounts, namespaces, hooks, console."""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tests.helpers.pty import read_pty
from tests.helpers.runtime import RuntimeCLI, edit_config, set_config

pytestmark = pytest.mark.root


def run_out(rt: RuntimeCLI, bundle: Path, cid: str) -> str:
    r = rt("run", "--bundle", str(bundle), cid, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


def status_field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in {text!r}")


def test_process_env_cwd_user_umask_hostname(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    set_config(
        bundle,
        process__args=[
            "sh",
            "-c",
            "echo $GREETING; pwd; id -u; id -g; id -G; umask; hostname; cat /proc/sys/kernel/domainname",
        ],
        process__env=["PATH=/bin:/usr/bin", "GREETING=hi there"],
        process__cwd="/tmp",
        process__user={"uid": 1000, "gid": 1000, "additionalGids": [5, 1000], "umask": 0o027},
        hostname="box",
        domainname="example.test",
    )
    lines = run_out(rt, bundle, cid).splitlines()
    assert lines[:4] == ["hi there", "/tmp", "1000", "1000"]
    assert set(lines[4].split()) == {"1000", "5"}
    assert lines[5:] == ["0027", "box", "example.test"]


def test_capabilities_all_five_sets(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    caps = ["CAP_NET_RAW", "CAP_CHOWN", "CAP_KILL"]
    set_config(
        bundle,
        process__args=["cat", "/proc/self/status"],
        process__capabilities={
            "bounding": caps + ["CAP_SYS_ADMIN"],
            "effective": caps,
            "permitted": caps,
            "inheritable": ["CAP_KILL"],
            "ambient": ["CAP_KILL"],
        },
        process__noNewPrivileges=True,
    )
    out = run_out(rt, bundle, cid)
    bit = {"CAP_CHOWN": 0, "CAP_KILL": 5, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21}
    mask = lambda names: sum(1 << bit[n] for n in names)  # noqa: E731
    assert int(status_field(out, "CapBnd"), 16) == mask(caps + ["CAP_SYS_ADMIN"])
    assert int(status_field(out, "CapEff"), 16) == mask(caps)
    assert int(status_field(out, "CapPrm"), 16) == mask(caps)
    assert int(status_field(out, "CapInh"), 16) == mask(["CAP_KILL"])
    assert int(status_field(out, "CapAmb"), 16) == mask(["CAP_KILL"])
    assert status_field(out, "NoNewPrivs") == "1"


def test_inheritable_stays_empty_unless_asked(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    set_config(bundle, process__args=["cat", "/proc/self/status"])
    out = run_out(rt, bundle, cid)
    assert int(status_field(out, "CapInh"), 16) == 0
    assert int(status_field(out, "CapAmb"), 16) == 0


def test_non_root_user_loses_effective_caps_and_dropped_cap_fails(
    rt: RuntimeCLI, bundle: Path, cid: str
) -> None:
    set_config(bundle, process__args=["sh", "-c", "chown 1000 /tmp/f 2>&1 || echo denied"])
    cfg, save = edit_config(bundle)
    cfg["root"]["readonly"] = False
    cfg["process"]["capabilities"] = {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted")}
    save()
    (bundle / "rootfs" / "tmp" / "f").write_text("x")
    assert run_out(rt, bundle, cid).strip().endswith("denied")


def test_rlimits_and_oom_score_adj(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    set_config(
        bundle,
        process__args=["sh", "-c", "ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj"],
        process__rlimits=[{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}],
        process__oomScoreAdj=123,
    )
    assert run_out(rt, bundle, cid).split() == ["321", "654", "123"]


def test_readonly_root_and_tmpfs_and_bind_mounts(
    rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path
) -> None:
    host = workdir / "hostdir"
    host.mkdir()
    (host / "data").write_text("from host\n")
    cfg, save = edit_config(bundle)
    cfg["root"]["readonly"] = True
    cfg["mounts"] += [
        {"destination": "/data", "type": "bind", "source": str(host), "options": ["rbind", "ro"]},
        {"destination": "/rw", "type": "bind", "source": str(host), "options": ["bind"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "mode=1777"]},
    ]
    cfg["process"]["args"] = [
        "sh", "-c",
        "cat /data/data; touch /x 2>/dev/null || echo root-ro; touch /data/y 2>/dev/null || echo bind-ro;"
        " echo w > /rw/written; echo s > /scratch/s && cat /scratch/s; grep ' /scratch ' /proc/mounts | cut -d' ' -f3",
    ]  # fmt: skip
    save()
    out = run_out(rt, bundle, cid).split("\n")
    assert out[:5] == ["from host", "root-ro", "bind-ro", "s", "tmpfs"]
    assert (host / "written").read_text() == "w\n"


def test_masked_and_readonly_paths(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    cfg, save = edit_config(bundle)
    cfg["process"]["args"] = [
        "sh", "-c",
        "cat /proc/timer_list | wc -c; ls /sys/firmware | wc -l; grep -c ' /proc/keys ' /proc/mounts;"
        " echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo sys-ro",
    ]  # fmt: skip
    save()
    assert Path("/proc/timer_list").read_text()  # the host's has content; the container's is masked
    assert run_out(rt, bundle, cid).split() == ["0", "0", "1", "sys-ro"]


def test_devices_default_set_and_extra_device(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    cfg, save = edit_config(bundle)
    cfg["linux"]["devices"] = [
        {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600}
    ]
    cfg["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]}  # fmt: skip
    cfg["process"]["args"] = ["sh", "-c", "for d in null zero full random urandom tty mynull; do [ -c /dev/$d ] && echo $d; done; stat -c %a /dev/mynull; echo hi > /dev/mynull && echo ok"]  # fmt: skip
    save()
    assert run_out(rt, bundle, cid).split() == [
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "mynull",
        "600",
        "ok",
    ]


def test_join_network_namespace_by_path_and_sysctl(
    rt: RuntimeCLI, bundle: Path, cid: str, token: str
) -> None:
    ns = "p" + token[-10:]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(
            ["ip", "-n", ns, "link", "add", "pdummy0", "type", "veth", "peer", "name", "pdummy1"], check=True
        )
        cfg, save = edit_config(bundle)
        for n in cfg["linux"]["namespaces"]:
            if n["type"] == "network":
                n["path"] = f"/run/netns/{ns}"
        cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
        cfg["process"]["args"] = [
            "sh",
            "-c",
            "ip link show pdummy0 >/dev/null && echo pdummy0; cat /proc/sys/net/ipv4/ip_forward",
        ]
        save()
        assert run_out(rt, bundle, cid).split() == ["pdummy0", "1"]
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def test_unknown_namespace_path_is_rejected(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    cfg, save = edit_config(bundle)
    cfg["linux"]["namespaces"].append({"type": "time", "path": "/proc/nonexistent/ns/time"})
    save()
    r = rt("create", "--bundle", str(bundle), cid, check=False)
    assert r.returncode == 1 and "/proc/nonexistent/ns/time" in r.stderr


def test_user_namespace_maps_root_to_host_uid(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    os.chown(bundle / "rootfs" / "tmp", 100000, 100000)
    cfg, save = edit_config(bundle)
    cfg["root"]["readonly"] = False
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]
    cfg["process"]["args"] = ["sh", "-c", "id -u; cat /proc/self/uid_map; touch /tmp/made-by-root"]
    save()
    out = run_out(rt, bundle, cid).split()
    assert out == ["0", "0", "100000", "65536"]
    made = bundle / "rootfs" / "tmp" / "made-by-root"
    assert made.stat().st_uid == 100000 and made.stat().st_gid == 100000


def test_time_namespace_offsets(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    cfg, save = edit_config(bundle)
    cfg["linux"]["namespaces"].append({"type": "time"})
    cfg["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0}}
    cfg["process"]["args"] = ["cat", "/proc/uptime"]
    save()
    uptime = float(run_out(rt, bundle, cid).split()[0])
    host = float(Path("/proc/uptime").read_text().split()[0])
    assert uptime - host > 86400 * 364


def test_cgroups_path_places_and_removes_cgroup(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    set_config(bundle, process__args=["sleep", "600"], linux__cgroupsPath=f"/{cid}-cg")
    rt("run", "-d", "--bundle", str(bundle), cid)
    pid_file = bundle / "exec.pid"
    rt("exec", "-d", "--pid-file", str(pid_file), cid, "sleep", "600")
    # in every hierarchy the runtime manages (the v1 controllers, the v2 or hybrid unified one), for the
    # container's process and for an exec'd one: the init joins them itself (runtime/container._place)
    for pid in (rt.state(cid)["pid"], int(pid_file.read_text())):
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        managed = [line for line in lines if ":name=" not in line]
        assert managed and all(line.endswith(f"/{cid}-cg") for line in managed), lines
    rt("delete", "--force", cid)
    assert not any(p.exists() for p in Path("/sys/fs/cgroup").glob(f"*/{cid}-cg"))


def test_all_six_hooks_get_the_state(rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path) -> None:
    log = workdir / "hooks.log"
    hook = workdir / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$1 $(cat)" >> {log}\n')
    hook.chmod(0o755)
    cfg, save = edit_config(bundle)
    kinds = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    cfg["hooks"] = {k: [{"path": str(hook), "args": ["hook.sh", k]}] for k in kinds}
    cfg["process"]["args"] = ["true"]
    # startContainer hooks run inside the container: the same path must resolve there too
    cfg["mounts"].append(
        {"destination": str(workdir), "type": "bind", "source": str(workdir), "options": ["bind"]}
    )
    save()
    run_out(rt, bundle, cid)
    entries = [line.split(" ", 1) for line in log.read_text().splitlines()]
    got = [e[0] for e in entries]
    # every kind ran once, in the lifecycle's order
    assert got == kinds
    for _kind, state in entries:
        st = json.loads(state)
        assert st["id"] == cid and st["bundle"] == str(bundle)
    assert json.loads(entries[0][1])["pid"] > 0


def test_failing_prestart_hook_fails_create_and_cleans_up(
    rt: RuntimeCLI, bundle: Path, cid: str, token: str
) -> None:
    cfg, save = edit_config(bundle)
    cfg["hooks"] = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 4"]}]}
    save()
    r = rt("create", "--bundle", str(bundle), cid, check=False)
    assert r.returncode == 1
    assert "prestart hook #0 /bin/sh: exited with status 4: nope" in r.stderr
    assert not (rt.root / cid).exists()


def _console_server(path: Path, got: list[int]) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        fds = array.array("i")
        _msg, anc, _f, _a = conn.recvmsg(4096, socket.CMSG_SPACE(4))
        for _lvl, _typ, data in anc:
            fds.frombytes(data[:4])
        got.extend(fds)
        conn.close()
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_console_socket_receives_the_pty_master(
    rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path
) -> None:
    sock_path = workdir / "console.sock"
    got: list[int] = []
    t = _console_server(sock_path, got)
    set_config(
        bundle,
        process__terminal=True,
        process__consoleSize={"height": 33, "width": 111},
        process__args=["sh", "-c", "tty; stty size; read line; echo got:$line"],
    )
    rt("create", "--bundle", str(bundle), "--console-socket", str(sock_path), cid)
    t.join(5)
    assert len(got) == 1
    master = got[0]
    rt("start", cid)
    os.write(master, b"hello\n")
    out = read_pty(master, until=b"got:hello")
    os.close(master)
    text = out.decode()
    assert "/dev/pts/0" in text and "33 111" in text and "got:hello" in text


def test_run_with_terminal_in_foreground(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    """`run` with terminal:true from a real terminal (a pty we hold) relays both ways."""
    import pty

    set_config(
        bundle, process__terminal=True, process__args=["sh", "-c", "[ -t 0 ] && echo is-a-tty; exit 5"]
    )
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(rt.argv0[0], [*rt.argv0, "--root", str(rt.root), "run", "--bundle", str(bundle), cid])
    out = read_pty(fd)
    _, status = os.waitpid(pid, 0)
    assert b"is-a-tty" in out
    assert os.waitstatus_to_exitcode(status) == 5


def test_preserve_fds_reach_the_container(rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path) -> None:
    f = workdir / "shared.txt"
    f.write_text("through fd 3\n")
    set_config(bundle, process__args=["sh", "-c", "cat <&3; ls /proc/self/fd | sort -n | tr '\\n' ' '"])
    cmd = " ".join(
        [*rt.argv0, "--root", str(rt.root), "run", "--preserve-fds", "1", "--bundle", str(bundle), cid]
    )
    r = subprocess.run(["sh", "-c", f"exec 3<{f}; exec {cmd}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "through fd 3"
    assert lines[1].split() == ["0", "1", "2", "3", "4"]  # 4 is ls's own directory fd


def test_preserve_fds_that_are_not_open_is_an_error(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    r = rt("run", "--preserve-fds", "5", "--bundle", str(bundle), cid, check=False, timeout=30)
    assert r.returncode == 1 and "--preserve-fds" in r.stderr
    assert not (rt.root / cid).exists()


def test_no_pivot(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    set_config(bundle, process__args=["sh", "-c", "ls /bin/busybox"])
    r = rt("run", "--no-pivot", "--bundle", str(bundle), cid, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "/bin/busybox"


@pytest.mark.parametrize("flag", [[], ["--no-new-keyring"]])
def test_session_keyring(rt: RuntimeCLI, bundle: Path, cid: str, flag: list[str]) -> None:
    """A session keyring of its own named _ses.ID, as runc, unless --no-new-keyring."""
    set_config(bundle, process__args=["sleep", "600"])
    rt("run", "-d", *flag, "--bundle", str(bundle), cid)
    keys = Path("/proc/keys").read_text()  # "... keyring   _ses.ID: empty"
    assert (f" _ses.{cid}:" in keys) != bool(flag)


def test_new_network_namespace_has_loopback_up(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    """As runc: a new network namespace starts with lo down, and the runtime brings it up."""
    set_config(bundle, process__args=["ip", "link", "show", "lo"])
    flags = run_out(rt, bundle, cid).splitlines()[0].split("<")[1].split(">")[0].split(",")
    assert "UP" in flags and "LOWER_UP" in flags
