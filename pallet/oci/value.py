"""``Value``: equality, hash and repr from a class's ``__slots__``, what a frozen dataclass gives.

The records that `pallet run` reads (digests, references, image manifests and configs, snapshot
infos, mounts) are plain classes on this base rather than dataclasses: importing ``dataclasses``
loads inspect, ast and dis (~3.5 ms here), and each dataclass compiles its methods when its module
is imported (~0.26 ms a class), at every start of the CLI. A subclass lists its fields in
``__slots__``, in the order of its ``__init__``; instances are compared field by field with
instances of the same class only, as dataclasses do.
"""

from __future__ import annotations


class Value:
    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Value)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{self.__class__.__qualname__}({args})"
