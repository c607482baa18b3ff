"""OOM watching and the events stream on the fake cgroupfs (the kernel's signals are tested for real in
tests/integration/cgroups: here, registration, timeouts, the stats cadence and the end)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pallet.runtime.cgroups import CgroupError, open_manager, watch_oom
from pallet.runtime.cgroups.oom import stream


def test_v1_registers_an_eventfd_against_oom_control(fake_v1) -> None:
    m = open_manager("/c1", "c1", root=str(fake_v1.root))
    m.apply(1)
    with watch_oom(m) as w:
        efd, ofd = (int(x) for x in Path(m.paths["memory"], "cgroup.event_control").read_text().split())
        assert efd == w.fileno()
        assert Path(f"/proc/self/fd/{ofd}").resolve() == Path(m.paths["memory"], "memory.oom_control")
        assert w.wait(timeout=0.05) == 0  # nothing happened
        assert not w.gone


def test_v2_watches_memory_events(fake_v2) -> None:
    m = open_manager("/c1", "c1", root=str(fake_v2.root))
    m.apply(1)
    with watch_oom(m) as w:
        assert Path(f"/proc/self/fd/{w.fileno()}").resolve() == Path(m.paths[""], "memory.events")
        assert w.wait(timeout=0.05) == 0


def test_no_memory_cgroup_is_a_clear_error(fake_v1) -> None:
    m = open_manager("/c1", "c1", root=str(fake_v1.root))
    with pytest.raises(CgroupError, match="cannot watch for OOM"):
        watch_oom(m)  # not applied: no cgroup yet


@pytest.mark.parametrize("version", [1, 2])
def test_stream_gives_stats_each_interval_and_ends_with_the_cgroup(version, request) -> None:
    fs = request.getfixturevalue(f"fake_v{version}")
    m = open_manager("/c1", "c1", root=str(fs.root))
    m.apply(1)
    events = stream(m, 0.02)
    first = list(itertools.islice(events, 3))
    assert [e["type"] for e in first] == ["stats"] * 3
    assert "pids" in first[0]["data"]
    for d in m.paths.values():
        Path(d, "cgroup.procs").write_text("")
    m.destroy()
    assert list(events) == []  # the stream ends once the cgroup is gone
