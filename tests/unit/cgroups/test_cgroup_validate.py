"""Bad linux.resources: one clear error naming the field, and nothing written on either driver."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pallet.errors import InvalidArgument
from pallet.runtime.cgroups import CgroupError, open_manager, validate_resources

BAD = [
    ({"memory": {"limit": -5}}, r"memory.limit: must be at least -1, not -5"),
    ({"memory": {"limit": "1g"}}, r"memory.limit: must be an integer, not '1g'"),
    ({"memory": {"swappiness": 101}}, r"memory.swappiness: must be at most 100"),
    ({"memory": {"limit": 100, "swap": 50}}, r"memory.swap: memory\+swap must be at least the memory limit"),
    ({"memory": {"disableOOMKiller": 1}}, r"memory.disableOOMKiller: must be true or false"),
    ({"memory": {"limitt": 1}}, r"unknown field linux.resources.memory.limitt"),
    ({"cpu": {"cpus": "0-"}}, r"cpu.cpus: must be a list like 0-3,5, not '0-'"),
    ({"cpu": {"cpus": "3-1"}}, r"cpu.cpus: range 3-1 goes backwards"),
    ({"cpu": {"mems": "a"}}, r"cpu.mems: must be a list like"),
    ({"cpu": {"shares": -1}}, r"cpu.shares: must be at least 0"),
    ({"cpu": {"quota": -2}}, r"cpu.quota: must be at least -1"),
    ({"cpu": {"period": True}}, r"cpu.period: must be an integer"),
    ({"pids": {"limit": 1.5}}, r"pids.limit: must be an integer"),
    ({"blockIO": {"weight": 5}}, r"blockIO.weight: must be 0 or between 10 and 1000"),
    ({"blockIO": {"weight": 2000}}, r"blockIO.weight: must be at most 1000"),
    (
        {"blockIO": {"throttleReadBpsDevice": [{"major": 8, "rate": 1}]}},
        r"throttleReadBpsDevice\[0\].minor: is required",
    ),
    (
        {"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0}]}},
        r"throttleReadBpsDevice\[0\].rate: is required",
    ),
    (
        {"hugepageLimits": [{"pageSize": "2M", "limit": 1}]},
        r"hugepageLimits\[0\].pageSize: must be a size like 2MB",
    ),
    ({"network": {"priorities": [{"name": "a b", "priority": 1}]}}, r"network.priorities\[0\].name"),
    ({"devices": [{"allow": True, "type": "z"}]}, r"devices\[0\].type: unknown device type 'z'"),
    ({"devices": "all"}, r"devices: must be a list"),
    ({"unified": {"../memory.max": "1"}}, r"unified: keys must be file names"),
    ({"unified": {"memory.max": 1}}, r"unified.memory.max: must be a string"),
    ({"intelRdt": {}}, r"unknown field linux.resources.intelRdt"),
]


@pytest.mark.parametrize("res, match", BAD)
def test_validate_rejects_with_the_field_named(res, match) -> None:
    with pytest.raises(CgroupError, match=match) as e:
        validate_resources(res)
    assert isinstance(e.value, InvalidArgument)
    assert "\n" not in str(e.value)


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[p] = Path(p).read_text()
    return out


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(
    "res", [r for r, _ in BAD[:6]] + [{"memory": {"limit": 1 << 20}, "cpu": {"cpus": "x"}}]
)
def test_bad_input_writes_nothing(version, res, request) -> None:
    fs = request.getfixturevalue(f"fake_v{version}")
    m = open_manager("/pallet/c1", "c1", root=str(fs.root))
    m.apply(1)
    before = _snapshot(fs.root)
    with pytest.raises(CgroupError):
        m.set(res)
    assert _snapshot(fs.root) == before


def test_good_resources_pass() -> None:
    validate_resources(
        {
            "devices": [
                {"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 1, "minor": 3},
            ],
            "memory": {
                "limit": 1 << 20,
                "reservation": -1,
                "swap": -1,
                "swappiness": 0,
                "disableOOMKiller": False,
            },
            "cpu": {"shares": 1024, "quota": -1, "period": 100000, "cpus": "0-1,3", "mems": "0", "idle": 0},
            "pids": {"limit": -1},
            "blockIO": {"weight": 10, "weightDevice": [{"major": 8, "minor": 0, "weight": 1000}]},
            "hugepageLimits": [{"pageSize": "1GB", "limit": 0}],
            "network": {"classID": 0, "priorities": [{"name": "eth0", "priority": 1}]},
            "rdma": {"mlx5": {"hcaHandles": 1}},
            "unified": {"memory.high": "max"},
        }
    )
    validate_resources(None)
    validate_resources({})
