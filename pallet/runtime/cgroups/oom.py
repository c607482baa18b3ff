"""OOM notifications for ``events``: wait for the kernel to say the container hit its memory limit.

v1: an eventfd registered with ``cgroup.event_control`` against ``memory.oom_control``; the kernel
signals it at each OOM, and once more when the cgroup is removed.
v2: ``memory.events`` raises POLLPRI on its fd whenever a counter changes (kernfs_notify); we count
increases of ``oom_kill``, as runc does.

    w = watch_oom(mgr)
    while not w.gone:
        n = w.wait(timeout=interval)   # 0 on timeout

``stream(mgr, interval)`` wraps that for ``events``: runc's event objects, less the container id.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator
from typing import Any

from pallet.runtime.cgroups.common import CgroupError


class OOMWatcher:
    """Blocking, bounded waits for OOM events in one cgroup; close() when done."""

    def __init__(self, mgr: Any) -> None:
        self.gone = False
        self._poll = select.poll()
        self._efd = -1
        self._fd = -1
        self.version: int = mgr.version
        if mgr.version == 1:
            d = mgr.paths.get("memory")
            if d is None or not os.path.isdir(d):
                raise CgroupError("cgroup memory: cannot watch for OOM: the container has no memory cgroup")
            self._dir = d
            self._efd = os.eventfd(0, os.EFD_CLOEXEC)
            try:
                self._fd = os.open(os.path.join(d, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
                ctl = os.open(os.path.join(d, "cgroup.event_control"), os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(ctl, f"{self._efd} {self._fd}".encode())
                finally:
                    os.close(ctl)
            except OSError as e:
                self.close()
                raise CgroupError(
                    f"cgroup memory: cannot watch {d} for OOM: {os.strerror(e.errno or 0).lower()}"
                ) from e
            self._poll.register(self._efd, select.POLLIN)
        else:
            d = mgr.paths.get("")
            if not d:
                raise CgroupError("cgroup memory: cannot watch for OOM: the container has no cgroup")
            self._dir = d
            try:
                self._fd = os.open(os.path.join(d, "memory.events"), os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise CgroupError(
                    f"cgroup memory: cannot watch {d} for OOM: {os.strerror(e.errno or 0).lower()}"
                ) from e
            self._last = self._read_v2()
            self._poll.register(self._fd, select.POLLPRI)

    def fileno(self) -> int:
        """The fd to wait on (POLLIN on v1, POLLPRI on v2) for callers with their own poll loop."""
        return self._efd if self.version == 1 else self._fd

    def _read_v2(self) -> int:
        os.lseek(self._fd, 0, os.SEEK_SET)
        text = os.read(self._fd, 4096).decode()
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def wait(self, timeout: float | None = None) -> int:
        """New OOM events since the last call; 0 when ``timeout`` seconds pass without one."""
        if self.gone:
            return 0
        ms = None if timeout is None else max(0, int(timeout * 1000))
        if not self._poll.poll(ms):
            return 0
        if self.version == 1:
            count = os.eventfd_read(self._efd)
            if not os.path.isdir(self._dir):
                self.gone = True  # the last signal is the cgroup's removal, not an OOM
                return max(0, count - 1)
            return count
        try:
            now = self._read_v2()
        except OSError:
            self.gone = True
            return 0
        if not os.path.isdir(self._dir):
            self.gone = True
        delta, self._last = max(0, now - self._last), now
        return delta

    def close(self) -> None:
        for fd in (self._efd, self._fd):
            if fd >= 0:
                os.close(fd)
        self._efd = self._fd = -1

    def __enter__(self) -> OOMWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def watch_oom(mgr: Any) -> OOMWatcher:
    return OOMWatcher(mgr)


def stream(mgr: Any, interval: float) -> Iterator[dict[str, Any]]:
    """{"type": "oom"} as OOMs happen and {"type": "stats", "data": ...} every ``interval`` seconds,
    until the cgroup is removed. Without a memory cgroup (rootless) only stats come."""
    try:
        watcher: OOMWatcher | None = OOMWatcher(mgr)
    except CgroupError:
        watcher = None
    try:
        due = time.monotonic()
        while mgr.exists():
            left = due - time.monotonic()
            if left <= 0:
                yield {"type": "stats", "data": mgr.stats()}
                due = time.monotonic() + interval
                continue
            if watcher is None:
                time.sleep(left)
                continue
            for _ in range(watcher.wait(left)):
                yield {"type": "oom"}
            if watcher.gone:
                return
    finally:
        if watcher is not None:
            watcher.close()
