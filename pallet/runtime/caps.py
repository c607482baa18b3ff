"""Linux capabilities: names, the five sets of a process, and applying them before exec.

Order matters (capabilities(7)): the bounding set is dropped first while we still hold
CAP_SETPCAP; the uid switch happens with PR_SET_KEEPCAPS so permitted survives it; then capset
sets effective/permitted/inheritable; ambient caps are raised last, since each must already be
permitted and inheritable. Inheritable stays empty unless asked (CVE-2022-29162).
"""

from __future__ import annotations

from pallet.errors import InvalidArgument
from pallet.oci.capabilities import CAPABILITY_NAMES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAMES = CAPABILITY_NAMES
NUMBERS = {name: i for i, name in enumerate(NAMES)}
SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def parse(caps: dict[str, Any] | None) -> dict[str, int]:
    """Each set as a bit mask; an unknown name is an error that names it and its set."""
    out = {s: 0 for s in SETS}
    for s in SETS:
        for name in (caps or {}).get(s) or []:
            n = NUMBERS.get(name.upper() if name.upper().startswith("CAP_") else "CAP_" + name.upper())
            if n is None:
                raise InvalidArgument(f"config.json: process.capabilities.{s}: unknown capability {name!r}")
            out[s] |= 1 << n
    return out


def names(mask: int) -> list[str]:
    return [NAMES[i] for i in range(len(NAMES)) if mask & (1 << i)]


def host_bounding_set() -> int:
    """This process's bounding set, from /proc (no syscall needed)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return (1 << (last_cap() + 1)) - 1


def check_grantable(sets: dict[str, int], bounding: int) -> None:
    """A capability outside the host's bounding set cannot be granted by anyone; say which, up front.

    (This host lacks CAP_SYS_RESOURCE, so a config asking for every capability fails here, not in capset.)
    """
    for s in ("effective", "permitted", "inheritable", "ambient"):
        missing = sets[s] & ~bounding & ((1 << (last_cap() + 1)) - 1)
        if missing:
            raise InvalidArgument(
                f"config.json: process.capabilities.{s}: {', '.join(names(missing))} not in this host's "
                "capability bounding set, so no process here can hold it; remove it from the config"
            )
