"""A recording stand-in for Syscalls, for unit tests that must not touch the kernel."""

from __future__ import annotations

from typing import Any


class FakeSyscalls:
    """Records every call as (name, args); ``fail[name] = errno`` makes that call raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def record(*args: Any) -> Any:
            self.calls.append((name, args))
            if name in self.fail:
                err = self.fail[name]
                raise OSError(err, f"{name}: injected", None)
            if name == "capget":
                return (0, 0, 0)
            return 0

        return record

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]
