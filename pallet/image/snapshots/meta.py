"""Snapshot metadata in SQLite: keys, kinds, parents, labels and committed sizes.

Every snapshotter keeps its own ``metadata.db`` beside its ``snapshots/<id>`` directories. Directory
names are small integers from the database, not keys, so overlay mount options stay short.
Transactions are ``BEGIN IMMEDIATE`` so two processes (the CLI and the service) serialise cleanly.
"""

from __future__ import annotations

import json
import sqlite3
import time

from pallet.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pallet.metadata import SQLiteStore
from pallet.oci.value import Value

VIEW, ACTIVE, COMMITTED = "view", "active", "committed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL,
    parent TEXT REFERENCES snapshots(key),
    labels TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    inodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
"""


class Info(Value):
    """containerd's snapshots.Info: ``name`` is the key while active, the committed name after."""

    __slots__ = ("kind", "name", "parent", "labels", "created", "updated")

    def __init__(
        self,
        kind: str,
        name: str,
        parent: str = "",
        labels: dict[str, str] | None = None,
        created: float = 0.0,
        updated: float = 0.0,
    ) -> None:
        self.kind = kind
        self.name = name
        self.parent = parent
        self.labels = {} if labels is None else labels
        self.created = created
        self.updated = updated


class Usage(Value):
    __slots__ = ("size", "inodes")

    def __init__(self, size: int = 0, inodes: int = 0) -> None:
        self.size = size
        self.inodes = inodes


class MetaStore(SQLiteStore):
    SCHEMA = _SCHEMA

    def _row(
        self, db: sqlite3.Connection, key: str
    ) -> tuple[int, str, str | None, str, float, float, int, int]:
        row = db.execute(
            "SELECT id, kind, parent, labels, created, updated, size, inodes FROM snapshots WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            raise NotFound(f'snapshot "{key}": not found')
        return row  # type: ignore[no-any-return]

    def get(self, key: str) -> tuple[int, Info]:
        sid, kind, parent, labels, created, updated, _, _ = self._row(self.db, key)
        return sid, Info(kind, key, parent or "", json.loads(labels), created, updated)

    def ids(self, key: str) -> list[int]:
        """Directory ids of the snapshot and its ancestors, nearest first."""
        out = []
        cur: str | None = key
        while cur:
            sid, _, parent, *_ = self._row(self.db, cur)
            out.append(sid)
            cur = parent
        return out

    def create(self, key: str, parent: str, kind: str, labels: dict[str, str]) -> int:
        if not key:
            raise InvalidArgument("snapshot key must not be empty")
        with self.tx() as db:
            if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
                raise AlreadyExists(f'snapshot "{key}": already exists')
            if parent:
                pkind = db.execute("SELECT kind FROM snapshots WHERE key = ?", (parent,)).fetchone()
                if pkind is None:
                    raise NotFound(f'snapshot "{key}": parent "{parent}" not found')
                if pkind[0] != COMMITTED:
                    raise FailedPrecondition(f'snapshot "{key}": parent "{parent}" is not committed')
            now = time.time()
            cur = db.execute(
                "INSERT INTO snapshots (key, kind, parent, labels, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                (key, kind, parent or None, json.dumps(labels), now, now),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def commit(self, name: str, key: str, usage: Usage, labels: dict[str, str]) -> int:
        with self.tx() as db:
            sid, kind, _, old_labels, *_ = self._row(db, key)
            if kind != ACTIVE:
                raise FailedPrecondition(f'snapshot "{key}": cannot commit a {kind} snapshot')
            if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (name,)).fetchone():
                raise AlreadyExists(f'snapshot "{name}": already exists')
            merged = json.loads(old_labels) | labels
            db.execute(
                "UPDATE snapshots SET key = ?, kind = ?, labels = ?, updated = ?, size = ?, inodes = ? WHERE id = ?",
                (name, COMMITTED, json.dumps(merged), time.time(), usage.size, usage.inodes, sid),
            )
            return sid

    def remove(self, key: str) -> int:
        with self.tx() as db:
            sid = self._row(db, key)[0]
            child = db.execute("SELECT key FROM snapshots WHERE parent = ? LIMIT 1", (key,)).fetchone()
            if child:
                raise FailedPrecondition(f'snapshot "{key}": in use as the parent of "{child[0]}"')
            db.execute("DELETE FROM snapshots WHERE id = ?", (sid,))
            return sid

    def committed_usage(self, key: str) -> Usage | None:
        _, kind, _, _, _, _, size, inodes = self._row(self.db, key)
        return Usage(size, inodes) if kind == COMMITTED else None

    def walk(self) -> list[Info]:
        rows = self.db.execute(
            "SELECT key, kind, parent, labels, created, updated FROM snapshots ORDER BY id"
        ).fetchall()
        return [Info(kind, key, parent or "", json.loads(lb), c, u) for key, kind, parent, lb, c, u in rows]

    def all_ids(self) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT id FROM snapshots")}

    def close(self) -> None:
        self.db.close()
