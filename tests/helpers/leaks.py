"""Find host state a test left behind: mounts, cgroups, netns, links and processes naming a token."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def find_leaks(token: str) -> list[str]:
    found: list[str] = []
    with open("/proc/self/mounts") as f:
        for line in f:
            target = line.split()[1]
            if token in target:
                found.append(f"mount: {target}")
    for root in Path("/sys/fs/cgroup").iterdir() if Path("/sys/fs/cgroup").is_dir() else []:
        for dirpath, dirnames, _ in os.walk(root):
            if dirpath.count("/") > 10:
                dirnames[:] = []
            for d in dirnames:
                if token in d:
                    found.append(f"cgroup: {os.path.join(dirpath, d)}")
    try:
        ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        found += [f"netns: {line.split()[0]}" for line in ns.splitlines() if token in line]
    except FileNotFoundError:
        pass
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if token in cmd:
            found.append(f"process {pid}: {cmd.strip()}")
    return found
