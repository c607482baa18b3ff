"""Bad input: one clear error line naming the field or path, exit 1, and nothing left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.leaks import find_leaks
from tests.helpers.runtime import RuntimeCLI, edit_config

pytestmark = pytest.mark.root


def create_fails(
    rt: RuntimeCLI, bundle: Path, cid: str, token: str, *, expect: str, args: tuple[str, ...] = ()
) -> str:
    r = rt("create", "--bundle", str(bundle), *args, cid, check=False)
    assert r.returncode == 1, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # one line for the user
    assert expect in lines[0], lines[0]
    assert not (rt.root / cid).exists()
    assert rt("list", "-q").stdout.strip() == ""
    assert find_leaks(token) == []
    return lines[0]


def mutate(bundle: Path, fn: Any) -> None:
    cfg, save = edit_config(bundle)
    fn(cfg)
    save()


def test_malformed_json(rt: RuntimeCLI, bundle: Path, cid: str, token: str) -> None:
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2", "process": ')
    create_fails(rt, bundle, cid, token, expect="config.json: malformed JSON")


def test_missing_config(rt: RuntimeCLI, bundle: Path, cid: str, token: str) -> None:
    (bundle / "config.json").unlink()
    create_fails(rt, bundle, cid, token, expect="no config.json")


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (lambda c: c["process"].pop("args"), "process.args: missing"),
        (lambda c: c["process"].__setitem__("args", "sh"), "process.args: expected a list of strings"),
        (lambda c: c["process"].__setitem__("cwd", "relative"), "process.cwd: must be an absolute path"),
        (lambda c: c["process"]["user"].__setitem__("uid", "0"), "process.user.uid: expected an integer"),
        (lambda c: c["process"].__setitem__("terminal", "yes"), "process.terminal: expected a boolean"),
        (lambda c: c["root"].__setitem__("path", 7), "root.path: expected a string"),
        (lambda c: c.pop("ociVersion"), "ociVersion: missing"),
        (lambda c: c["linux"]["namespaces"].append({"type": "bogus"}), "unknown namespace type 'bogus'"),
        (lambda c: c["linux"]["namespaces"].append({"type": "pid"}), "namespace 'pid' listed twice"),
        (lambda c: c["mounts"].append({"source": "x"}), "mounts[7].destination: expected a string"),
        (
            lambda c: c["linux"].__setitem__("devices", [{"path": "/dev/x", "type": "q"}]),
            "unknown device type 'q'",
        ),
        (
            lambda c: c.__setitem__("hooks", {"prestart": [{"path": "rel"}]}),
            "hooks.prestart[0].path: must be absolute",
        ),
        (lambda c: c.__setitem__("hooks", {"preboot": []}), "hooks.preboot: unknown hook kind"),
        (
            lambda c: c["process"]["capabilities"]["bounding"].append("CAP_MAKE_COFFEE"),
            "process.capabilities.bounding: unknown capability 'CAP_MAKE_COFFEE'",
        ),
        (
            lambda c: c["process"].__setitem__(
                "rlimits", [{"type": "RLIMIT_NOFILE", "soft": "many", "hard": 1}]
            ),
            "process.rlimits[0].soft: expected an integer",
        ),
        (
            lambda c: c["linux"]["namespaces"].append({"type": "user"}),
            "uidMappings and gidMappings are required",
        ),
        (lambda c: c["linux"]["resources"].__setitem__("memory", {"limit": "abc"}), "memory"),
        pytest.param(
            lambda c: c["process"].__setitem__("selinuxLabel", "system_u:system_r:container_t:s0"),
            "SELinux is disabled",
            marks=pytest.mark.skipif(Path("/sys/fs/selinux/enforce").exists(), reason="SELinux runs here"),
        ),
        pytest.param(
            lambda c: c["process"].__setitem__("apparmorProfile", "docker-default"),
            "AppArmor is not enabled",
            marks=pytest.mark.skipif(Path("/sys/module/apparmor").exists(), reason="AppArmor may run here"),
        ),
        (lambda c: c["linux"]["resources"].__setitem__("pids", {"limit": "many"}), "pids"),
    ],
)
def test_mistyped_or_missing_fields(
    rt: RuntimeCLI, bundle: Path, cid: str, token: str, change: Any, expect: str
) -> None:
    mutate(bundle, change)
    create_fails(rt, bundle, cid, token, expect=expect)


def test_missing_rootfs(rt: RuntimeCLI, bundle: Path, cid: str, token: str) -> None:
    shutil.rmtree(bundle / "rootfs")
    create_fails(rt, bundle, cid, token, expect=f"root.path: {bundle}/rootfs: no such directory")


def test_missing_executable(rt: RuntimeCLI, bundle: Path, cid: str, token: str) -> None:
    mutate(bundle, lambda c: c["process"].__setitem__("args", ["no-such-program", "x"]))
    create_fails(rt, bundle, cid, token, expect='exec "no-such-program": executable file not found in $PATH')


def test_missing_executable_by_path(rt: RuntimeCLI, bundle: Path, cid: str, token: str) -> None:
    mutate(bundle, lambda c: c["process"].__setitem__("args", ["/opt/nothing"]))
    create_fails(rt, bundle, cid, token, expect='exec "/opt/nothing": no such file or directory')


def test_bind_source_missing(rt: RuntimeCLI, bundle: Path, cid: str, token: str) -> None:
    mutate(bundle, lambda c: c["mounts"].append({"destination": "/x", "type": "bind", "source": "/nonexistent-src", "options": ["bind"]}))  # fmt: skip
    create_fails(rt, bundle, cid, token, expect="bind mount source /nonexistent-src does not exist")


def test_capability_outside_bounding_set(rt: RuntimeCLI, bundle: Path, cid: str, token: str) -> None:
    """This VM's bounding set lacks CAP_SYS_RESOURCE: asking for every capability must say so up front."""
    from pallet.runtime import caps

    missing = [
        n for i, n in enumerate(caps.NAMES[: caps.last_cap() + 1]) if not caps.host_bounding_set() & (1 << i)
    ]
    if not missing:
        pytest.skip("this host's bounding set holds every capability")
    every = caps.NAMES[: caps.last_cap() + 1]
    mutate(bundle, lambda c: c["process"].__setitem__("capabilities", {s: every for s in ("bounding", "effective", "permitted")}))  # fmt: skip
    create_fails(rt, bundle, cid, token, expect=f"{missing[0]} not in this host's capability bounding set")


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "", "-flag-like", "x" * 1025])
def test_invalid_container_id(rt: RuntimeCLI, bundle: Path, bad_id: str, token: str) -> None:
    r = rt("create", "--bundle", str(bundle), "--", bad_id, check=False)
    assert r.returncode != 0
    assert "invalid container id" in r.stderr or "error:" in r.stderr
    assert not any(rt.root.glob("*")) if rt.root.exists() else True


def test_duplicate_id(rt: RuntimeCLI, bundle: Path, cid: str) -> None:
    mutate(bundle, lambda c: c["process"].__setitem__("args", ["sleep", "600"]))
    rt("create", "--bundle", str(bundle), cid)
    pid = rt.state(cid)["pid"]
    r = rt("create", "--bundle", str(bundle), cid, check=False)
    assert r.returncode == 1 and f"container {cid!r}: already exists" in r.stderr
    assert rt.state(cid)["pid"] == pid  # the first one is untouched


@pytest.mark.parametrize(
    "verb", [["start"], ["state"], ["kill"], ["delete"], ["pause"], ["resume"], ["ps"], ["exec"]]
)
def test_unknown_id(rt: RuntimeCLI, cid: str, verb: list[str]) -> None:
    args = [*verb, cid] + (["true"] if verb == ["exec"] else [])
    r = rt(*args, check=False)
    assert r.returncode == 1
    assert f"container {cid!r}: does not exist" in r.stderr


def test_log_file_records_the_error_as_json(rt: RuntimeCLI, bundle: Path, cid: str, workdir: Path) -> None:
    """containerd's shim reads the last error from --log; it must be there in JSON."""
    (bundle / "config.json").write_text("not json")
    log = workdir / "runtime.log"
    r = rt("--log", str(log), "--log-format", "json", "create", "--bundle", str(bundle), cid, check=False)
    assert r.returncode == 1
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["level"] == "error" and "malformed JSON" in record["msg"] and "time" in record


def test_console_socket_without_terminal_and_terminal_without_socket(rt: RuntimeCLI, bundle: Path, cid: str, token: str, workdir: Path) -> None:  # fmt: skip
    create_fails(rt, bundle, cid, token, expect="--console-socket was given but process.terminal is false",
                 args=("--console-socket", str(workdir / "nosock")))  # fmt: skip
    mutate(bundle, lambda c: c["process"].__setitem__("terminal", True))
    create_fails(rt, bundle, cid, token, expect="no --console-socket was given")


def test_systemd_cgroup_without_systemd(rt: RuntimeCLI, bundle: Path, cid: str, token: str) -> None:
    from pathlib import Path as P

    if P("/run/systemd/system").is_dir():
        pytest.skip("systemd runs here")
    r = rt("--systemd-cgroup", "create", "--bundle", str(bundle), cid, check=False)
    assert r.returncode == 1 and "systemd is not running" in r.stderr
    assert not (rt.root / cid).exists()
