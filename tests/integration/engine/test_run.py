"""What users do with ``docker run``, against pallet: output, exit codes, detached containers, logs,
exec, stop, rm; the core runs with pallet-runtime and with runc."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.engine.conftest import Pallet

pytestmark = pytest.mark.root


def test_run_output_and_exit_codes(any_runtime: Pallet) -> None:
    p = any_runtime
    r = p.run("--rm", "busybox", "echo", "hi")
    assert r.stdout == "hi\n"
    assert p.run("--rm", "busybox", "sh", "-c", "echo err >&2; exit 3", check=False).returncode == 3
    r = p.run("--rm", "busybox", "sh", "-c", "echo err >&2; exit 3", check=False)
    assert r.stderr == "err\n"
    r = p.run("--rm", "busybox", "nosuchcommand", check=False)
    assert r.returncode == 127, r.stderr
    assert "nosuchcommand" in r.stderr
    r = p.run("--rm", "busybox", "/etc", check=False)
    assert r.returncode == 126, r.stderr
    assert p("ps", "-aq").stdout == ""  # --rm left nothing, failed starts included


def test_docker_defaults_inside(any_runtime: Pallet) -> None:
    p = any_runtime
    name = p.name("def")
    script = "hostname; cat /etc/hostname; echo $PATH; grep CapEff /proc/self/status; df -k /dev/shm | tail -1; ip link show lo; grep ^Seccomp: /proc/self/status; cat /proc/keys | wc -c; echo 1 > /proc/sys/vm/drop_caches; true"
    r = p.run("--name", name, "busybox", "sh", "-c", script)
    cid = p("inspect", "-f", "{{.Id}}", name).stdout.strip()
    lines = r.stdout.splitlines()
    assert lines[0] == cid[:12] and lines[1] == cid[:12]
    assert lines[2] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert lines[3].split()[1] == "00000000a80425fb"  # docker's 14 default capabilities
    assert lines[4].split()[1] == "65536"  # /dev/shm is 64m
    assert "UP" in lines[5]  # --network none still has loopback up
    assert lines[-2].split() == ["Seccomp:", "2"]  # docker's default profile, filtering
    assert lines[-1] == "0"  # masked
    assert "Read-only file system" in r.stderr
    p("rm", name)
    r = p.run("--rm", "--security-opt", "seccomp=unconfined", "--cap-drop", "ALL", "--cap-add", "KILL", "busybox",
              "sh", "-c", "grep -E '^(Seccomp|CapEff):' /proc/self/status")  # fmt: skip
    assert r.stdout.split() == ["CapEff:", "0000000000000020", "Seccomp:", "0"]


def test_detached_logs_exec_stop(any_runtime: Pallet) -> None:
    p = any_runtime
    name = p.name("web")
    cid = p.run(
        "-d",
        "--name",
        name,
        "busybox",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done",
    ).stdout.strip()
    assert len(cid) == 64
    out = p("exec", name, "sh", "-c", "echo in-$HOSTNAME").stdout
    assert out == f"in-{cid[:12]}\n"
    assert p("exec", name, "sh", "-c", "exit 5", check=False).returncode == 5
    r = p("exec", name, "nosuch", check=False)
    assert r.returncode in (126, 127), r.stderr
    ps = p("ps", "--format", "{{.Names}} {{.State}}").stdout
    assert f"{name} running" in ps
    p("stop", name)
    st = json.loads(p("inspect", name).stdout)[0]["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 0
    assert p("logs", name).stdout == "up\nbye\n"
    p("rm", cid[:12])
    assert p("ps", "-aq").stdout == ""


def test_run_flags(pallet: Pallet, workdir: Path) -> None:
    (workdir / "env").write_text("# comment\nFROM_FILE=yes\n")
    script = (
        "echo $A $FROM_FILE; pwd; id -un; hostname; touch /x 2>&1 | grep -c Read-only; touch /scratch/ok && echo tmpfs; "
        "cat /proc/sys/net/ipv4/ip_forward; ls -l /dev/mydev | cut -c1; grep CapEff /proc/self/status"
    )
    r = pallet.run("--rm", "-e", "A=1", "--env-file", str(workdir / "env"), "-w", "/tmp", "-u", "app",
                   "--hostname", "box", "--read-only", "--tmpfs", "/scratch:size=1m", "--sysctl", "net.ipv4.ip_forward=1",
                   "--device", "/dev/null:/dev/mydev", "--entrypoint", "sh", "busybox", "-c", script)  # fmt: skip
    assert r.stdout.splitlines() == [
        "1 yes",
        "/tmp",
        "app",
        "box",
        "1",
        "tmpfs",
        "1",
        "c",
        "CapEff:\t0000000000000000",
    ]
    r = pallet.run("--rm", "--privileged", "busybox", "sh", "-c", "grep CapEff /proc/self/status")
    bounding = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("CapBnd:"))
    assert r.stdout.split()[1] == bounding  # all the engine has


def test_network_none_and_host_keep_no_network_state(pallet: Pallet) -> None:
    """--network none or host without network options: no sandbox record (create, start and rm never
    open the network store), the engine's own hosts and resolv.conf; with --add-host or --dns, one."""

    def sandboxes() -> int:
        db = pallet.root / "engine" / "networks.db"
        if not db.exists():
            return 0
        with contextlib.closing(sqlite3.connect(db)) as c:
            return int(c.execute("SELECT count(*) FROM sandboxes").fetchone()[0])

    plain, opts = pallet.name("plain"), pallet.name("opts")
    pallet("create", "--name", plain, "--network", "host", "busybox", "cat", "/etc/hosts")
    pallet("create", "--name", opts, "--network", "none", "--add-host", "db.example:10.1.2.3", "busybox",
           "cat", "/etc/hosts")  # fmt: skip
    assert sandboxes() == 1
    cid = pallet("inspect", "-f", "{{.Id}}", plain).stdout.strip()
    for name in ("hostname", "hosts", "resolv.conf"):  # as an OS crash may leave them: each start writes them
        (pallet.root / "containers" / cid / name).unlink(missing_ok=True)
    assert pallet("start", "-a", plain).stdout.startswith("127.0.0.1\tlocalhost\n")
    assert "10.1.2.3\tdb.example\n" in pallet("start", "-a", opts).stdout
    assert json.loads(pallet("inspect", plain).stdout)[0]["NetworkSettings"]["Networks"] == {"host": {}}
    pallet("rm", plain, opts)
    assert sandboxes() == 0
    r = pallet.run("--rm", "--network", "none", "--dns", "10.9.9.9", "busybox", "cat", "/etc/resolv.conf")
    assert r.stdout.startswith("nameserver 10.9.9.9\n")
    assert sandboxes() == 0


def test_rm_containers_root_is_volatile_and_mounts_again(pallet: Pallet, workdir: Path) -> None:
    """--rm: the root's overlay is volatile (its unmount does not sync the host's filesystem), and
    mounting it again works although the kernel marks such an upper as not to be reused: cp mounts
    and unmounts it before the start mounts it once more."""
    name = pallet.name("vol")
    pallet("create", "--rm", "--name", name, "busybox", "sh", "-c", "grep ' / ' /proc/self/mountinfo; cat /x")
    (workdir / "x").write_text("copied in\n")
    pallet("cp", str(workdir / "x"), f"{name}:/x")
    out = pallet("start", "-a", name).stdout.splitlines()
    root = next(line for line in out if " / " in line)
    opts = root.split(" - ")[1].split()[2].split(",")
    assert "volatile" in opts or "fsync=volatile" in opts, root  # 6.x kernels show fsync=volatile
    assert out[-1] == "copied in"


def test_inprocess_runtime_keeps_the_runtime_state(pallet: Pallet) -> None:
    """pallet-runtime's verbs run inside the monitor's child, yet its own CLI sees the same state."""
    name = pallet.name("state")
    cid = pallet.run("-d", "--name", name, "busybox", "sleep", "60").stdout.strip()
    runtime = Path(sys.executable).parent / "pallet-runtime"
    argv = [str(runtime)] if runtime.exists() else [sys.executable, "-m", "pallet.cli.runtime"]
    st = subprocess.run(
        [*argv, "--root", str(pallet.runroot / "runtime"), "state", cid], capture_output=True, text=True
    )
    assert st.returncode == 0, st.stderr
    state = json.loads(st.stdout)
    assert state["status"] == "running"
    assert state["pid"] == json.loads(pallet("inspect", name).stdout)[0]["State"]["Pid"]
    pallet("rm", "-f", name)
    assert not (pallet.runroot / "runtime" / cid).exists()  # deleted in-process too


def test_the_init_runs_from_the_sealed_interpreter(pallet: Pallet, workdir: Path) -> None:
    # CVE-2019-5736 through the engine: the container's init is forked by its monitor, which is
    # exec'd from the sealed view of the interpreter (monitor/launch.py): /proc/PID/exe of both is a
    # file on a read-only mount, not the host's python, which nothing in a container may reach
    import os

    host = Path(sys.executable).resolve().stat()
    cid = pallet.run("-d", "busybox", "sleep", "60").stdout.strip()
    pid = json.loads(pallet("inspect", cid).stdout)[0]["State"]["Pid"]
    monitor = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert b"pallet-monitor" in Path(f"/proc/{monitor}/cmdline").read_bytes()
    exe = f"/proc/{monitor}/exe"
    st = os.stat(exe)
    assert (st.st_dev, st.st_ino) != (host.st_dev, host.st_ino)
    assert os.statvfs(exe).f_flag & os.ST_RDONLY
    with pytest.raises(OSError):
        with open(exe, "r+b"):
            pass
    # and an entrypoint whose interpreter is /proc/self/exe does not start the host's python
    name = pallet.name("evil")
    pallet("create", "--name", name, "busybox", "/evil")
    evil = workdir / "evil"
    evil.write_text("#!/proc/self/exe\n")
    evil.chmod(0o755)
    pallet("cp", str(evil), f"{name}:/evil")
    r = pallet("start", "-a", name, check=False)
    assert r.returncode != 0 and str(Path(sys.executable).resolve()) not in r.stderr, r.stderr
    pallet("rm", "-f", cid, name)
