"""linux.seccomp applied for real: actions, errnos, argument conditions, flags, notify, exec, bad input."""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from pallet.oci.defaults import DOCKER_DEFAULT_CAPABILITIES, docker_seccomp_profile
from tests.helpers.runtime import RuntimeCLI, edit_config, set_config

pytestmark = pytest.mark.root


def allow_all_but(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": list(rules), **extra}


def run(
    rt: RuntimeCLI, bundle: Path, cid: str, script: str, seccomp: dict[str, Any] | None, **cfg: Any
) -> Any:
    # a writable root: the default spec's read-only root would fail mkdir with EROFS on its own
    cfg = {"process__args": ["sh", "-c", script], "root__readonly": False, **cfg}
    set_config(bundle, **cfg)
    c, save = edit_config(bundle)
    if seccomp is not None:
        c["linux"]["seccomp"] = seccomp
    save()
    return rt("run", "--bundle", str(bundle), cid, check=False)


def status_line(text: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name + ":"))


MKDIR = ["mkdir", "mkdirat"]


def test_errno_action_and_status(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    rule = {"names": MKDIR, "action": "SCMP_ACT_ERRNO", "errnoRet": 30}  # EROFS
    r = run(rt, bundle, cid, "mkdir /tmp/x; echo rc=$?; cat /proc/self/status", allow_all_but(rule))
    assert "Read-only file system" in r.stderr, r.stderr
    assert "rc=1" in r.stdout
    assert status_line(r.stdout, "Seccomp") == "2"
    assert status_line(r.stdout, "Seccomp_filters") == "1"


def test_errno_defaults_to_eperm_and_default_errno_ret(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    rule = {"names": MKDIR, "action": "SCMP_ACT_ERRNO"}
    r = run(rt, bundle, cid, "mkdir /tmp/x", allow_all_but(rule))
    assert r.returncode == 1 and "Operation not permitted" in r.stderr, r.stderr
    # a default of ERRNO(EXDEV) with the docker allow list on top: mkdir allowed, unlisted syscalls get 18
    prof = docker_seccomp_profile(list(DOCKER_DEFAULT_CAPABILITIES))
    prof["defaultErrnoRet"] = 18
    r = run(rt, bundle, cid + "b", "mkdir /tmp/x && echo made; swapon /dev/null", prof)
    assert "made" in r.stdout and "Invalid cross-device link" in r.stderr, r.stderr


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"])
def test_kill_and_trap_end_the_process_with_sigsys(
    rt: RuntimeCLI, bundle: Path, cid: str, action: str
) -> None:
    r = run(rt, bundle, cid, "mkdir /tmp/x", allow_all_but({"names": MKDIR, "action": action}),
            process__args=["mkdir", "/tmp/x"])  # fmt: skip
    assert r.returncode == 128 + 31, (r.returncode, r.stderr)  # SIGSYS


def test_log_and_allow_let_the_call_through(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    prof = allow_all_but({"names": MKDIR, "action": "SCMP_ACT_LOG"}, flags=["SECCOMP_FILTER_FLAG_LOG"])
    r = run(rt, bundle, cid, "mkdir /tmp/x && echo made", prof)
    assert r.stdout.strip() == "made", r.stderr


def test_trace_without_a_tracer_fails_with_enosys(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    # seccomp(2): SECCOMP_RET_TRACE with no tracer attached makes the syscall fail with ENOSYS
    r = run(rt, bundle, cid, "mkdir /tmp/x", allow_all_but({"names": MKDIR, "action": "SCMP_ACT_TRACE"}))
    assert r.returncode == 1 and "Function not implemented" in r.stderr, r.stderr


def test_spec_allow_flag_leaves_speculation_mitigations_alone(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    # where the kernel mitigates speculative store bypass "via seccomp", every filter forces it on unless
    # loaded with SPEC_ALLOW; elsewhere (the prctl default since 5.16) the flag must still be accepted
    script = "grep ^Speculation_Store_Bypass: /proc/self/status | cut -f2"
    rule = {"names": MKDIR, "action": "SCMP_ACT_ERRNO"}
    plain = run(rt, bundle, cid, script, allow_all_but(rule))
    allowed = run(
        rt, bundle, cid + "s", script, allow_all_but(rule, flags=["SECCOMP_FILTER_FLAG_SPEC_ALLOW"])
    )
    assert plain.returncode == 0 and allowed.returncode == 0, (plain.stderr, allowed.stderr)
    mode = Path("/sys/devices/system/cpu/vulnerabilities/spec_store_bypass").read_text()
    if "seccomp" in mode:
        assert plain.stdout.strip() == "thread force mitigated", plain.stdout
        assert allowed.stdout.strip() != "thread force mitigated", allowed.stdout


def test_masked_eq_condition(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    # setuid bit through chmod (mode is arg 1) or fchmodat (arg 2): refused; a plain mode: allowed
    rules = [
        {"names": ["chmod"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 1, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 2, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ"}]},
    ]  # fmt: skip
    r = run(rt, bundle, cid, "touch /tmp/f; chmod 755 /tmp/f && echo plain-ok; chmod 4755 /tmp/f || echo suid-refused",
            allow_all_but(*rules))  # fmt: skip
    assert r.stdout.split() == ["plain-ok", "suid-refused"], (r.stdout, r.stderr)


def test_several_conditions_on_one_argument_are_each_a_rule(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    # runc's reading: two conditions on the same argument block either value (OR), not neither (AND)
    rules = [
        {"names": [n], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": i, "value": 0o700, "op": "SCMP_CMP_EQ"}, {"index": i, "value": 0o711, "op": "SCMP_CMP_EQ"}]}
        for n, i in (("chmod", 1), ("fchmodat", 2))
    ]  # fmt: skip
    script = "touch /tmp/f; for m in 700 711 755; do chmod $m /tmp/f && echo ok-$m || echo no-$m; done"
    r = run(rt, bundle, cid, script, allow_all_but(*rules))
    assert r.stdout.split() == ["no-700", "no-711", "ok-755"], (r.stdout, r.stderr)


def test_conditions_on_distinct_arguments_are_anded(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    # fchmodat(AT_FDCWD, path, 0700): dirfd AND mode must both match; chmod(path, 0700) has no dirfd
    rules = [{"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO", "args": [
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 2, "value": 0o700, "op": "SCMP_CMP_EQ"}]}]  # fmt: skip
    r = run(rt, bundle, cid, "touch /tmp/f; chmod 700 /tmp/f && echo ok", allow_all_but(*rules))
    assert r.stdout.strip() == "ok", r.stderr


def test_unknown_syscall_names_are_skipped(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    rule = {"names": ["no_such_syscall_at_all", *MKDIR], "action": "SCMP_ACT_ERRNO"}
    r = run(rt, bundle, cid, "mkdir /tmp/x", allow_all_but(rule))
    assert r.returncode == 1 and "Operation not permitted" in r.stderr, r.stderr


def test_filter_without_nnp_is_loaded_before_the_capability_drop(
    rt: RuntimeCLI, bundle: Path, cid: str
) -> None:
    # without no_new_privs seccomp(2) needs CAP_SYS_ADMIN: a uid 1000 process with three caps still gets it
    rule = {"names": MKDIR, "action": "SCMP_ACT_ERRNO"}
    r = run(rt, bundle, cid, "id -u; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /tmp/x",
            allow_all_but(rule), process__noNewPrivileges=False,
            process__user={"uid": 1000, "gid": 1000})  # fmt: skip
    assert r.stdout.split() == ["1000", "NoNewPrivs:", "0", "Seccomp:", "2"], (r.stdout, r.stderr)
    assert "Operation not permitted" in r.stderr


def test_exec_gets_the_containers_filter(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    c, save = edit_config(bundle)
    c["process"]["args"] = ["sleep", "60"]
    c["linux"]["seccomp"] = allow_all_but({"names": MKDIR, "action": "SCMP_ACT_ERRNO", "errnoRet": 30})
    save()
    rt("run", "-d", "--bundle", str(bundle), cid)
    r = rt("exec", cid, "sh", "-c", "grep ^Seccomp: /proc/self/status; mkdir /tmp/y", check=False)
    assert r.stdout.split() == ["Seccomp:", "2"]
    assert "Read-only file system" in r.stderr, r.stderr


SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101


def _agent(listener: socket.socket, got: dict[str, Any]) -> None:
    """A minimal seccomp agent: take the fd, answer the first notification with EROFS."""
    import fcntl

    conn, _ = listener.accept()
    with conn:
        msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 4)
        got["msg"] = json.loads(msg)
        fd = fds[0]
        try:
            buf = bytearray(80)
            fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, buf)
            nid, _pid, _fl, nr = struct.unpack_from("=QIIi", buf)
            got["nr"] = nr
            fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, bytearray(struct.pack("=QqiI", nid, 0, -30, 0)))
        finally:
            os.close(fd)


def test_notify_sends_fd_and_state_to_the_listener(
    rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path
) -> None:
    path = str(workdir / "agent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(30)
    got: dict[str, Any] = {}
    t = threading.Thread(target=_agent, args=(listener, got), daemon=True)
    t.start()
    prof = allow_all_but({"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
                         listenerPath=path, listenerMetadata="hello-agent",
                         flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"])  # fmt: skip
    try:
        r = run(rt, bundle, cid, "mkdir /tmp/x", prof, process__args=["mkdir", "/tmp/x"])
        t.join(30)
    finally:
        listener.close()
    assert "Read-only file system" in r.stderr, (r.stderr, got)
    msg = got["msg"]
    assert msg["fds"] == ["seccompFd"] and msg["metadata"] == "hello-agent"
    assert msg["state"]["id"] == cid and msg["pid"] == msg["state"]["pid"] > 0
    assert got["nr"] == 83  # mkdir on x86_64


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"defaultAction": "SCMP_ACT_EXPLODE"}, "linux.seccomp.defaultAction"),
        ({"architectures": ["SCMP_ARCH_Z80"]}, "linux.seccomp.architectures[0]"),
        ({"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOPE"}]}, "linux.seccomp.syscalls[0].action"),
        ({"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]},
         "linux.seccomp.syscalls[0].args[0].op"),
        ({"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
         "linux.seccomp.syscalls[0].args[0].index"),
        ({"flags": ["SECCOMP_FILTER_FLAG_MAGIC"]}, "linux.seccomp.flags[0]"),
        ({"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}, "linux.seccomp.syscalls[0].action"),
    ],
)  # fmt: skip
def test_bad_profiles_are_refused_naming_the_field(
    rt: RuntimeCLI, bundle: Path, cid: str, edit: dict[str, Any], field: str
) -> None:
    prof = dict({"defaultAction": "SCMP_ACT_ALLOW"}, **edit)
    r = run(rt, bundle, cid, "true", prof)
    assert r.returncode != 0
    assert field in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (rt.root / cid).exists()
    assert rt("list", "-q").stdout.split() == []


def test_docker_profile_runs_a_shell(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    caps = list(DOCKER_DEFAULT_CAPABILITIES)
    c, save = edit_config(bundle)
    c["process"]["args"] = ["sh", "-c", "echo hi | cat; unshare -U true; echo unshare=$?"]
    c["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    c["linux"]["seccomp"] = docker_seccomp_profile(caps)
    save()
    r = rt("run", "--bundle", str(bundle), cid, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["hi", "unshare=1"]
    assert "Operation not permitted" in r.stderr


def _errnos_under(profile: dict[str, Any], numbers: list[int]) -> list[int]:
    """errno of syscall(nr) for each nr, in a forked child that loaded the profile (with no_new_privs)."""
    import ctypes

    from pallet.linux.syscalls import PR_SET_NO_NEW_PRIVS, Syscalls
    from pallet.runtime.seccomp import compile_filter

    compiled = compile_filter(profile)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # only syscalls from here: the filter is on
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            sysc = Syscalls()
            sysc.prctl(PR_SET_NO_NEW_PRIVS, 1)
            sysc.seccomp_set_filter(compiled.flags, compiled.program)
            out = []
            for nr in numbers:
                ctypes.set_errno(0)
                ret = libc.syscall(ctypes.c_long(nr), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
                out.append(ctypes.get_errno() if ret < 0 else 0)
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)  # type: ignore[no-any-return]


def test_syscalls_newer_than_the_profile_fail_with_enosys() -> None:
    # as runc: a libc that tries a syscall newer than the profile knows gets ENOSYS and falls back;
    # a known syscall the profile leaves out still gets the default action (EPERM)
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers below are x86_64's")
    prof = docker_seccomp_profile(list(DOCKER_DEFAULT_CAPABILITIES))
    getpid, add_key, beyond = 39, 248, 1000
    assert _errnos_under(prof, [getpid, add_key, beyond]) == [0, errno.EPERM, errno.ENOSYS]
    # with the default action ALLOW there is nothing to fall back from: the kernel answers
    allow = allow_all_but({"names": ["add_key"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV})
    assert _errnos_under(allow, [getpid, add_key, beyond]) == [0, errno.EXDEV, errno.ENOSYS]
    kill = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EXDEV, "syscalls": prof["syscalls"]}
    assert _errnos_under(kill, [add_key, beyond]) == [errno.EXDEV, errno.ENOSYS]


def test_exec_under_notify_sends_its_own_fd_and_pid(
    rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path
) -> None:
    # the init's listener fd arrives at create; an exec'd process has a filter (and an fd) of its own
    path = str(workdir / "agent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(2)
    listener.settimeout(30)
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}

    def two_agents() -> None:
        conn, _ = listener.accept()  # the init's: keep its fd open while the container lives
        with conn:
            msg, fds, _f, _a = socket.recv_fds(conn, 1 << 16, 4)
            first["msg"] = json.loads(msg)
            _agent(listener, second)
            os.close(fds[0])

    t = threading.Thread(target=two_agents, daemon=True)
    t.start()
    c, save = edit_config(bundle)
    c["process"]["args"] = ["sleep", "60"]
    c["root"]["readonly"] = False
    c["linux"]["seccomp"] = allow_all_but(
        {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}, listenerPath=path
    )
    save()
    try:
        rt("run", "-d", "--bundle", str(bundle), cid)
        pid_file = workdir / "exec.pid"
        r = rt("exec", "--pid-file", str(pid_file), cid, "mkdir", "/tmp/x", check=False)
        t.join(30)
    finally:
        listener.close()
    assert "Read-only file system" in r.stderr, (r.stderr, first, second)
    init_pid = rt.state(cid)["pid"]
    assert first["msg"]["pid"] == init_pid and first["msg"]["state"]["status"] == "created"
    assert second["msg"]["pid"] == int(pid_file.read_text()) != init_pid
    assert second["msg"]["state"]["id"] == cid and second["msg"]["state"]["status"] == "running"


def test_compiled_filter_cache_is_private_and_survives_damage(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    prof = allow_all_but({"names": MKDIR, "action": "SCMP_ACT_ERRNO", "errnoRet": 30})
    for i in range(2):
        r = run(rt, bundle, f"{cid}-{i}", "mkdir /tmp/x", prof)
        assert "Read-only file system" in r.stderr, r.stderr
    cache = rt.root / ".seccomp"
    (entry,) = cache.iterdir()
    assert cache.stat().st_mode & 0o777 == 0o700 and entry.stat().st_mode & 0o777 == 0o600
    entry.write_bytes(b"\x00garbage")  # a damaged entry is compiled afresh, never half-used
    r = run(rt, bundle, f"{cid}-2", "mkdir /tmp/x", prof)
    assert "Read-only file system" in r.stderr, r.stderr
    cache.chmod(0o777)  # a directory others could write to is not trusted
    r = run(rt, bundle, f"{cid}-3", "mkdir /tmp/x", prof)
    assert "Read-only file system" in r.stderr, r.stderr
    assert rt("list", "-q").stdout.split() == []


def test_unreachable_listener_is_one_clear_error(
    rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path
) -> None:
    prof = allow_all_but(
        {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}, listenerPath=str(workdir / "nobody.sock")
    )
    r = run(rt, bundle, cid, "true", prof)
    assert r.returncode != 0
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "linux.seccomp.listenerPath" in err and "nobody.sock" in err, err
    assert not (rt.root / cid).exists() and rt("list", "-q").stdout.split() == []
