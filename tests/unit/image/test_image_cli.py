"""The pallet CLI's image verbs, in-process on a temp root with the native snapshotter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pallet.cli.format import human_duration, human_size, render, tabwrite
from pallet.cli.main import main
from tests.unit.image.tarutil import d, f, oci_layout, tar_bytes


def run(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str, str]:
    rc = main(["--root", str(root), "--runroot", str(root / "run"), "--storage-driver", "native", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def root(tmp_path: Path) -> Path:
    oci_layout(
        tmp_path / "layout", [tar_bytes([d("etc"), f("etc/hostname", b"x" * 2000)])], "example.com/app:1.0"
    )
    return tmp_path / "root"


def test_load_images_tag_inspect_rm(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    rc, out, _ = run(capsys, root, "load", "-i", str(root.parent / "layout"))
    assert (rc, out) == (0, "Loaded image: example.com/app:1.0\n")
    assert run(capsys, root, "tag", "example.com/app:1.0", "app")[0] == 0
    rc, out, _ = run(capsys, root, "images")
    lines = out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert lines[0].startswith(
        "REPOSITORY        TAG       IMAGE ID       CREATED"
    )  # widths of docker's tabwriter
    assert [line.split()[:2] for line in lines[1:]] == [["app", "latest"], ["example.com/app", "1.0"]]
    assert all(line.split()[-1] == "2kB" for line in lines[1:])
    rc, out, _ = run(capsys, root, "images", "-q")
    image_id = out.split()[0]
    assert len(out.split()) == 1 and len(image_id) == 12
    rc, out, _ = run(capsys, root, "images", "--format", "{{.Repository}}:{{.Tag}}", "app")
    assert out == "app:latest\n"
    rc, out, _ = run(capsys, root, "images", "--format", "json")
    assert {json.loads(line)["Repository"] for line in out.splitlines()} == {"app", "example.com/app"}
    rc, out, _ = run(capsys, root, "image", "inspect", "app")
    data = json.loads(out)
    assert data[0]["Id"].startswith("sha256:" + image_id) and data[0]["RepoTags"] == [
        "app:latest",
        "example.com/app:1.0",
    ]
    rc, out, _ = run(capsys, root, "image", "inspect", "--format", "{{.Os}} {{json .Config.Cmd}}", "app")
    assert out == 'linux ["/bin/sh"]\n'
    rc, out, _ = run(capsys, root, "history", "app")
    assert out.splitlines()[1].startswith(image_id) and "layer 0" in out
    rc, out, err = run(capsys, root, "rmi", image_id)
    assert rc == 125 and "referenced in multiple repositories" in err
    rc, out, _ = run(capsys, root, "rmi", "app", "example.com/app:1.0")
    assert out.splitlines() == [
        "Untagged: app:latest",
        "Untagged: example.com/app:1.0",
        f"Deleted: {data[0]['Id']}",
    ]
    assert run(capsys, root, "images", "-q")[1] == ""


def test_errors_and_exit_codes(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    rc, _, err = run(capsys, root, "image", "inspect", "nope")
    assert rc == 125 and err == 'Error: image "nope": not found\n'
    rc, _, err = run(capsys, root, "load", "-i", str(root.parent / "missing.tar"))
    assert rc == 125 and err.startswith("Error: ") and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        run(capsys, root, "images", "--no-such-flag")
    assert e.value.code == 1
    rc, _, err = run(capsys, root, "tag", "a", "B/C")
    assert rc == 125


def test_save_import_df_prune(capsys: pytest.CaptureFixture[str], root: Path, tmp_path: Path) -> None:
    run(capsys, root, "load", "-i", str(root.parent / "layout"))
    assert run(capsys, root, "save", "-o", str(tmp_path / "s.tar"), "example.com/app:1.0")[0] == 0
    (tmp_path / "rootfs.tar").write_bytes(tar_bytes([f("hello", b"hi")]))
    rc, out, _ = run(capsys, root, "import", "-m", "from test", str(tmp_path / "rootfs.tar"))
    assert rc == 0 and out.startswith("sha256:")
    rc, out, _ = run(capsys, root, "system", "df")
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert rows[1][:3] == ["Images", "2", "0"] and rows[1][3] == "2.002kB"
    rc, out, _ = run(capsys, root, "image", "prune", "-f")
    assert "Deleted Images:" in out and out.count("deleted: sha256:") == 1
    rc, out, _ = run(capsys, root, "images", "-q")
    assert len(out.split()) == 1


def test_format_helpers() -> None:
    assert [human_size(x, 3) for x in (0, 999, 1000, 4_261_000, 1_234_567_890)] == [
        "0B",
        "999B",
        "1kB",
        "4.26MB",
        "1.23GB",
    ]
    assert human_duration(0.5) == "Less than a second"
    assert human_duration(90) == "About a minute"
    assert human_duration(3 * 86400) == "3 days"
    assert human_duration(5 * 7 * 86400) == "5 weeks"
    assert tabwrite([["A", "BB"], ["long-value", "x"]]) == "A            BB\nlong-value   x\n"
    assert render("{{.A.B}}\\t{{json .C}}", {"A": {"B": 1}, "C": ["x"]}) == '1\t["x"]'


def test_history_without_entries_label_filter_and_bare_help(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from pallet.oci.digest import Digest

    lay = tmp_path / "nohist"
    oci_layout(lay, [tar_bytes([f("a", b"1")]), tar_bytes([f("b", b"22")])], "nohist:1")
    manifest_path = (
        lay / "blobs/sha256" / json.loads((lay / "index.json").read_text())["manifests"][0]["digest"][7:]
    )
    manifest = json.loads(manifest_path.read_text())
    config = json.loads((lay / "blobs/sha256" / manifest["config"]["digest"][7:]).read_bytes())
    del config["history"]
    config["config"]["Labels"] = {"team": "infra"}
    raw = json.dumps(config).encode()
    (lay / "blobs/sha256" / Digest.of(raw).hex).write_bytes(raw)
    manifest["config"].update(digest=str(Digest.of(raw)), size=len(raw))
    mraw = json.dumps(manifest).encode()
    (lay / "blobs/sha256" / Digest.of(mraw).hex).write_bytes(mraw)
    index = json.loads((lay / "index.json").read_text())
    index["manifests"][0].update(digest=str(Digest.of(mraw)), size=len(mraw))
    (lay / "index.json").write_text(json.dumps(index))
    root = tmp_path / "root"
    assert run(capsys, root, "load", "-i", str(lay))[0] == 0
    out = run(capsys, root, "history", "--format", "{{.ID}} {{.Size}}", "nohist:1")[1]
    assert out.splitlines()[0].endswith(" 2B") and out.splitlines()[1] == "<missing> 1B"
    assert run(capsys, root, "images", "-q", "-f", "label=team=infra")[1].strip() != ""
    assert run(capsys, root, "images", "-q", "-f", "label=team=web")[1] == ""
    rc, out, _ = run(capsys, root)
    assert rc == 0 and "usage: pallet" in out
