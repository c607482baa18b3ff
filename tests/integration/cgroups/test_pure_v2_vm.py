"""The cgroup v2 tests for real, in a pure v2 kernel: user-mode Linux (tests/helpers/umlvm.py).

On this hybrid host the v2 tests that need controllers skip; here they run inside a guest kernel
whose /sys/fs/cgroup is cgroup2 with memory, cpu, io and pids, together with the runtime's resource
and lifecycle tests (pallet-runtime run/update/events/pause/kill/delete driving the v2 driver) and
the engine's (`pallet run --memory … / stats / pause / update`). The guest tells which
tests passed; the ones named in MUST_PASS may neither fail nor skip, so a guest that quietly
skipped everything cannot pass.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers import umlvm

REPO = Path(__file__).resolve().parents[3]
LIFECYCLE = [
    "test_create_start_state_kill_delete",
    "test_delete_created_container_kills_its_init",
    "test_delete_force_running_leaves_no_process",
    "test_kill_all_signals_every_process",
    "test_pause_resume",
]
ENGINE = [
    "test_lifecycle.py::test_resources_and_update[pallet-runtime]",
    "test_lifecycle.py::test_oom_killed_is_reported[pallet-runtime]",
]
GUEST_TESTS = [
    "tests/integration/cgroups/test_cgroups_v2_real.py",
    "tests/integration/cgroups/test_cgroups_v2_unified_real.py",
    "tests/integration/runtime/test_resources.py",
    # the lifecycle verbs that go through the cgroup: pause/resume, kill --all, delete (--force)
    *(f"tests/integration/runtime/test_lifecycle.py::{t}" for t in LIFECYCLE),
    # the engine on v2: docker's resource flags, stats, pause, update and OOMKilled
    *(f"tests/integration/engine/{t}" for t in ENGINE),
]
V2 = "tests.integration.cgroups.test_cgroups_v2_real."
MUST_PASS = [
    V2 + "test_place_a_process_and_read_limits_back",
    V2 + "test_memory_hog_is_oom_killed_and_counted",
    V2 + "test_events_stream_reports_the_oom_and_stats",
    V2 + "test_fork_bomb_stops_at_pids_max",
    V2 + "test_busy_loop_under_a_cpu_quota_is_throttled",
    V2 + "test_freeze_holds_a_memory_hog_and_destroy_removes_it",
    V2 + "test_values_the_kernel_refuses_are_one_clear_error",
    V2 + "test_writes_to_a_loop_device_are_throttled_and_accounted",
    V2 + "test_cpu_weight_shifts_cpu_time_between_two_competing_cgroups",
    V2 + "test_rootless_uses_a_delegated_subtree",
    "tests.integration.cgroups.test_cgroups_v2_unified_real.test_device_program_denies_and_an_update_replaces_it",
    "tests.integration.cgroups.test_cgroups_v2_unified_real.test_place_freeze_thaw_and_kill",
    "tests.integration.runtime.test_resources.test_memory_hog_is_oom_killed_and_reported",
    "tests.integration.runtime.test_resources.test_fork_bomb_stops_at_pids_limit",
    "tests.integration.runtime.test_resources.test_cpu_quota_throttles_and_update_raises_limits",
    "tests.integration.runtime.test_resources.test_device_rules_deny_unlisted_devices",
    "tests.integration.runtime.test_resources.test_pause_freezes_every_process",
    "tests.integration.runtime.test_resources.test_cpu_shares_shift_time_between_competing_containers",
    *(f"tests.integration.runtime.test_lifecycle.{t}" for t in LIFECYCLE),
    *(f"tests.integration.engine.{t.replace('.py::', '.')}" for t in ENGINE),
]

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not umlvm.available(), reason="needs Debian's user-mode-linux (linux.uml)"),
    pytest.mark.skipif(os.environ.get("PALLET_IN_UML") == "1", reason="already inside the guest"),
]


def test_cgroup_v2_suite_passes_in_a_pure_v2_kernel(workdir: Path) -> None:
    run = umlvm.run_pytest(REPO, sys.executable, ["-q", "-rfEs", *GUEST_TESTS], workdir / "guest")
    print(run.summary())
    assert "memory" in run.guest and "pids" in run.guest, (
        f"no v2 controllers in the guest\n{run.console[-3000:]}"
    )
    assert run.rc == 0, f"{run.summary()}\n{run.log[-6000:]}"
    missing = {t: run.outcomes.get(t, "not run") for t in MUST_PASS if run.outcomes.get(t) != "passed"}
    assert not missing, f"{missing}\n{run.log[-3000:]}"
