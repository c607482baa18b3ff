"""Layer apply: ordinary content, whiteouts, and hostile tars that must be refused with nothing
written outside the target."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from pathlib import Path

import pytest

from pallet.errors import InvalidArgument
from pallet.image.layers import LayerError, Whiteouts, apply_layer, clean_name
from tests.unit.image.tarutil import d, entry, f, hard, sym, tar_bytes, tree, write_layer


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    """(root to apply into, a sibling directory that must stay untouched)."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("keep")
    return root, outside


def apply(
    root: Path,
    entries: list,
    whiteouts: Whiteouts = Whiteouts.DELETE,
    compression: str = "",
    lowers: list[Path] | None = None,
):  # type: ignore[no-untyped-def,type-arg]
    blob = write_layer(root.parent / "layer.blob", entries, compression)
    return apply_layer(root, blob, whiteouts, lowers)


def test_regular_content_modes_times_links(box: tuple[Path, Path]) -> None:
    root, _ = box
    res = apply(
        root,
        [
            d("etc", mode=0o755),
            f("etc/hosts", b"127.0.0.1 localhost\n", mode=0o640, mtime=1_500_000_000),
            sym("etc/link", "hosts"),
            hard("etc/hard", "etc/hosts"),
            d("tmp", mode=0o1777),
            entry("run/fifo", tarfile.FIFOTYPE, mode=0o600),
            f("deep/er/file", b"x"),  # parents not listed: made on the way
        ],
    )
    assert (root / "etc/hosts").read_text() == "127.0.0.1 localhost\n"
    assert stat.S_IMODE(os.lstat(root / "etc/hosts").st_mode) == 0o640
    assert os.lstat(root / "etc/hosts").st_mtime == 1_500_000_000
    assert os.readlink(root / "etc/link") == "hosts"
    assert os.lstat(root / "etc/hard").st_ino == os.lstat(root / "etc/hosts").st_ino
    assert stat.S_IMODE(os.lstat(root / "tmp").st_mode) == 0o1777
    assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
    assert (root / "deep/er/file").read_bytes() == b"x"
    data = (root.parent / "layer.blob").read_bytes()
    assert str(res.diff_id) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert res.size == len(data)


@pytest.mark.parametrize("compression", ["", "gzip", "zstd"])
def test_compressions_give_the_same_tree_and_diff_id(tmp_path: Path, compression: str) -> None:
    entries = [d("a"), f("a/b", b"hello"), sym("a/c", "b")]
    root = tmp_path / "r"
    root.mkdir()
    res = apply(root, entries, compression=compression)
    assert tree(root) == {"a": "d 755", "a/b": "f 644 b'hello'", "a/c": "l b"}
    assert str(res.diff_id) == "sha256:" + hashlib.sha256(tar_bytes(entries)).hexdigest()


def test_user_xattrs_kept_and_overlay_xattrs_dropped(box: tuple[Path, Path]) -> None:
    root, _ = box
    try:
        os.setxattr(root, "user.probe", b"1")
    except OSError:
        pytest.skip("filesystem without user xattrs")
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    xattrs = {"user.note": b"hi\xff", "trusted.overlay.opaque": b"y"}
    if os.geteuid() == 0:
        xattrs["security.capability"] = cap
    apply(root, [f("bin/ping", b"elf", mode=0o755, xattrs=xattrs)])
    assert os.getxattr(root / "bin/ping", "user.note") == b"hi\xff"
    if os.geteuid() == 0:
        assert os.getxattr(root / "bin/ping", "security.capability") == cap
        with pytest.raises(OSError):
            os.getxattr(root / "bin/ping", "trusted.overlay.opaque")


@pytest.mark.parametrize(
    "name",
    ["../evil", "a/../../evil", "/etc/evil", "./../evil"],
)
def test_path_traversal_refused(box: tuple[Path, Path], name: str) -> None:
    root, outside = box
    with pytest.raises(LayerError, match="absolute path|contains"):
        apply(root, [f(name, b"pwned")])
    assert sorted(os.listdir(outside)) == ["secret"]
    assert not (root.parent / "evil").exists()


def test_symlink_climbing_out_then_write_through_refused(box: tuple[Path, Path]) -> None:
    root, outside = box
    with pytest.raises(LayerError, match="escapes the root"):
        apply(root, [sym("esc", "../outside"), f("esc/secret", b"pwned")])
    assert (outside / "secret").read_text() == "keep"
    with pytest.raises(LayerError, match="escapes the root"):
        apply(root, [sym("a", "."), sym("b", "a/../../outside"), f("b/new", b"pwned")])
    assert sorted(os.listdir(outside)) == ["secret"]


def test_absolute_symlink_is_resolved_inside_the_root(box: tuple[Path, Path]) -> None:
    """An absolute link means the container's / — the layer root — never the host's."""
    root, outside = box
    apply(root, [sym("esc", str(outside)), f("esc/secret", b"inside")])
    assert (outside / "secret").read_text() == "keep"
    assert (root / str(outside).lstrip("/") / "secret").read_bytes() == b"inside"
    assert os.readlink(root / "esc") == str(outside)


def test_final_symlink_component_is_replaced_not_followed(box: tuple[Path, Path]) -> None:
    root, outside = box
    apply(root, [sym("x", str(outside / "secret")), f("x", b"new")])
    assert (outside / "secret").read_text() == "keep"
    assert not os.path.islink(root / "x") and (root / "x").read_bytes() == b"new"


@pytest.mark.parametrize("target", ["../outside/secret", "/etc/passwd", "esc/secret"])
def test_hardlink_outside_refused(box: tuple[Path, Path], target: str) -> None:
    root, outside = box
    with pytest.raises(LayerError, match="hardlink"):
        apply(root, [sym("esc", "../outside"), hard("h", target)])
    assert os.stat(outside / "secret").st_nlink == 1
    assert not os.path.lexists(root / "h")


def test_hardlink_to_missing_target_refused(box: tuple[Path, Path]) -> None:
    root, _ = box
    with pytest.raises(LayerError, match="does not exist"):
        apply(root, [hard("h", "nothing")])


def test_whiteout_aimed_outside_refused(box: tuple[Path, Path]) -> None:
    root, outside = box
    for name in ["../.wh.outside", ".wh..", "a/.wh.."]:
        with pytest.raises(LayerError):
            apply(root, [d("a"), f(name)])
    assert (outside / "secret").read_text() == "keep"


def test_huge_extended_header_refused(box: tuple[Path, Path]) -> None:
    root, _ = box
    info = tarfile.TarInfo("x")
    info.pax_headers = {"comment": "a" * (2 << 20)}
    with pytest.raises(LayerError, match="extended header"):
        apply(root, [(info, b"")])


def test_truncated_gzip_refused(box: tuple[Path, Path]) -> None:
    root, _ = box
    data = gzip.compress(tar_bytes([f("a", os.urandom(200_000))]))
    blob = root.parent / "trunc.gz"
    blob.write_bytes(data[: len(data) // 2])
    with pytest.raises(LayerError, match="truncated|corrupt|bad tar"):
        apply_layer(root, blob)


def test_garbage_refused(box: tuple[Path, Path]) -> None:
    root, _ = box
    blob = root.parent / "garbage"
    blob.write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(LayerError):
        apply_layer(root, blob)


def test_file_as_parent_refused(box: tuple[Path, Path]) -> None:
    root, _ = box
    with pytest.raises(LayerError, match="not a directory"):
        apply(root, [f("a", b"1"), f("a/b", b"2")])


def test_errors_are_invalid_argument_with_one_line() -> None:
    with pytest.raises(InvalidArgument) as e:
        clean_name("/abs")
    assert "\n" not in str(e.value) and str(e.value) == str(e.value).lower()


# -- whiteouts -------------------------------------------------------------------------------------


def test_delete_whiteouts_and_opaque_directories(box: tuple[Path, Path]) -> None:
    root, _ = box
    apply(
        root,
        [d("a"), f("a/keep", b"1"), f("a/gone", b"2"), d("o"), f("o/old", b"3"), d("o/sub"), f("top", b"4")],
    )
    apply(
        root,
        [
            f("a/.wh.gone"),
            f("o/new", b"5"),  # same layer, before the opaque marker: survives
            f("o/.wh..wh..opq"),
            f(".wh.top"),
            f(".wh.never-existed"),
        ],
    )
    assert tree(root) == {"a": "d 755", "a/keep": "f 644 b'1'", "o": "d 755", "o/new": "f 644 b'5'"}


def test_whiteout_does_not_hide_its_own_layer(box: tuple[Path, Path]) -> None:
    root, _ = box
    apply(root, [f("x", b"mine"), f(".wh.x")])
    assert (root / "x").read_bytes() == b"mine"


def test_oci_mode_keeps_whiteout_files(box: tuple[Path, Path]) -> None:
    root, _ = box
    apply(root, [f("a/.wh.b"), f("a/.wh..wh..opq")], Whiteouts.OCI)
    assert sorted(os.listdir(root / "a")) == [".wh..wh..opq", ".wh.b"]


@pytest.mark.skipif(os.geteuid() != 0, reason="overlay whiteouts are 0/0 devices and trusted xattrs")
def test_overlay_mode_writes_kernel_whiteouts(box: tuple[Path, Path]) -> None:
    root, _ = box
    apply(
        root,
        [f("a/.wh.b"), f("o/.wh..wh..opq"), entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3))],
        Whiteouts.OVERLAY,
    )
    st = os.lstat(root / "a/b")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(root / "o", "trusted.overlay.opaque") == b"y"
    assert os.lstat(root / "dev/null").st_rdev == os.makedev(1, 3)


# -- applying into an upper directory above lower layers ------------------------------------------------


def test_parents_missing_from_the_upper_follow_the_lower_layers(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    apply(lower, [d("usr"), d("usr/lib"), sym("lib", "usr/lib"), d("tmp", mode=0o1777), sym("abs", "/usr")])
    apply(
        upper,
        [f("lib/libc.so", b"elf"), f("tmp/x", b"t"), f("abs/share", b"s")],
        Whiteouts.OCI,
        lowers=[lower],
    )
    assert not os.path.lexists(upper / "lib")  # the lower symlink still shows through
    assert (upper / "usr/lib/libc.so").read_bytes() == b"elf"
    assert (upper / "usr/share").read_bytes() == b"s"
    assert stat.S_IMODE(os.lstat(upper / "tmp").st_mode) == 0o1777  # copied up, not a fresh 0755


def test_lower_symlink_escape_and_whiteouts_below(tmp_path: Path) -> None:
    low1, low2, upper = tmp_path / "l1", tmp_path / "l2", tmp_path / "up"
    for p in (low1, low2, upper):
        p.mkdir()
    apply(low1, [sym("esc", "../../.."), sym("gone", "usr")])
    apply(low2, [f(".wh.gone")], Whiteouts.OCI)
    with pytest.raises(LayerError, match="escapes the root"):
        apply(upper, [f("esc/x", b"!")], Whiteouts.OCI, lowers=[low2, low1])
    apply(upper, [f("gone/x", b"ok")], Whiteouts.OCI, lowers=[low2, low1])
    assert (upper / "gone/x").read_bytes() == b"ok" and not os.path.islink(upper / "gone")


def test_directory_times_are_not_set_through_a_later_symlink(box: tuple[Path, Path]) -> None:
    root, outside = box
    (outside / "b").mkdir()
    os.utime(outside / "b", ns=(7_000_000_000, 7_000_000_000))
    apply(root, [d("a"), d("a/b", mtime=1_000), sym("a", str(outside))])
    assert os.lstat(outside / "b").st_mtime_ns == 7_000_000_000
    assert os.readlink(root / "a") == str(outside)
