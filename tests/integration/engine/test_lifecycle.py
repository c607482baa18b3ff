"""Containers over time: stdin and ttys, logs -f, restart policies, health checks, --init, cp, commit,
rm, ps/inspect, names and short ids, and containers that outlive a killed CLI."""

from __future__ import annotations

import json
import os
import pty
import selectors
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pallet.runtime.cgroups.common import shares_to_weight
from tests.helpers.pty import read_pty
from tests.integration.engine.conftest import Pallet

pytestmark = pytest.mark.root


def wait_until(fn: object, timeout: float = 15.0) -> None:
    """Test-side wait for an asynchronous state (restart count, health) to show in inspect."""
    deadline = time.monotonic() + timeout
    while not fn():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def inspect(p: Pallet, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(p("inspect", name).stdout)[0]  # type: ignore[no-any-return]


def test_interactive_stdin(any_runtime: Pallet) -> None:
    r = any_runtime.run("--rm", "-i", "busybox", "sh", "-c", "tr a-z A-Z; echo done", input="hello\nworld\n")
    assert r.stdout == "HELLO\nWORLD\ndone\n"
    # without -i the container's stdin is empty
    r = any_runtime.run("--rm", "busybox", "sh", "-c", "cat; echo end", input="ignored\n")
    assert r.stdout == "end\n"


def test_tty(pallet: Pallet) -> None:
    """run -t from a terminal: the process sees a tty of our size, output comes back, exit code too."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(
            pallet.cmd()[0], pallet.cmd("run", "--rm", "-t", "busybox", "sh", "-c", "tty; stty size; exit 7")
        )
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 77, 0, 0))
    out = read_pty(fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7
    text = out.decode().replace("\r", "")
    assert "/dev/pts/0" in text and "33 77" in text


def test_logs_follow_and_rotation(pallet: Pallet) -> None:
    name = pallet.name("logs")
    pallet.run("-d", "--name", name, "--log-opt", "max-size=2k", "--log-opt", "max-file=2", "busybox", "sh", "-c",
               "i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done; sleep 60")  # fmt: skip
    follower = subprocess.Popen(pallet.cmd("logs", "-f", name), stdout=subprocess.PIPE)
    # -f streams: the last line arrives while the container still runs
    assert follower.stdout is not None
    fd = follower.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    got = b""
    while not got.endswith(b"line-199\n"):
        assert sel.select(timeout=20), f"logs -f printed nothing new after {got[-20:]!r}"
        chunk = os.read(fd, 65536)
        assert chunk, "logs -f ended while the container runs"
        got += chunk
    sel.close()
    assert pallet("inspect", "-f", "{{.State.Running}}", name).stdout == "true\n"
    log_path = Path(inspect(pallet, name)["LogPath"])
    assert log_path.stat().st_size <= 2048
    assert Path(str(log_path) + ".1").exists() and not Path(str(log_path) + ".2").exists()
    pallet("kill", name)
    out, _ = follower.communicate(timeout=20)  # and it ends when the container does
    lines = (got + out).decode().splitlines()
    assert lines[-1] == "line-199" and len(lines) == len(set(lines))  # rotation bounded it, no repeats
    assert pallet("logs", "--tail", "2", name).stdout == "line-198\nline-199\n"
    ts = pallet("logs", "-t", "--tail", "1", name).stdout
    assert ts.endswith("Z line-199\n")


def test_restart_policy(any_runtime: Pallet) -> None:
    p = any_runtime
    name = p.name("rp")
    p.run("-d", "--name", name, "--restart", "on-failure:2", "busybox", "sh", "-c", "echo try; exit 4")
    wait_until(lambda: inspect(p, name)["State"]["Status"] == "exited")
    info = inspect(p, name)
    assert info["RestartCount"] == 2 and info["State"]["ExitCode"] == 4, info["State"]
    assert p("logs", name).stdout == "try\ntry\ntry\n"
    # always: restarts after exit 0 too, until stop
    name2 = p.name("always")
    p.run("-d", "--name", name2, "--restart", "always", "busybox", "sh", "-c", "sleep 0.2")
    wait_until(lambda: inspect(p, name2)["RestartCount"] >= 2)
    p("stop", "-t", "1", name2)
    count = inspect(p, name2)["RestartCount"]
    assert inspect(p, name2)["State"]["Status"] == "exited"
    time.sleep(0.5)
    assert inspect(p, name2)["RestartCount"] == count  # a stopped container stays stopped


def test_health(pallet: Pallet) -> None:
    name = pallet.name("hc")
    pallet.run("-d", "--name", name, "--health-cmd", "test -e /tmp/ok", "--health-interval", "200ms",
               "--health-retries", "2", "--health-timeout", "2s", "busybox", "sleep", "60")  # fmt: skip
    wait_until(lambda: inspect(pallet, name)["State"]["Health"]["Status"] == "unhealthy")
    assert "(unhealthy)" in pallet("ps", "--filter", f"name={name}").stdout
    assert pallet("ps", "-q", "--filter", "health=unhealthy").stdout.strip()
    pallet("exec", name, "touch", "/tmp/ok")
    wait_until(lambda: inspect(pallet, name)["State"]["Health"]["Status"] == "healthy")
    health = inspect(pallet, name)["State"]["Health"]
    assert health["FailingStreak"] == 0 and health["Log"][-1]["ExitCode"] == 0
    pallet("rm", "-f", name)


def test_init_reaps_and_forwards(any_runtime: Pallet) -> None:
    p = any_runtime
    name = p.name("init")
    # sh's orphaned grandchildren get reparented to PID 1: with --init, tini reaps them
    script = "trap 'echo got-term; exit 0' TERM; (sleep 0.1 &) ; sleep 0.5; ps -o stat,comm | grep -c '^Z' ; while true; do sleep 0.1; done"
    p.run("-d", "--init", "--name", name, "busybox", "sh", "-c", script)
    wait_until(lambda: len(p("logs", name).stdout.splitlines()) >= 1)
    assert p("logs", name).stdout.splitlines()[0] == "0"  # no zombies
    assert p("exec", name, "cat", "/proc/1/comm").stdout.strip() == "docker-init"
    t0 = time.monotonic()
    p("stop", name)  # TERM goes to tini, which forwards it to sh
    assert time.monotonic() - t0 < 5
    assert "got-term" in p("logs", name).stdout
    assert inspect(p, name)["State"]["ExitCode"] == 0


def test_cp_both_ways_and_commit(pallet: Pallet, workdir: Path) -> None:
    name = pallet.name("cp")
    pallet.run("-d", "--name", name, "busybox", "sleep", "60")
    (workdir / "in.txt").write_text("from host\n")
    pallet("cp", str(workdir / "in.txt"), f"{name}:/tmp/")
    assert pallet("exec", name, "cat", "/tmp/in.txt").stdout == "from host\n"
    pallet("exec", name, "sh", "-c", "mkdir /data && echo a > /data/a && ln -s /etc/passwd /data/link")
    pallet("cp", f"{name}:/data", str(workdir / "out"))
    assert (workdir / "out" / "a").read_text() == "a\n"
    assert os.readlink(workdir / "out" / "link") == "/etc/passwd"  # links are copied, not followed
    r = pallet("cp", f"{name}:/nonexistent", str(workdir), check=False)
    assert r.returncode == 125 and "Could not find the file /nonexistent" in r.stderr
    diff = pallet("diff", name).stdout.splitlines()
    assert "A /tmp/in.txt" in diff and "A /data/a" in diff
    assert not any("hostname" in d or "resolv" in d for d in diff)  # the engine's mountpoints are not changes
    image = pallet("commit", name, f"{pallet.token}:v1").stdout.strip()
    assert image.startswith("sha256:")
    r = pallet.run("--rm", f"{pallet.token}:v1", "sh", "-c", "cat /tmp/in.txt /data/a")
    assert r.stdout == "from host\na\n"
    # links in the container resolve in the container, whichever way the copy goes
    pallet(
        "exec",
        name,
        "sh",
        "-c",
        f"ln -s /etc /{pallet.token}; echo mine > /tmp/secret; ln -s /tmp/secret /out",
    )
    pallet("cp", str(workdir / "in.txt"), f"{name}:/{pallet.token}/{pallet.token}.txt")
    assert not Path(f"/etc/{pallet.token}.txt").exists()
    assert pallet("exec", name, "cat", f"/etc/{pallet.token}.txt").stdout == "from host\n"
    pallet("cp", f"{name}:/out", str(workdir / "o"))
    assert os.readlink(workdir / "o") == "/tmp/secret"  # the link itself, as docker cp without -L
    pallet("cp", f"{name}:/{pallet.token}/passwd", str(workdir / "pw"))
    assert (workdir / "pw").read_text().endswith("app:x:1000:1000:app:/home/app:/bin/sh\n")  # the image's
    # a stopped container's files can be copied out too
    pallet("stop", "-t", "0", name)
    pallet("cp", f"{name}:/tmp/in.txt", str(workdir / "again.txt"))
    assert (workdir / "again.txt").read_text() == "from host\n"


def test_rm_force_and_volumes(pallet: Pallet) -> None:
    name = pallet.name("rm")
    cid = pallet.run("-d", "--name", name, "-v", "/vol", "busybox", "sleep", "60").stdout.strip()
    r = pallet("rm", name, check=False)
    assert r.returncode == 125
    assert f'cannot remove container "/{name}": container is running' in r.stderr
    assert inspect(pallet, name)["State"]["Running"]
    vol = Path(inspect(pallet, name)["Mounts"][0]["Source"])
    assert vol.is_dir()
    pallet("exec", name, "sh", "-c", "echo kept > /vol/f")
    assert (vol / "f").read_text() == "kept\n"
    assert pallet("rm", "-f", "-v", cid[:8]).stdout.strip() == cid[:8]
    assert not vol.parent.exists()
    assert pallet("ps", "-aq").stdout == ""


def test_ps_filters_format_names(pallet: Pallet) -> None:
    a, b = pallet.name("a"), pallet.name("b")
    ida = pallet.run("-d", "--name", a, "-l", "tier=web", "busybox", "sleep", "60").stdout.strip()
    pallet("create", "--name", b, "busybox", "true")
    assert pallet("ps", "-q").stdout.split() == [ida[:12]]
    assert set(pallet("ps", "-aq").stdout.split()) == {ida[:12], inspect(pallet, b)["Id"][:12]}
    assert pallet("ps", "-a", "--filter", "status=created", "--format", "{{.Names}}").stdout == f"{b}\n"
    assert pallet("ps", "--filter", "label=tier=web", "--format", "{{.Names}}").stdout == f"{a}\n"
    rows = [json.loads(line) for line in pallet("ps", "-a", "--format", "{{json .}}").stdout.splitlines()]
    assert {r["Names"] for r in rows} == {a, b}
    table = pallet("ps", "--format", "table {{.ID}}\\t{{.Names}}").stdout.splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "NAMES"] and table[1].split() == [ida[:12], a]
    info = inspect(pallet, ida[:6])
    assert info["Name"] == "/" + a and info["Config"]["Labels"] == {"tier": "web"}
    assert info["Config"]["Hostname"] == ida[:12] and info["State"]["Pid"] > 0
    assert pallet("inspect", "-f", "{{.State.Status}}", a).stdout == "running\n"
    pallet("rename", a, a + "-new")
    assert pallet("inspect", "-f", "{{.Name}}", ida).stdout == f"/{a}-new\n"
    pallet("pause", ida[:12])
    assert pallet("inspect", "-f", "{{.State.Status}}", ida).stdout == "paused\n"
    pallet("unpause", ida[:12])
    top = pallet("top", ida).stdout.splitlines()
    assert top[0].split()[:2] == ["UID", "PID"] and "sleep 60" in top[1]
    stats = pallet("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", ida).stdout
    assert stats == f"{a}-new 1\n"
    assert pallet("port", ida).stdout == ""
    assert pallet("wait", b).stdout == "0\n"  # a created container's wait returns at once


def test_start_wait_restart(pallet: Pallet) -> None:
    name = pallet.name("sw")
    pallet("create", "--name", name, "busybox", "sh", "-c", "echo run; exit 9")
    assert pallet("start", "-a", name, check=False).returncode == 9
    waiter = subprocess.Popen(pallet.cmd("wait", name), stdout=subprocess.PIPE, text=True)
    pallet("start", name)
    out, _ = waiter.communicate(timeout=20)
    assert out == "9\n"
    assert pallet("logs", name).stdout == "run\nrun\n"
    evs = pallet("events", "--until", "0s", "--filter", f"container={name}", "--format", "{{.Status}}")
    assert evs.stdout.split("\n")[:5] == ["create", "start", "die", "start", "die"], evs.stdout
    die = pallet("events", "--until", "0s", "--filter", "event=die", "--filter", f"container={name}")
    assert "exitCode=9" in die.stdout.splitlines()[0] and f"name={name}" in die.stdout


def test_events_stream_live(pallet: Pallet) -> None:
    """``events`` without --until follows the log as docker's does: lines arrive while it runs."""
    name = pallet.name("live")
    watcher = subprocess.Popen(
        pallet.cmd("events", "--filter", f"container={name}", "--format", "{{.Status}} {{.ID}}"),
        stdout=subprocess.PIPE,
    )
    try:
        assert watcher.stdout is not None
        pallet.run("--rm", "--name", name, "busybox", "true")
        sel = selectors.DefaultSelector()
        sel.register(watcher.stdout, selectors.EVENT_READ)
        out = b""
        while out.count(b"\n") < 4:  # raw reads: a buffered readline would hide lines from select
            assert sel.select(timeout=20), f"no event within 20 s after {out!r}"
            chunk = os.read(watcher.stdout.fileno(), 4096)
            assert chunk, f"events ended early: {out!r}"
            out += chunk
        sel.close()
        seen = [line.split()[0] for line in out.decode().splitlines()]
        assert seen == ["create", "start", "die", "destroy"], seen
        with pytest.raises(subprocess.TimeoutExpired):  # still following, not done with the log
            watcher.wait(timeout=0.5)
    finally:
        watcher.kill()
        watcher.wait()


def test_survives_killed_cli(pallet: Pallet) -> None:
    """Kill the CLI of a foreground run: the container lives on under its monitor, logs keep coming."""
    name = pallet.name("orphan")
    cli = subprocess.Popen(
        pallet.cmd("run", "--name", name, "busybox", "sh", "-c", "echo a; sleep 1; echo b; sleep 60"),
        stdout=subprocess.PIPE,
    )
    assert cli.stdout is not None and cli.stdout.readline() == b"a\n"
    cli.send_signal(signal.SIGKILL)
    cli.wait()
    assert pallet("inspect", "-f", "{{.State.Status}}", name).stdout == "running\n"
    wait_until(lambda: pallet("logs", name).stdout == "a\nb\n")
    pallet("stop", "-t", "1", name)
    assert pallet("inspect", "-f", "{{.State.ExitCode}}", name).stdout == "137\n"


def test_dead_monitor_is_reported(pallet: Pallet) -> None:
    name = pallet.name("mon")
    pallet.run("-d", "--name", name, "busybox", "sleep", "60")
    monitor = int(json.loads(pallet("inspect", name).stdout)[0]["State"].get("Pid"))
    assert monitor > 0
    # find the monitor by its command line (it names the container's directory)
    cid = inspect(pallet, name)["Id"]
    mons = [p for p in os.listdir("/proc") if p.isdigit() and _cmd(p).find("monitor") >= 0 and cid in _cmd(p)]
    assert len(mons) == 1
    os.kill(int(mons[0]), signal.SIGKILL)
    wait_until(lambda: pallet("inspect", "-f", "{{.State.Status}}", name).stdout == "dead\n")
    assert "monitor died" in pallet("inspect", "-f", "{{.State.Error}}", name).stdout
    pallet("rm", "-f", name)  # and it can still be removed, process and cgroup included
    assert pallet("ps", "-aq").stdout == ""


def _cmd(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_attach_and_detached_rm(pallet: Pallet) -> None:
    name = pallet.name("att")
    pallet.run("-d", "-i", "--name", name, "busybox", "sh", "-c", "read line; echo got $line; exit 3")
    r = pallet("attach", name, input="hello\n", check=False)
    assert r.stdout == "got hello\n" and r.returncode == 3
    gone = pallet.name("gone")
    pallet.run("-d", "--rm", "--name", gone, "busybox", "true")
    wait_until(lambda: pallet("ps", "-aq", "--filter", f"name={gone}").stdout == "")
    r = pallet("attach", name, check=False)
    assert r.returncode == 125 and "You cannot attach to a stopped container" in r.stderr


def test_resources_and_update(any_runtime: Pallet) -> None:
    p = any_runtime
    name = p.name("res")
    p.run("-d", "--name", name, "--memory", "64m", "--pids-limit", "50", "--cpus", "0.5", "--cpu-shares", "512",
          "--ulimit", "nofile=100:200", "--oom-score-adj", "300", "--shm-size", "8m", "busybox", "sleep", "60")  # fmt: skip
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # pure v2: the container sees its own cgroup
        files = "memory.max pids.max cpu.max cpu.weight"
        # runc 1.1 converts shares to weight on a straight line; crun and pallet-runtime on crun's curve
        weight = 1 + (512 - 2) * 9999 // 262142 if p.runtime == "runc" else shares_to_weight(512)
        want = [str(64 << 20), "50", "50000 100000", str(weight)]
    else:
        files = "memory/memory.limit_in_bytes pids/pids.max cpu/cpu.cfs_quota_us cpu/cpu.shares"
        want = [str(64 << 20), "50", "50000", "512"]
    cat = " ".join(f"/sys/fs/cgroup/{f}" for f in files.split())
    read = f"cat {cat}; ulimit -n; ulimit -Hn; cat /proc/1/oom_score_adj; df -k /dev/shm | tail -1"
    first = p("exec", name, "sh", "-c", read).stdout.split("\n")
    assert first[:4] + first[6:7] == [*want, "300"], first
    assert first[7].split()[1] == "8192"
    usage = p("stats", "--no-stream", "--format", "{{.MemUsage}} {{.PIDs}}", name).stdout.split()
    assert usage[1:] == ["/", "64MiB", "1"], usage  # the cgroup's own accounting
    p("pause", name)
    assert p("inspect", "-f", "{{.State.Status}}", name).stdout == "paused\n"
    p("unpause", name)
    p("update", "--memory", "128m", "--pids-limit", "60", name)
    out = p("exec", name, "sh", "-c", read).stdout.split("\n")
    assert out[:2] == [str(128 * 1024 * 1024), "60"]
    assert p("inspect", "-f", "{{.HostConfig.Memory}}", name).stdout == f"{128 * 1024 * 1024}\n"
    if p.runtime == "runc" and first[4:6] == ["200", "200"]:
        # Debian's runc 1.1.5 prlimits its exec'd init while Go's runtime raises the init's own soft
        # NOFILE to the hard limit: a race, runc's bug (opencontainers/runc#4195, fixed by #4266)
        pytest.xfail("runc 1.1.5's exec lost the soft nofile limit to Go's runtime (runc#4195)")
    assert first[4:6] == ["100", "200"], first  # exec'd processes get the container's --ulimit, as docker's


def test_oom_killed_is_reported(any_runtime: Pallet) -> None:
    """A hog past --memory is killed by the kernel: exit 137 and State.OOMKilled, as docker's."""
    p = any_runtime
    name, calm = p.name("oom"), p.name("calm")
    # `tail` buffers a line of /dev/zero that never ends
    r = p.run(
        "--name", name, "--memory", "16m", "--memory-swap", "16m", "busybox", "tail", "/dev/zero", check=False
    )
    assert r.returncode == 137, r.stderr
    assert p("inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}}", name).stdout == "true 137\n"
    p.run(
        "--name",
        calm,
        "--memory",
        "16m",
        "busybox",
        "sh",
        "-c",
        "sleep 30 & kill -9 $!; wait $!",
        check=False,
    )
    assert p("inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}}", calm).stdout == "false 137\n"


def test_exec_process_is_the_containers(any_runtime: Pallet) -> None:
    """exec's process is the container's (a --process file, as docker's): its env, capabilities and
    no_new_privs, with exec's own -e, -w, -u and --privileged on top."""
    p = any_runtime
    name = p.name("xp")
    p.run("-d", "--name", name, "-e", "FROM=run", "-e", "KEEP=1", "--cap-drop", "NET_RAW",
          "--security-opt", "no-new-privileges", "busybox", "sleep", "60")  # fmt: skip
    show = "echo $FROM $KEEP; pwd; id -u; grep -E '^(CapBnd|NoNewPrivs)' /proc/self/status | cut -f2"
    out = p("exec", "-e", "FROM=exec", "-w", "/tmp", "-u", "app", name, "sh", "-c", show).stdout.split("\n")
    assert out[:3] == ["exec 1", "/tmp", "1000"], out
    assert not int(out[3], 16) >> 13 & 1 and out[4] == "1", out  # CAP_NET_RAW is bit 13
    out = p("exec", "--privileged", name, "sh", "-c", show).stdout.split("\n")
    assert out[:3] == ["run 1", "/", "0"] and int(out[3], 16) >> 13 & 1, out


def test_namespace_modes(pallet: Pallet) -> None:
    a, b = pallet.name("nsa"), pallet.name("nsb")
    pallet.run("-d", "--name", a, "busybox", "sleep", "60")
    pid_ns = os.readlink(f"/proc/{inspect(pallet, a)['State']['Pid']}/ns/pid")
    r = pallet.run("--rm", "--name", b, "--pid", f"container:{a}", "--uts", "host", "busybox", "sh", "-c",
                   "readlink /proc/self/ns/pid; hostname; ps -o comm | grep -c sleep")  # fmt: skip
    assert r.stdout.split() == [pid_ns, os.uname().nodename, "1"]
    r = pallet.run(
        "--rm",
        "--pid",
        "host",
        "--ipc",
        "host",
        "busybox",
        "sh",
        "-c",
        "readlink /proc/self/ns/pid; readlink /proc/self/ns/ipc",
    )
    assert r.stdout.split() == [os.readlink("/proc/self/ns/pid"), os.readlink("/proc/self/ns/ipc")]
    r = pallet.run("--rm", "--pid", "container:nosuch", "busybox", "true", check=False)
    assert r.returncode == 125 and "No such container: nosuch" in r.stderr


def test_concurrent_names_and_prune(pallet: Pallet) -> None:
    name = pallet.name("race")
    procs = [subprocess.Popen(pallet.cmd("create", "--name", name, "busybox", "true"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(4)]  # fmt: skip
    codes = sorted(p.wait() for p in procs)
    for p in procs:
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        p.stderr.close()
    assert codes == [0, 125, 125, 125]
    assert len(pallet("ps", "-aq").stdout.split()) == 1
    assert len(os.listdir(pallet.root / "containers")) == 1
    run = pallet.name("keep")
    pallet.run("-d", "--name", run, "busybox", "sleep", "60")
    out = pallet("container", "prune", "-f").stdout
    assert out.startswith("Deleted Containers:\n") and "Total reclaimed space:" in out
    assert pallet("ps", "-a", "--format", "{{.Names}}").stdout == f"{run}\n"


def test_exec_tty(pallet: Pallet) -> None:
    name = pallet.name("ext")
    pallet.run("-d", "--name", name, "busybox", "sleep", "60")
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(pallet.cmd()[0], pallet.cmd("exec", "-t", name, "sh", "-c", "tty; exit 4"))
    out = read_pty(fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 4
    assert b"/dev/pts/" in out


def test_foreground_signals_are_proxied(pallet: Pallet) -> None:
    """docker's --sig-proxy: a signal to the CLI of a foreground run goes to the container."""
    script = "trap 'echo got-int; exit 5' INT; echo ready; while true; do sleep 0.1; done"
    cli = subprocess.Popen(
        pallet.cmd("run", "--rm", "busybox", "sh", "-c", script), stdout=subprocess.PIPE, text=True
    )
    assert cli.stdout is not None and cli.stdout.readline() == "ready\n"
    cli.send_signal(signal.SIGINT)
    out, _ = cli.communicate(timeout=20)
    assert out == "got-int\n" and cli.returncode == 5
