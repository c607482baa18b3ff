"""The pallet CLI as root on its own --root, with skopeo and umoci as independent producers and
consumers of the archives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.image.cliutil import CLI, PALLET, exported_tree
from tests.unit.image.tarutil import d, docker_archive, f, tar_bytes, tree

pytestmark = pytest.mark.root


@pytest.fixture
def cli(workdir: Path, leakcheck: None) -> Iterator[CLI]:
    c = CLI(workdir / "root")
    try:
        yield c
    finally:
        c.unmount_all()


@pytest.fixture
def bb_archive(workdir: Path, busybox_rootfs: Path) -> Path:
    base = subprocess.run(
        ["tar", "-C", str(busybox_rootfs), "-c", "."], capture_output=True, check=True
    ).stdout
    docker_archive(workdir / "bb.tar", [base], ["busybox:latest"])
    return workdir / "bb.tar"


def test_docker_archive_and_skopeo_round_trips(
    cli: CLI, bb_archive: Path, busybox_rootfs: Path, workdir: Path
) -> None:
    assert cli("load", "-i", str(bb_archive)).stdout == "Loaded image: busybox:latest\n"
    assert exported_tree(cli, "busybox", "e0", workdir / "x0") == tree(busybox_rootfs)
    # what pallet saves, skopeo reads and converts; what skopeo writes, pallet loads
    cli("save", "-o", str(workdir / "saved.tar"), "busybox")
    info = json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"docker-archive:{workdir / 'saved.tar'}"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    )
    assert len(info["Layers"]) == 1
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            f"docker-archive:{workdir / 'saved.tar'}",
            f"oci-archive:{workdir / 'sk-oci.tar'}:skopeo/bb:oci",
        ],
        check=True,
    )
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            f"docker-archive:{workdir / 'saved.tar'}",
            f"oci:{workdir / 'sk-layout'}:v1",
        ],
        check=True,
    )
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            f"oci:{workdir / 'sk-layout'}:v1",
            f"docker-archive:{workdir / 'sk-docker.tar'}:skopeo/bb:docker",
        ],
        check=True,
    )
    other = CLI(workdir / "root2")
    assert other("load", "-i", str(workdir / "sk-docker.tar")).stdout == "Loaded image: skopeo/bb:docker\n"
    assert other("load", "-i", str(workdir / "sk-oci.tar")).stdout == "Loaded image: skopeo/bb:oci\n"
    out = other("load", "-i", str(workdir / "sk-layout")).stdout
    assert out.startswith(
        "Loaded image ID: sha256:"
    )  # ref.name "v1" is a bare tag: left untagged, as docker does
    other.mounts = cli.mounts
    assert exported_tree(other, "skopeo/bb:docker", "e1", workdir / "x1") == tree(busybox_rootfs)
    assert exported_tree(other, "skopeo/bb:oci", "e2", workdir / "x2") == tree(busybox_rootfs)
    assert exported_tree(other, out.split()[-1], "e3", workdir / "x3") == tree(busybox_rootfs)


def test_oci_save_is_read_by_umoci_and_skopeo(cli: CLI, busybox_rootfs: Path, workdir: Path) -> None:
    rootfs_tar = workdir / "rootfs.tar"
    subprocess.run(["tar", "-C", str(busybox_rootfs), "-cf", str(rootfs_tar), "."], check=True)
    image_id = cli("import", "-c", 'CMD ["/bin/sh"]', str(rootfs_tar), "bb:imported").stdout.strip()
    cli("save", "--format", "oci-dir", "-o", str(workdir / "layout"), "bb:imported")
    cli("save", "--format", "oci-archive", "-o", str(workdir / "oci.tar"), "bb:imported")
    subprocess.run(
        ["umoci", "unpack", "--image", f"{workdir / 'layout'}:imported", str(workdir / "bundle")],
        check=True,
        capture_output=True,
    )
    assert tree(workdir / "bundle" / "rootfs") == tree(busybox_rootfs)
    cfg = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--config", f"oci-archive:{workdir / 'oci.tar'}"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    )
    assert cfg["config"]["Cmd"] == ["/bin/sh"]
    other = CLI(workdir / "root2")
    other("load", "-i", str(workdir / "oci.tar"))
    assert other("images", "-q", "--no-trunc").stdout.strip() == image_id


def test_import_from_stdin_and_export(cli: CLI, busybox_rootfs: Path, workdir: Path) -> None:
    data = subprocess.run(
        ["tar", "-C", str(busybox_rootfs), "-cz", "."], capture_output=True, check=True
    ).stdout
    p = subprocess.run(
        [*PALLET, "--root", str(cli.root), "import", "-m", "hello", "-", "imp:1"],
        input=data,
        capture_output=True,
    )
    assert p.returncode == 0, p.stderr
    assert exported_tree(cli, "imp:1", "e", workdir / "x") == tree(busybox_rootfs)
    hist = cli("history", "--format", "{{.CreatedBy}}|{{.Comment}}", "imp:1").stdout
    assert hist == "pallet import|hello\n"


def test_commit_turns_changes_into_a_layer_with_whiteouts(cli: CLI, bb_archive: Path, workdir: Path) -> None:
    cli("load", "-i", str(bb_archive))
    cli("snapshot", "prepare", "ctr", "busybox")
    root = cli.mount("ctr", workdir / "mnt")
    (root / "etc/group").unlink()
    shutil.rmtree(root / "home")
    (root / "etc/added").write_text("new\n")
    os.makedirs(root / "var/lib/app")
    cli.unmount_all()
    diff = cli("diff", "ctr").stdout.splitlines()
    assert {"C /etc", "D /etc/group", "A /etc/added", "D /home", "A /var/lib/app"} <= set(diff)
    new_id = cli("commit", "-m", "changed", "-c", "ENV X=1", "ctr", "busybox:changed").stdout.strip()
    saved = workdir / "changed.tar"
    cli("save", "-o", str(saved), "busybox:changed")
    with tarfile.open(saved) as t:
        manifest = json.loads(t.extractfile("manifest.json").read())  # type: ignore[union-attr]
        top = tarfile.open(fileobj=t.extractfile(manifest[0]["Layers"][-1]))
        names = set(top.getnames())
    assert {"etc/.wh.group", ".wh.home", "etc/added", "var/lib/app"} <= names
    assert not any(n.startswith("bin") for n in names)
    inspect = json.loads(cli("image", "inspect", "busybox:changed").stdout)[0]
    assert (
        inspect["Id"] == new_id
        and "X=1" in inspect["Config"]["Env"]
        and len(inspect["RootFS"]["Layers"]) == 2
    )
    cli("snapshot", "prepare", "ctr2", "busybox:changed")
    r2 = cli.mount("ctr2", workdir / "mnt2")
    assert (r2 / "etc/added").read_text() == "new\n"
    assert not (r2 / "etc/group").exists() and not (r2 / "home").exists() and (r2 / "etc/passwd").exists()


def test_system_df_shared_and_unique(cli: CLI, bb_archive: Path, workdir: Path) -> None:
    cli("load", "-i", str(bb_archive))
    cli("snapshot", "prepare", "ctr", "busybox")
    root = cli.mount("ctr", workdir / "mnt")
    (root / "big").write_bytes(b"x" * 100_000)
    cli.unmount_all()
    cli("commit", "ctr", "busybox:big")
    rows = [line.split() for line in cli("system", "df").stdout.splitlines()]
    assert rows[1][:3] == ["Images", "2", "1"]
    assert rows[2][:3] == ["Containers", "1", "0"] and rows[2][3] == "100kB"
    verbose = cli("system", "df", "-v").stdout
    lines = {ln.split()[1]: ln.split() for ln in verbose.splitlines() if ln.startswith("busybox")}
    assert lines["big"][-2] == "100kB" and lines["latest"][-2] == "0B"  # UNIQUE SIZE
    assert lines["big"][-3] == lines["latest"][-3] != "0B"  # SHARED SIZE: the busybox layer


def test_hostile_layer_via_cli_leaves_nothing(cli: CLI, workdir: Path) -> None:
    (workdir / "victim").mkdir()
    evil = tar_bytes([d("x"), f("x/../../victim/owned", b"!")])
    docker_archive(workdir / "evil.tar", [evil], ["evil:1"])
    p = cli("load", "-i", str(workdir / "evil.tar"), check=False)
    assert p.returncode == 125 and p.stderr.startswith("Error: layer: entry ") and p.stderr.count("\n") == 1
    assert os.listdir(workdir / "victim") == []
    assert cli("images", "-q").stdout == "" and cli("snapshot", "ls").stdout.count("\n") == 1


def test_parallel_loads_share_one_unpack_of_the_base(cli: CLI, busybox_rootfs: Path, workdir: Path) -> None:
    base = subprocess.run(
        ["tar", "-C", str(busybox_rootfs), "-c", "."], capture_output=True, check=True
    ).stdout
    archives = []
    for i in range(4):
        docker_archive(workdir / f"p{i}.tar", [base, tar_bytes([f(f"only{i}", b"x")])], [f"par:{i}"])
        archives.append(workdir / f"p{i}.tar")
    argv = [*PALLET, "--root", str(cli.root), "--storage-driver", "overlay"]
    procs = [
        subprocess.Popen([*argv, "load", "-i", str(a)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for a in archives
    ]
    procs.append(
        subprocess.Popen(
            [*argv, "image", "prune", "-a", "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    )
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err.decode()
    # prune may have run before or after any load; every load that finished left a whole image
    listed = cli("images", "--format", "{{.Tag}}").stdout.split()
    layers = [ln.split()[0] for ln in cli("snapshot", "ls").stdout.splitlines()[1:]]
    assert len(layers) == (len(listed) + 1 if listed else 0)  # one shared base plus one top per image
    for tag in listed:
        cli("snapshot", "prepare", f"c{tag}", f"par:{tag}")
        assert (cli.mount(f"c{tag}", workdir / f"m{tag}") / f"only{tag}").exists()
