"""The container side of the archive endpoints (``docker cp``), run as its own process:
``python -m pallet.api.archive get|put WHERE PATH``, WHERE the JSON of a ``pallet.engine.copy.Where``.

It enters the container's side first as the engine's ``cp`` does (pallet/engine/copy.py: a running
container's mount namespace and root, or a stopped one's snapshot with its volumes; docker's chrooted
archiver), so that paths and symlinks resolve inside the container and a process there that swaps a
directory for a link between a check and the copy reaches only its own files. A separate process
because the service is threaded: it never forks, and setns and chroot are process-wide.

get: writes one line of JSON (the path's stat, docker's X-Docker-Container-Path-Stat) then a tar of
the path on stdout (device nodes left out, as the engine's cp); exit 2 if the path does not exist.
put: extracts the tar on stdin into PATH, a directory; exit 2 if it is none.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tarfile
from datetime import UTC, datetime

MISSING = 2


def path_stat(path: str) -> dict[str, object]:
    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    # Go's os.FileMode bits, as docker's header carries them
    if stat.S_ISDIR(st.st_mode):
        mode |= 1 << 31
    elif stat.S_ISLNK(st.st_mode):
        mode |= 1 << 27
    return {
        "name": os.path.basename(path) or "/",
        "size": st.st_size,
        "mode": mode,
        "mtime": datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "linkTarget": os.readlink(path) if stat.S_ISLNK(st.st_mode) else "",
    }


def _no_devices(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if info.ischr() or info.isblk() or info.isfifo() else info


def main(argv: list[str]) -> int:
    from pallet.engine import copy

    verb, where, path = argv
    w = copy.Where(**json.loads(where))
    copy.enter(w, copy.open_container(w) if w.pid else None)
    path = "/" + path.strip("/")
    if verb == "get":
        if not os.path.lexists(path):
            return MISSING
        out = sys.stdout.buffer
        out.write(json.dumps(path_stat(path)).encode() + b"\n")
        out.flush()
        if len(argv) and os.environ.get("PALLET_ARCHIVE_STAT_ONLY"):
            return 0
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.add(path, arcname=os.path.basename(path) or ".", filter=_no_devices)
        return 0
    if verb == "put":
        if not os.path.isdir(path):
            return MISSING
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
            for m in tar:
                tar.extract(m, path, set_attrs=True)
        return 0
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
