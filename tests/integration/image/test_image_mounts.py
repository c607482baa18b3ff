"""Real mounts of real snapshots (root): overlay by default, fuse-overlayfs and native too."""

from __future__ import annotations

import os
import select
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pallet.image import archive
from pallet.image.images import Images
from pallet.image.mount import PAGE, mount_all, unmount_all
from tests.unit.image.tarutil import d, docker_archive, f, oci_layout, sym, tar_bytes, tree

pytestmark = pytest.mark.root


def busybox_layers(rootfs: Path, tmp: Path) -> list[bytes]:
    """GNU tar makes the base layer (an independent producer); the second deletes and adds a file."""
    base = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True).stdout
    return [base, tar_bytes([d("etc"), f("etc/.wh.group"), f("etc/motd", b"welcome\n")])]


@pytest.fixture
def images(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Images]:
    kind = getattr(request, "param", "overlay")
    i = Images(workdir / "root", kind)
    yield i
    i.close()


@pytest.fixture
def busybox(images: Images, workdir: Path, busybox_rootfs: Path) -> str:
    docker_archive(workdir / "bb.tar", busybox_layers(busybox_rootfs, workdir), ["busybox:test"])
    archive.load(images, workdir / "bb.tar")
    return "busybox:test"


class Mounted:
    """Mount targets made by a test, unmounted in reverse order even when the test fails."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.targets: list[Path] = []

    def __call__(self, images: Images, key: str) -> Path:
        target = self.base / f"mnt-{key}"
        target.mkdir()
        mount_all(images.snapshots.mounts(key), target)
        self.targets.append(target)
        return target

    def close(self) -> None:
        for t in reversed(self.targets):
            # a fuse-overlayfs daemon exits only after its unmount returns: wait on its pidfd, or the
            # leak check may still see it
            daemons = [os.pidfd_open(pid) for pid in _fuse_daemons(t)]
            unmount_all(t)
            for fd in daemons:
                select.select([fd], [], [], 10)
                os.close(fd)


def _fuse_daemons(target: Path) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"fuse-overlayfs") and str(target).encode() in argv:
            out.append(int(pid))
    return out


@pytest.fixture
def mounted(workdir: Path, leakcheck: None) -> Iterator[Mounted]:
    m = Mounted(workdir)
    try:
        yield m
    finally:
        m.close()


def layer_dirs(images: Images) -> dict[str, dict[str, str]]:
    return {str(p): tree(p) for p in sorted((images.snapshots.root / "snapshots").glob("*/fs"))}


@pytest.mark.parametrize("images", ["overlay", "fuse-overlayfs", "native"], indirect=True)
def test_writable_layer_leaves_the_image_untouched(images: Images, busybox: str, mounted: Mounted) -> None:
    if images.snapshotter_name == "fuse-overlayfs" and not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    images.prepare("c1", busybox)
    before = {k: v for k, v in layer_dirs(images).items()}
    root = mounted(images, "c1")
    assert (root / "etc/motd").read_text() == "welcome\n"
    assert not (root / "etc/group").exists()  # hidden by the second layer's whiteout
    assert (root / "etc/passwd").exists()
    out = subprocess.run(
        ["chroot", str(root), "/bin/sh", "-c", "echo hi > /tmp/x; rm /etc/passwd; cat /tmp/x"],
        capture_output=True,
        text=True,
    )
    assert out.stdout == "hi\n", out.stderr
    assert not (root / "etc/passwd").exists()
    c1_dir = images.snapshots.apply_dir("c1")[0]
    after = {k: v for k, v in layer_dirs(images).items() if not k.startswith(str(c1_dir))}
    assert after == {k: v for k, v in before.items() if not k.startswith(str(c1_dir))}


def test_two_containers_share_lower_layers(images: Images, busybox: str, mounted: Mounted) -> None:
    m1 = images.prepare("c1", busybox)
    m2 = images.prepare("c2", busybox)
    assert m1[0].option("lowerdir") == m2[0].option("lowerdir")
    r1, r2 = mounted(images, "c1"), mounted(images, "c2")
    (r1 / "only-in-1").write_text("1")
    os.unlink(r2 / "etc/passwd")
    assert not (r2 / "only-in-1").exists() and (r1 / "etc/passwd").exists()
    used = {key: size for key, size in images.writable_snapshots()}
    assert used == {"c1": 1, "c2": 0}


def test_many_layers_mount_past_the_page_limit(images: Images, workdir: Path, mounted: Mounted) -> None:
    n = 130
    layers = [tar_bytes([d("layers"), f(f"layers/{i:03d}", str(i).encode())]) for i in range(n - 1)]
    layers.append(tar_bytes([d("layers"), f("layers/.wh.000")]))
    oci_layout(workdir / "many", layers, "many:1")
    archive.load(images, workdir / "many")
    mounts = images.prepare("c", "many:1")
    assert len(",".join(mounts[0].options)) > PAGE  # the relative-path fallback is exercised
    root = mounted(images, "c")
    assert sorted(os.listdir(root / "layers")) == [f"{i:03d}" for i in range(1, n - 1)]
    (root / "layers" / "new").write_text("w")
    assert len(list(images.snapshots.walk())) == n + 1


def test_view_is_read_only(images: Images, busybox: str, mounted: Mounted) -> None:
    top = images.get(busybox).chain_ids()[-1]
    images.snapshots.view("v", str(top))
    root = mounted(images, "v")
    assert (root / "etc/motd").exists()
    with pytest.raises(OSError):
        (root / "new").write_text("x")


def test_layer_writing_through_a_symlinked_directory_below(
    images: Images, workdir: Path, mounted: Mounted
) -> None:
    """usrmerge: /lib -> usr/lib in the base; a later layer's lib/x must land in usr/lib, not hide the link."""
    base = tar_bytes(
        [d("usr"), d("usr/lib"), f("usr/lib/old", b"o"), sym("lib", "usr/lib"), d("tmp", mode=0o1777)]
    )
    top = tar_bytes([f("lib/new", b"n"), f("tmp/t", b"t")])
    oci_layout(workdir / "um", [base, top], "usrmerge:1")
    archive.load(images, workdir / "um")
    images.prepare("c", "usrmerge:1")
    root = mounted(images, "c")
    assert os.readlink(root / "lib") == "usr/lib"
    assert sorted(os.listdir(root / "usr/lib")) == ["new", "old"]
    assert os.stat(root / "tmp").st_mode & 0o7777 == 0o1777


def test_twenty_containers_add_only_their_upper_directories(
    images: Images, busybox: str, mounted: Mounted
) -> None:
    from pallet.image.snapshots import disk_usage

    store = images.snapshots.root / "snapshots"
    before = disk_usage(store).size
    for i in range(20):
        images.prepare(f"c{i}", busybox)
        root = mounted(images, f"c{i}")
        (root / "mine").write_bytes(b"x" * (i + 1))
    # the image's layers are stored once; each container adds exactly what it wrote
    assert disk_usage(store).size - before == sum(range(1, 21))
    assert sorted(size for _, size in images.writable_snapshots()) == list(range(1, 21))


def test_unmount_all_takes_every_stacked_mount(workdir: Path, leakcheck: None) -> None:
    from pallet.image.mount import is_mountpoint
    from pallet.image.snapshots import Mount

    src, target = workdir / "src", workdir / "target"
    src.mkdir()
    target.mkdir()
    for _ in range(2):
        mount_all([Mount("bind", str(src), ["rbind", "rw"])], target)
    assert is_mountpoint(target)
    unmount_all(target)
    assert not is_mountpoint(target)
    unmount_all(target)  # nothing mounted, and no target at all: nothing to do
    unmount_all(workdir / "missing")
