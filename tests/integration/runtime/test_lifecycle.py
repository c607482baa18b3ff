"""The create/start split, state JSON, signals and delete, on real namespaces with a busybox rootfs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.helpers.runtime import RuntimeCLI, set_config

pytestmark = pytest.mark.root


def wait_status(rt: RuntimeCLI, cid: str, want: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = rt.state(cid)
        if st["status"] == want or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def test_run_prints_output_and_returns_exit_code(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    set_config(bundle, process__args=["sh", "-c", "echo hello; echo $$; exit 3"])
    r = rt("run", "--bundle", str(bundle), cid, check=False)
    assert r.returncode == 3, r.stderr
    assert r.stdout.split() == ["hello", "1"]  # the process is PID 1 of its own pid namespace
    assert rt("list", "-q").stdout.strip() == ""  # run deletes the container afterwards


def test_run_keep_leaves_stopped_container(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    set_config(bundle, process__args=["true"])
    rt("run", "--keep", "--bundle", str(bundle), cid)
    st = rt.state(cid)
    assert st["status"] == "stopped" and st["pid"] == 0
    rt("delete", cid)
    assert not (rt.root / cid).exists()


def test_create_start_state_kill_delete(rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path) -> None:
    # PID 1 only gets signals it handles (pid_namespaces(7)), hence the trap
    set_config(bundle, process__args=["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"])
    pidfile = workdir / "pid"
    rt("create", "--bundle", str(bundle), "--pid-file", str(pidfile), cid)
    st = rt.state(cid)
    assert set(st) >= {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}
    assert st["status"] == "created" and st["id"] == cid and st["bundle"] == str(bundle)
    assert int(pidfile.read_text()) == st["pid"] > 0
    # the init waits in `created`: it has not exec'd sleep yet
    assert "sleep" not in Path(f"/proc/{st['pid']}/cmdline").read_bytes().decode()
    listing = json.loads(rt("list", "--format", "json").stdout)
    assert [c["id"] for c in listing] == [cid]
    rt("start", cid)
    st = rt.state(cid)
    assert st["status"] == "running"
    assert Path(f"/proc/{st['pid']}/cmdline").read_bytes().split(b"\0")[0] == b"sh"
    r = rt("start", cid, check=False)
    assert r.returncode == 1 and "cannot start: it is running" in r.stderr
    r = rt("delete", cid, check=False)
    assert r.returncode == 1 and "cannot delete: it is running" in r.stderr
    rt("kill", cid, "TERM")
    assert wait_status(rt, cid, "stopped")["status"] == "stopped"
    r = rt("kill", cid, "KILL", check=False)
    assert r.returncode == 1 and "stopped" in r.stderr
    rt("delete", cid)
    assert rt("list", "-q").stdout.strip() == ""
    r = rt("state", cid, check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr


@pytest.mark.parametrize("sig", ["9", "SIGKILL", "kill"])
def test_kill_accepts_names_and_numbers(rt: RuntimeCLI, bundle: Path, cid: str, sig: str) -> None:
    set_config(bundle, process__args=["sleep", "600"])
    rt("run", "-d", "--bundle", str(bundle), cid)
    rt("kill", cid, sig)
    assert wait_status(rt, cid, "stopped")["status"] == "stopped"


def test_kill_rejects_bad_signal(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    set_config(bundle, process__args=["sleep", "600"])
    rt("run", "-d", "--bundle", str(bundle), cid)
    r = rt("kill", cid, "SIGNOPE", check=False)
    assert r.returncode == 1 and "invalid signal" in r.stderr
    assert rt.state(cid)["status"] == "running"


def test_delete_created_container_kills_its_init(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    set_config(bundle, process__args=["sleep", "600"])
    rt("create", "--bundle", str(bundle), cid)
    pid = rt.state(cid)["pid"]
    rt("delete", cid)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]


def test_delete_force_running_leaves_no_process(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    set_config(bundle, process__args=["sh", "-c", "sleep 600 & sleep 600 & wait"])
    rt("run", "-d", "--bundle", str(bundle), cid)
    rt("exec", "-d", cid, "sleep", "700")
    pids = json.loads(rt("ps", "--format", "json", cid).stdout)
    assert len(pids) == 4
    rt("delete", "--force", cid)
    time.sleep(0.1)
    for pid in pids:
        assert not Path(f"/proc/{pid}/cmdline").exists() or Path(f"/proc/{pid}/cmdline").read_bytes() == b""


def test_kill_all_signals_every_process(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    set_config(bundle, process__args=["sh", "-c", "trap '' TERM; sleep 600 & wait"])
    rt("run", "-d", "--bundle", str(bundle), cid)
    rt("exec", "-d", cid, "sleep", "600")
    rt("kill", "--all", cid, "KILL")
    assert wait_status(rt, cid, "stopped")["status"] == "stopped"


def test_pause_resume(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    set_config(bundle, process__args=["sleep", "600"])
    rt("run", "-d", "--bundle", str(bundle), cid)
    rt("pause", cid)
    assert rt.state(cid)["status"] == "paused"
    r = rt("pause", cid, check=False)
    assert r.returncode == 1 and "cannot pause: it is paused" in r.stderr
    rt("resume", cid)
    assert rt.state(cid)["status"] == "running"
    r = rt("resume", cid, check=False)
    assert r.returncode == 1 and "cannot resume: it is running" in r.stderr


def test_pid_reuse_reads_as_stopped(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    set_config(bundle, process__args=["sleep", "600"])
    rt("run", "-d", "--keep", "--bundle", str(bundle), cid)
    state_file = rt.root / cid / "state.json"
    data = json.loads(state_file.read_text())
    # pretend the recorded pid now belongs to someone else: the start time no longer matches
    data["pid_start"] += 1
    state_file.write_text(json.dumps(data))
    assert rt.state(cid)["status"] == "stopped"
    r = rt("kill", cid, "KILL", check=False)
    assert r.returncode == 1
    data["pid_start"] -= 1
    state_file.write_text(json.dumps(data))
    assert rt.state(cid)["status"] == "running"


def test_exec_runs_in_the_container(rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path) -> None:
    set_config(bundle, process__args=["sleep", "600"], hostname="ctr-host")
    rt("run", "-d", "--bundle", str(bundle), cid)
    r = rt(
        "exec",
        "--cwd",
        "/tmp",
        "-e",
        "FOO=bar",
        cid,
        "sh",
        "-c",
        "hostname; pwd; echo $FOO; exit 7",
        check=False,
    )
    assert r.returncode == 7
    assert r.stdout.split() == ["ctr-host", "/tmp", "bar"]
    r = rt("exec", "-u", "1000:1000", cid, "id", "-u")
    assert r.stdout.strip() == "1000"
    proc = {
        "args": ["sh", "-c", "echo from-file"],
        "cwd": "/",
        "env": ["PATH=/bin"],
        "user": {"uid": 0, "gid": 0},
    }
    (workdir / "proc.json").write_text(json.dumps(proc))
    assert rt("exec", "--process", str(workdir / "proc.json"), cid).stdout.strip() == "from-file"
    r = rt("exec", cid, "no-such-binary", check=False)
    assert r.returncode != 0 and "executable file not found" in r.stderr


def test_exec_pid_file_and_detach(rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path) -> None:
    set_config(bundle, process__args=["sleep", "600"])
    rt("run", "-d", "--bundle", str(bundle), cid)
    pidfile = workdir / "exec.pid"
    rt("exec", "-d", "--pid-file", str(pidfile), cid, "sleep", "500")
    pid = int(pidfile.read_text())
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"500"]
    # it lives in the container's pid namespace
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{rt.state(cid)['pid']}/ns/pid")
