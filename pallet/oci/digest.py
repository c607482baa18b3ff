"""Content digests as the OCI image spec defines them: ``algorithm:encoded``.

Only sha256 and sha512 are accepted, each checked for its exact hex length, because a digest
names a file on disk (``blobs/<alg>/<hex>``) and anything looser would be a path.
"""

from __future__ import annotations

import re

from pallet.errors import InvalidArgument
from pallet.oci.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import BinaryIO

_HEX_LEN = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[a-f0-9]+")
CANONICAL = "sha256"


class Digest(Value):
    __slots__ = ("algorithm", "hex")

    def __init__(self, algorithm: str, hex: str) -> None:
        self.algorithm = algorithm
        self.hex = hex

    def __lt__(self, other: Digest) -> bool:  # sorted() of digests: by algorithm, then hex
        return (self.algorithm, self.hex) < (other.algorithm, other.hex)

    @classmethod
    def parse(cls, value: str) -> Digest:
        alg, sep, enc = value.partition(":")
        if not sep:
            raise InvalidArgument(f'invalid digest "{value}": missing algorithm')
        want = _HEX_LEN.get(alg)
        if want is None:
            raise InvalidArgument(f'invalid digest "{value}": unsupported algorithm "{alg}"')
        if len(enc) != want or not _HEX.fullmatch(enc):
            raise InvalidArgument(f'invalid digest "{value}": want {want} lowercase hex digits')
        return cls(alg, enc)

    @classmethod
    def of(cls, data: bytes, algorithm: str = CANONICAL) -> Digest:
        import hashlib  # OpenSSL's libcrypto: ~1.5 ms a start, and `pallet run` hashes nothing

        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    @classmethod
    def of_stream(cls, stream: BinaryIO, algorithm: str = CANONICAL) -> tuple[Digest, int]:
        """Digest and byte count of everything left in ``stream``."""
        import hashlib

        h = hashlib.new(algorithm)
        size = 0
        while chunk := stream.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
        return cls(algorithm, h.hexdigest()), size

    def short(self) -> str:
        """The 12-digit form docker prints in IMAGE ID columns."""
        return self.hex[:12]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def is_digest(value: str) -> bool:
    try:
        Digest.parse(value)
    except InvalidArgument:
        return False
    return True
