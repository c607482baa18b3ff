"""Restart policies across a reboot, without a daemon: what dockerd does for its containers as it
starts (its restore) and podman's podman-restart.service (``podman start --all --filter
restart-policy=always``) does at boot.

A container's monitor applies its restart policy while it lives; a reboot, or a killed monitor, ends
it with the container. ``restore`` (``pallet system restore``, and ``pallet system service`` as it
starts, as dockerd does) starts again each container that dockerd would after its own restart:

- ``always``: always, even one the user had stopped;
- ``unless-stopped``: unless the user had stopped it: ``stop`` and ``kill`` set docker's
  ``HasBeenManuallyStopped`` in its state, ``start`` clears it;
- ``on-failure``: if it was running when its monitor died (a crash is a failure), within its limit.

Only containers that have been started before, and none that runs. A container whose monitor died
(``dead``, found by ``Engine.refresh``) is first rid of what its runtime left (after a real reboot
nothing: the runroot is a tmpfs) and recorded as exited 255, as docker shows a container lost with
its host; one that is ``dead`` for a crashed create or rm is left to ``rm -f``.
"""

from __future__ import annotations

import os
from typing import Any

from pallet.engine.store import Record
from pallet.errors import PalletError

LOST = 255  # docker's exit code for a container whose process went with the host


def wanted(rec: Record, lost: bool) -> bool:
    """Would dockerd start ``rec`` as it restores? ``lost``: it was running when its monitor died."""
    policy = rec.config.get("HostConfig", {}).get("RestartPolicy") or {}
    name = policy.get("Name") or "no"
    if not rec.state.get("StartedAt"):
        return False
    if name == "always":
        return True
    if name == "unless-stopped":
        return not rec.state.get("HasBeenManuallyStopped")
    if name == "on-failure":
        limit = int(policy.get("MaximumRetryCount") or 0)
        return lost and (limit == 0 or int(rec.state.get("RestartCount") or 0) < limit)
    return False


def _lost(rec: Record) -> bool:
    """Dead because its monitor died under it (not a crashed create or rm)."""
    st = rec.state
    return st.get("Status") == "dead" and bool(st.get("Dead")) and not st.get("Incomplete")


def _reset(engine: Any, rec: Record) -> None:
    """A lost container back to ``exited``: its runtime's leftovers (the process is gone, the state,
    the cgroup may not be) deleted, its snapshot unmounted, its exit recorded."""
    from pallet.engine.containers import now_rfc3339

    runtime = engine.runtime_cmd(rec)
    if os.path.isdir(os.path.join(runtime[runtime.index("--root") + 1], rec.id)):
        engine._runtime(rec, "delete", "--force", rec.id, check=False)
    engine._unmount_rootfs(rec.id)
    engine.store.update_state(
        rec.id,
        lambda s: s.update(
            Status="exited", Running=False, Paused=False, Restarting=False, Dead=False, Pid=0,
            ExitCode=LOST, FinishedAt=now_rfc3339(), Error="",
        ),
    )  # fmt: skip


def restore(engine: Any) -> list[tuple[Record, str]]:
    """Start what dockerd would start as it restores; returns each container tried and "" or why it
    failed to start (one failure does not stop the others)."""
    done = []
    for rec in engine.all():
        lost = _lost(rec)
        if engine.status(rec) not in ("exited", "dead") or (engine.status(rec) == "dead" and not lost):
            continue
        if not wanted(rec, lost):
            continue
        try:
            if lost:
                _reset(engine, rec)
            engine.start(rec.id)
            done.append((rec, ""))
        except (PalletError, OSError) as e:
            done.append((rec, str(e)))
    return done
