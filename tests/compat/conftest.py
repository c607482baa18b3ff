"""Real peers driving pallet-runtime: shared plumbing for starting them in temporary roots and tearing
them down even when a test fails.

Every peer lives in one directory, /tmp/pallet-t<hex>-<peer>, that holds its roots, state, sockets,
logs and the runtime's --root; its path carries the "pallet-t" token, so anything a peer leaves behind
(a process whose command line names its socket, a mount under its root) is found and removed by
`peer_dir`'s teardown, and a test can check that a removed container left nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.compat.images import layer_tar, oci_archive
from tests.helpers.leaks import find_leaks

# PALLET_COMPAT_RUNTIME points the peers at another build of the runtime (an absolute path)
PALLET_RUNTIME = Path(
    os.environ.get("PALLET_COMPAT_RUNTIME") or Path(sys.executable).parent / "pallet-runtime"
)
IMAGE_NAME = "docker.io/library/pallet-busybox:latest"


def need(*binaries: str) -> dict[str, str]:
    """Paths of the peer's binaries, or skip the module naming the one that is missing."""
    found = {}
    for b in binaries:
        path = shutil.which(b)
        if path is None:
            pytest.skip(f"{b} is not installed (Debian: containerd, podman, docker.io, runc, crun)")
        found[b] = path
    if not PALLET_RUNTIME.exists():
        pytest.skip(f"{PALLET_RUNTIME} is missing: install the package (pip install -e .)")
    return found


def mounts_under(prefix: Path) -> list[str]:
    p = str(prefix) + "/"
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if (line.split()[1] + "/").startswith(p)]


def processes_naming(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmd:
            pids.append(int(entry))
    return pids


def teardown_dir(d: Path) -> None:
    """Kill what still names d (daemons, shims, conmon, containers), unmount under it, remove it."""
    for pid in processes_naming(str(d)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for _ in range(3):
        # deepest first; lazily, as a killed shim may still hold a rootfs
        for target in sorted(set(mounts_under(d)), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)
        if not mounts_under(d):
            break
    shutil.rmtree(d, ignore_errors=True)
    remove_cgroups_naming(d.name)


def remove_cgroups_naming(name: str) -> None:
    """Peers leave their cgroup parents behind: dockerd its --cgroup-parent (named after its dir),
    podman its libpod_parent and conmon's cgroup in it, made on first use and never removed. Remove
    the empty ones that carry ``name``, and podman's, deepest first."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if not hierarchy.is_dir():
            continue
        found = [p for p, _, _ in os.walk(hierarchy) if name in Path(p).name]
        found += [str(hierarchy / "libpod_parent" / "conmon"), str(hierarchy / "libpod_parent")]
        for p in sorted(found, key=len, reverse=True):
            try:
                os.rmdir(p)
            except OSError:
                pass


@contextmanager
def peer_dir(label: str) -> Iterator[Path]:
    d = Path("/tmp") / f"pallet-t{uuid.uuid4().hex[:10]}-{label}"
    d.mkdir(mode=0o755)
    try:
        yield d
    finally:
        teardown_dir(d)


class Daemon:
    """A peer daemon started by a test: output to a log file, stopped with SIGTERM, then SIGKILL."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.name = argv[0]
        with log.open("ab") as f:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_for_socket(self, path: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if path.exists():
                with socket.socket(socket.AF_UNIX) as s:
                    try:
                        s.connect(str(path))
                        return
                    except OSError:
                        pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"{self.name} did not listen on {path} in {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_containerd(d: Path) -> tuple[Daemon, Path]:
    """containerd with its root, state and sockets in d; the CRI plugin and odd snapshotters off."""
    config = d / "containerd.toml"
    sock = d / "containerd.sock"
    config.write_text(
        f"""version = 2
root = "{d}/containerd-root"
state = "{d}/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"""
    )
    daemon = Daemon(["containerd", "--config", str(config)], d / "containerd.log")
    daemon.wait_for_socket(sock)
    return daemon, sock


def dockerd_argv(d: Path, containerd_sock: Path, *extra: str, bridge: str = "none") -> list[str]:
    """A private dockerd: config, data, exec root, pidfile, socket and containerd namespace all in d,
    no iptables (a shared host); writes d/daemon.json."""
    (d / "daemon.json").write_text("{}\n")
    return [
        "dockerd", "--config-file", f"{d}/daemon.json", f"--bridge={bridge}", "--iptables=false",
        "--ip6tables=false", "--data-root", f"{d}/data", "--exec-root", f"{d}/exec",
        "--pidfile", f"{d}/docker.pid", "--host", f"unix://{d}/docker.sock",
        "--containerd", str(containerd_sock), "--containerd-namespace", d.name,
        "--containerd-plugins-namespace", d.name + "-plugins", f"--cgroup-parent=/{d.name}", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def busybox_tar(busybox_rootfs: Path) -> Iterator[Path]:
    """The busybox rootfs as a layer tar (what `docker import` and `podman import` take)."""
    with peer_dir("images") as d:
        yield layer_tar(busybox_rootfs, d / "busybox-rootfs.tar")


@pytest.fixture(scope="session")
def busybox_oci_archive(busybox_tar: Path) -> Path:
    """An OCI image layout archive of busybox named IMAGE_NAME (what `ctr images import` takes)."""
    return oci_archive(busybox_tar, busybox_tar.with_name("busybox-oci.tar"), IMAGE_NAME)


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition a peer reaches asynchronously (a shim exiting, a task stopping)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def names_under(d: Path, text: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(d, onerror=lambda e: None):
        found += [os.path.join(dirpath, n) for n in dirnames + filenames if text in n]
    return found


def assert_nothing_left(cid: str, d: Path, baseline_mounts: list[str], timeout: float = 10.0) -> None:
    """After removal: no process, mount or cgroup names the container, no file under the peer's dir
    (runtime state, bundle, fifo, log) is named for it, and the peer's mounts are back to baseline.
    Waits a little: shims and conmon exit asynchronously after the peer reports the removal."""

    def leftovers() -> list[str]:
        extra = sorted(set(mounts_under(d)) - set(baseline_mounts))
        return find_leaks(cid) + names_under(d, cid) + [f"mount: {m}" for m in extra]

    deadline = time.monotonic() + timeout
    left = leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = leftovers()
    assert not left, f"container {cid} left behind: " + "; ".join(left)


def exec_pid(stdout: str) -> int:
    """The pid that `echo exec-pid $$` printed inside the container."""
    m = re.search(r"exec-pid (\d+)", stdout)
    assert m, f"no exec-pid in {stdout!r}"
    return int(m.group(1))


def unique_id(label: str = "c") -> str:
    return f"pallet-t{uuid.uuid4().hex[:10]}-{label}"


# PID 1 ignores SIGTERM unless it handles it: this one exits 7 on SIGTERM, so a stop that reports 7
# proves the signal went through the peer and pallet-runtime's `kill` to the container's init.
TRAP_TERM = ["sh", "-c", "trap 'exit 7' TERM; echo ready; while :; do sleep 0.1; done"]
