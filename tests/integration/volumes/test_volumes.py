"""Named and anonymous volumes, binds, --mount, --tmpfs, --volumes-from, copy-up, rm -v, in-use refusal."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.engine.conftest import Pallet


def _mounts(p: Pallet, name: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = json.loads(p("inspect", "-f", "{{json .Mounts}}", name).stdout)
    return out


def test_a_named_volume_outlives_its_container_and_is_shared(pallet: Pallet) -> None:
    vol = pallet.name("data")
    assert pallet("volume", "create", "--label", "team=a", vol).stdout.strip() == vol
    pallet.run("--rm", "-v", f"{vol}:/data", "busybox", "sh", "-c", "echo first > /data/f")
    assert pallet.run("--rm", "-v", f"{vol}:/data:ro", "busybox", "cat", "/data/f").stdout == "first\n"
    p = pallet.run("--rm", "-v", f"{vol}:/data:ro", "busybox", "touch", "/data/g", check=False)
    assert p.returncode != 0 and "Read-only" in p.stderr
    # two containers at once: one writes, the other sees it
    keeper = pallet.name("keeper")
    pallet.run(
        "-d", "--name", keeper, "--mount", f"type=volume,source={vol},target=/v", "busybox", "sleep", "60"
    )
    pallet.run("--rm", "-v", f"{vol}:/data", "busybox", "sh", "-c", "echo second > /data/f")
    assert pallet("exec", keeper, "cat", "/v/f").stdout == "second\n"
    info = json.loads(pallet("volume", "inspect", vol).stdout)[0]
    assert info["Labels"] == {"team": "a"} and info["Driver"] == "local"
    assert Path(info["Mountpoint"], "f").read_text() == "second\n"
    assert vol in pallet("volume", "ls", "-q", "--filter", "label=team=a").stdout
    # in use: refused, and still there; rm -v of the container keeps a named volume
    p = pallet("volume", "rm", vol, check=False)
    assert p.returncode != 0 and "volume is in use" in p.stderr
    assert vol in pallet("volume", "ls", "-q").stdout
    pallet("rm", "-f", "-v", keeper)
    assert vol in pallet("volume", "ls", "-q").stdout
    pallet("volume", "rm", vol)
    assert vol not in pallet("volume", "ls", "-q").stdout
    assert not Path(info["Mountpoint"]).exists()


def test_copy_up_fills_new_volumes_from_the_image(pallet: Pallet) -> None:
    src = pallet.name("src")
    pallet.run(
        "--name",
        src,
        "busybox",
        "sh",
        "-c",
        "mkdir -p /srv/app && echo seed > /srv/app/seed && chmod 700 /srv/app",
    )
    image = pallet.name("img")
    pallet("commit", "-c", "VOLUME /srv/app", src, image)
    # an anonymous volume from the image's VOLUME, filled with what the image has there
    c = pallet.name("anon")
    pallet.run("--name", c, image, "sh", "-c", "cat /srv/app/seed; stat -c %a /srv/app")
    assert pallet("logs", c).stdout == "seed\n700\n"
    (m,) = [m for m in _mounts(pallet, c) if m["Destination"] == "/srv/app"]
    assert m["Type"] == "volume" and Path(str(m["Source"]), "seed").read_text() == "seed\n"
    # a new named volume is filled too; an existing non-empty one is not overwritten
    named = pallet.name("named")
    pallet.run("--rm", "-v", f"{named}:/srv/app", image, "sh", "-c", "echo mine > /srv/app/seed")
    assert pallet.run("--rm", "-v", f"{named}:/srv/app", image, "cat", "/srv/app/seed").stdout == "mine\n"
    # nocopy: empty
    assert (
        pallet.run("--rm", "-v", f"{pallet.name('empty')}:/srv/app:nocopy", image, "ls", "/srv/app").stdout
        == ""
    )
    # rm -v removes the anonymous volume, not the named ones
    pallet("rm", "-v", c)
    assert not Path(str(m["Source"])).exists()
    left = pallet("volume", "ls", "-q").stdout.split()
    assert sorted(left) == sorted([named, pallet.name("empty")])
    pallet("volume", "rm", named, pallet.name("empty"))


def test_binds_mount_tmpfs_and_volumes_from(pallet: Pallet, workdir: Path) -> None:
    host = workdir / "shared"
    host.mkdir()
    (host / "in").write_text("from-host\n")
    out = pallet.run("--rm", "-v", f"{host}:/h:ro", "--mount", f"type=bind,source={host},target=/m",
                     "--tmpfs", "/t1", "--mount", "type=tmpfs,target=/t2,tmpfs-size=1m", "busybox", "sh", "-c",
                     "cat /h/in; echo out > /m/out; touch /h/x 2>/dev/null || echo ro;"
                     " grep -E ' /t[12] ' /proc/mounts | cut -d' ' -f2,3").stdout  # fmt: skip
    assert out == "from-host\nro\n/t1 tmpfs\n/t2 tmpfs\n"
    assert (host / "out").read_text() == "out\n"
    # --volumes-from: the same volume and bind, read-only when asked
    a = pallet.name("a")
    pallet.run("--name", a, "-v", "/anon", "-v", f"{host}:/h", "busybox", "sh", "-c", "echo anon > /anon/f")
    out = pallet.run("--rm", "--volumes-from", a, "busybox", "sh", "-c", "cat /anon/f /h/in").stdout
    assert out == "anon\nfrom-host\n"
    p = pallet.run("--rm", "--volumes-from", f"{a}:ro", "busybox", "touch", "/anon/g", check=False)
    assert p.returncode != 0
    # volume prune takes anonymous volumes no container uses
    anon = [m["Name"] for m in _mounts(pallet, a) if m["Type"] == "volume"]
    assert pallet("volume", "prune", "-f").stdout.strip() == "Total reclaimed space: 0B"
    pallet("rm", a)
    assert anon[0] in pallet("volume", "prune", "-f").stdout
    assert pallet("volume", "ls", "-q").stdout == ""


def test_bad_volume_input_is_refused_and_leaves_nothing(pallet: Pallet, workdir: Path) -> None:
    for args, msg in [
        (["--mount", "type=nfs,target=/x"], "unknown mount type"),
        (["--mount", "type=bind,target=/x"], "source is required"),
        (["--mount", f"type=bind,source={workdir}/nope,target=/x"], "does not exist"),
        (["-v", "data:/x:bogus"], "invalid mode"),
        (["-v", "data:relative"], "invalid volume specification"),
        (["-v", "aa:/x", "-v", "bb:/x"], "Duplicate mount point"),
        (["--volumes-from", "nosuch"], "No such container"),
    ]:
        p = pallet.run(*args, "busybox", "true", check=False)
        assert p.returncode == 125 and msg in p.stderr, (args, p.stderr)
    assert pallet("ps", "-aq").stdout == ""
    assert pallet("volume", "ls", "-q").stdout == ""
    p = pallet("volume", "rm", "nosuch", check=False)
    assert p.returncode != 0 and "no such volume" in p.stderr
    p = pallet("volume", "create", "bad/name", check=False)
    assert p.returncode != 0 and "invalid characters" in p.stderr
