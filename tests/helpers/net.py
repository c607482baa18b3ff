"""Addresses for tests and benches that make bridges of their own."""

from __future__ import annotations

import random
import subprocess


def free_subnet(prefix: str = "10.88") -> str:
    """A ``prefix.x.0/24`` that no host route overlaps (tests run in parallel: pick at random)."""
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True
    ).stdout
    for _ in range(200):
        x = random.randrange(2, 254)
        if f"{prefix}.{x}." not in routes:
            return f"{prefix}.{x}.0/24"
    raise RuntimeError(f"no free {prefix}.x.0/24")
