"""The engine's metadata in SQLite: one file per store, safe across the CLI and the API service at once.

Every store (images, snapshots, containers, networks) opens its file the same way: WAL, so readers
never wait for a writer and a killed process never loses a committed transaction; synchronous=NORMAL,
which skips the fsync per commit (an OS crash may lose the last ones, a process crash none); foreign
keys on; and writes in ``BEGIN IMMEDIATE`` transactions, so two processes serialise instead of failing
to upgrade a read lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def connect(path: Path, schema: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(schema)
    return db


class SQLiteStore:
    """Base of the stores: ``self.db`` and a write transaction."""

    SCHEMA = ""

    def __init__(self, path: Path) -> None:
        self.db = connect(path, self.SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
