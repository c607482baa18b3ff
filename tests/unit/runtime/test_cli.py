"""pallet-runtime's command line without containers: version, spec, features, argument errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import runtime_cmd


def rt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*runtime_cmd(), *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_version() -> None:
    r = rt("--version")
    assert r.returncode == 0 and r.stdout.startswith("pallet-runtime version ") and "spec: 1." in r.stdout


def test_spec_writes_once(tmp_path: Path) -> None:
    assert rt("spec", "--bundle", str(tmp_path)).returncode == 0
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["process"]["args"] == ["sh"] and cfg["root"]["path"] == "rootfs"
    r = rt("spec", "--bundle", str(tmp_path))
    assert r.returncode == 1 and "exists: remove it first" in r.stderr


def test_spec_rootless(tmp_path: Path) -> None:
    assert rt("spec", "--rootless", "-b", str(tmp_path)).returncode == 0
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert {"type": "user"} in cfg["linux"]["namespaces"]


def test_features_shape() -> None:
    r = rt("features")
    assert r.returncode == 0, r.stderr
    f = json.loads(r.stdout)
    assert f["ociVersionMax"].startswith("1.")
    assert set(f["hooks"]) == {
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    }
    assert {"rbind", "rro", "rslave"} <= set(f["mountOptions"])
    linux = f["linux"]
    assert set(linux["namespaces"]) == {"cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"}
    assert "CAP_SYS_ADMIN" in linux["capabilities"]
    assert (
        "SCMP_ACT_ERRNO" in linux["seccomp"]["actions"]
        and "SCMP_CMP_MASKED_EQ" in linux["seccomp"]["operators"]
    )


def test_unknown_verb_and_missing_id() -> None:
    r = rt("frobnicate")
    assert r.returncode != 0 and "invalid choice" in r.stderr
    r = rt("state")
    assert r.returncode != 0 and "id" in r.stderr
