"""Error kinds shared by every layer.

Each kind is one class; front ends map kinds to their own vocabulary in one place
(HTTP status in api/, exit codes in cli/). Messages are one lowercase line that
names the object: ``container "web": cannot start: it is running``.
"""

from __future__ import annotations


class PalletError(Exception):
    """Base of every error Pallet reports to a user."""

    exit_code = 1


class NotFound(PalletError):
    pass


class AlreadyExists(PalletError):
    pass


class Conflict(PalletError):
    pass


class InvalidArgument(PalletError):
    pass


class FailedPrecondition(PalletError):
    pass


class PermissionDenied(PalletError):
    pass


class Unsupported(PalletError):
    pass


class Internal(PalletError):
    pass
