"""Container records in one SQLite file: what was asked for (config, JSON) and what happened (state,
JSON), kept apart so that the monitor recording an exit never races the CLI renaming a container.

Every change is one ``BEGIN IMMEDIATE`` transaction; names are unique in the table itself, so two
``pallet run --name web`` at once cannot both win. Lookups go as docker's: full id, name, id prefix.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from pallet.errors import AlreadyExists, InvalidArgument, NotFound
from pallet.metadata import SQLiteStore

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    config TEXT NOT NULL,           -- image, command, host config: what create was asked for
    state TEXT NOT NULL             -- status, pids, exit code, times, health: written by engine and monitor
);
"""


class Record:
    """One container: a plain class, not a dataclass (dataclasses imports inspect: the monitor's
    forked writer loads this module for every state change it records)."""

    def __init__(
        self, cid: str, name: str, created: float, config: dict[str, Any], state: dict[str, Any]
    ) -> None:
        self.id = cid
        self.name = name
        self.created = created
        self.config = config
        self.state = state

    @property
    def status(self) -> str:
        return str(self.state.get("Status", "created"))


class ContainerStore(SQLiteStore):
    SCHEMA = _SCHEMA

    @staticmethod
    def _record(row: tuple[str, str, float, str, str]) -> Record:
        return Record(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]))

    def add(self, cid: str, name: str, config: dict[str, Any], state: dict[str, Any]) -> Record:
        try:
            with self.tx() as db:
                db.execute(
                    "INSERT INTO containers VALUES (?, ?, ?, ?, ?)",
                    (cid, name, time.time(), json.dumps(config), json.dumps(state)),
                )
        except sqlite3.IntegrityError:
            other = self.db.execute("SELECT id FROM containers WHERE name = ?", (name,)).fetchone()
            raise AlreadyExists(
                f'Conflict. The container name "/{name}" is already in use by container '
                f'"{other[0] if other else "?"}". You have to remove (or rename) that container '
                "to be able to reuse that name."
            ) from None
        return self.get(cid)

    def get(self, ref: str) -> Record:
        """docker's order: full id, exact name, then a unique id prefix."""
        q = "SELECT id, name, created, config, state FROM containers WHERE "
        row = self.db.execute(q + "id = ?", (ref,)).fetchone()
        row = row or self.db.execute(q + "name = ?", (ref.lstrip("/"),)).fetchone()
        if row is None and ref and all(c in "0123456789abcdef" for c in ref):
            rows = self.db.execute(q + "id LIKE ?", (ref + "%",)).fetchall()
            if len(rows) > 1:
                raise InvalidArgument(f'multiple IDs found with provided prefix: "{ref}"')
            row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"No such container: {ref}")
        return self._record(row)

    def all(self) -> list[Record]:
        rows = self.db.execute(
            "SELECT id, name, created, config, state FROM containers ORDER BY created DESC"
        )
        return [self._record(r) for r in rows.fetchall()]

    def update_state(self, cid: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read-modify-write of one container's state inside one transaction."""
        with self.tx() as db:
            row = db.execute("SELECT state FROM containers WHERE id = ?", (cid,)).fetchone()
            if row is None:
                raise NotFound(f"No such container: {cid}")
            state: dict[str, Any] = json.loads(row[0])
            change(state)
            db.execute("UPDATE containers SET state = ? WHERE id = ?", (json.dumps(state), cid))
        return state

    def update_config(
        self,
        cid: str,
        change: Callable[[dict[str, Any]], None],
        state: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Change the config (and with ``state``, the state too) in one transaction."""
        with self.tx() as db:
            row = db.execute("SELECT config, state FROM containers WHERE id = ?", (cid,)).fetchone()
            if row is None:
                raise NotFound(f"No such container: {cid}")
            config: dict[str, Any] = json.loads(row[0])
            change(config)
            db.execute("UPDATE containers SET config = ? WHERE id = ?", (json.dumps(config), cid))
            if state is not None:
                st: dict[str, Any] = json.loads(row[1])
                state(st)
                db.execute("UPDATE containers SET state = ? WHERE id = ?", (json.dumps(st), cid))

    def rename(self, cid: str, name: str) -> None:
        try:
            with self.tx() as db:
                db.execute("UPDATE containers SET name = ? WHERE id = ?", (name, cid))
        except sqlite3.IntegrityError:
            raise AlreadyExists(
                f'Error when allocating new name: Conflict. The container name "/{name}" is already in use'
            ) from None

    def delete(self, cid: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM containers WHERE id = ?", (cid,))


def record_state(db_path: str, cid: str, fields: dict[str, Any]) -> None:
    """The monitor's one write: merge ``fields`` into a container's state (it may be gone: then nothing)."""
    store = ContainerStore(Path(db_path))
    try:
        store.update_state(cid, lambda s: s.update(fields))
    except NotFound:
        pass
    finally:
        store.close()
