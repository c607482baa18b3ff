"""Bad input gets docker's message and exit code, and leaves nothing half-created."""

from __future__ import annotations

import os

import pytest

from tests.integration.engine.conftest import Pallet

pytestmark = pytest.mark.root


def _nothing_made(p: Pallet) -> None:
    assert p("ps", "-aq").stdout == ""
    containers = p.root / "containers"
    assert not containers.exists() or os.listdir(containers) == []
    # nor a run directory: `run` launches the monitor before it creates (Engine.prelaunch)
    runs = p.runroot / "c"
    assert not runs.exists() or os.listdir(runs) == []


def test_unknown_image_and_container(pallet: Pallet) -> None:
    r = pallet.run("--rm", "nosuchimage", "true", check=False)
    assert r.returncode == 125 and r.stderr.strip() == "Error: No such image: nosuchimage"
    for verb in (["logs"], ["stop"], ["rm"], ["inspect"], ["exec"], ["kill"], ["start"], ["wait"]):
        args = [*verb, "nosuchcontainer"] + (["true"] if verb == ["exec"] else [])
        r = pallet(*args, check=False)
        assert r.returncode == 125, (verb, r)
        assert "No such container: nosuchcontainer" in r.stderr, (verb, r.stderr)
    _nothing_made(pallet)


def test_name_conflict(pallet: Pallet) -> None:
    name = pallet.name("dup")
    cid = pallet("create", "--name", name, "busybox", "true").stdout.strip()
    r = pallet("create", "--name", name, "busybox", "true", check=False)
    assert r.returncode == 125
    assert f'The container name "/{name}" is already in use by container "{cid}"' in r.stderr
    assert pallet("ps", "-aq").stdout.split() == [cid[:12]]
    assert len(os.listdir(pallet.root / "containers")) == 1
    # run launches the container's monitor (and its init) before the create that fails here: gone too
    r = pallet.run("--rm", "--name", name, "busybox", "true", check=False)
    assert r.returncode == 125 and "is already in use" in r.stderr
    assert pallet("ps", "-aq").stdout.split() == [cid[:12]]
    runs = pallet.runroot / "c"
    assert not runs.exists() or os.listdir(runs) == []
    r = pallet("create", "--name", "bad name!", "busybox", "true", check=False)
    assert r.returncode == 125 and "Invalid container name (bad name!)" in r.stderr


def test_bad_flags(pallet: Pallet) -> None:
    cases = [
        (["--memory=abc"], 'invalid argument "abc" for "-m, --memory" flag: invalid size: \'abc\''),
        (["--restart", "sometimes"], "invalid restart policy: sometimes"),
        (["--cap-add", "NOPE"], 'unknown capability: "CAP_NOPE"'),
        (["--stop-signal", "SIGNOPE"], "Invalid signal: SIGNOPE"),
        (["--health-interval", "5x", "--health-cmd", "true"], 'time: invalid duration "5x"'),
        (["--runtime", "nosuchruntime"], "unknown or invalid runtime name: nosuchruntime"),
        (["--rm", "--restart", "always"], "Conflicting options: --restart and --rm"),
        (["-u", "nosuchuser"], "unable to find user nosuchuser: no matching entries in passwd file"),
    ]
    for flags, message in cases:
        r = pallet.run(*flags, "busybox", "true", check=False)
        assert r.returncode == 125, (flags, r)
        assert message in r.stderr, (flags, r.stderr)
    # a failed start (unknown user) leaves the container created, as docker does; nothing else
    ids = pallet("ps", "-aq", "--filter", "status=created").stdout.split()
    assert len(ids) == 1
    assert pallet("ps", "-q").stdout == ""
    # with --rm, not even that
    r = pallet.run("--rm", "-u", "nosuchuser", "busybox", "true", check=False)
    assert r.returncode == 125 and "unable to find user nosuchuser" in r.stderr
    assert pallet("ps", "-aq").stdout.split() == ids


def test_exec_stopped_and_rm_running(pallet: Pallet) -> None:
    name = pallet.name("st")
    cid = pallet.run("--name", name, "busybox", "true").stdout
    r = pallet("exec", name, "true", check=False)
    assert r.returncode == 125
    assert "is not running" in r.stderr
    run = pallet.name("run")
    pallet.run("-d", "--name", run, "busybox", "sleep", "60")
    r = pallet("rm", run, check=False)
    assert r.returncode == 125
    assert r.stderr.strip() == (
        f'Error: cannot remove container "/{run}": container is running: '
        "stop the container before removing or force remove"
    )
    assert pallet("inspect", "-f", "{{.State.Running}}", run).stdout == "true\n"
    assert cid == ""
