"""Network records in their own SQLite file (``<root>/engine/networks.db``), beside the containers':
networks, each container's sandbox (its namespace file and what was asked of it) and its endpoints
(one per network joined, with the address and aliases peers resolve it by). A sandbox row is written
before any host state is made, so a crash leaves a record that ``repair`` finds and undoes."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from pallet.errors import AlreadyExists, InvalidArgument, NotFound
from pallet.metadata import SQLiteStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL, config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sandboxes (
    container TEXT PRIMARY KEY, config TEXT NOT NULL   -- netns, name, hostname, files, ports, dns...
);
CREATE TABLE IF NOT EXISTS endpoints (
    container TEXT NOT NULL, network TEXT NOT NULL, config TEXT NOT NULL,   -- ifname, ip, mac, aliases
    PRIMARY KEY (container, network)
);
"""


class NetworkStore(SQLiteStore):
    SCHEMA = _SCHEMA

    # -- networks ----------------------------------------------------------------------------------
    def add_network(self, nid: str, name: str, config: dict[str, Any]) -> None:
        try:
            with self.tx() as db:
                db.execute(
                    "INSERT INTO networks VALUES (?, ?, ?, ?)", (nid, name, time.time(), json.dumps(config))
                )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"network with name {name} already exists") from None

    def set_network(self, nid: str, config: dict[str, Any]) -> None:
        with self.tx() as db:
            db.execute("UPDATE networks SET config = ? WHERE id = ?", (json.dumps(config), nid))

    def del_network(self, nid: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM networks WHERE id = ?", (nid,))

    def network(self, ref: str) -> dict[str, Any]:
        """docker's order: full id, exact name, then a unique id prefix."""
        q = "SELECT id, name, created, config FROM networks WHERE "
        row = self.db.execute(q + "id = ?", (ref,)).fetchone()
        row = row or self.db.execute(q + "name = ?", (ref,)).fetchone()
        if row is None and ref and all(c in "0123456789abcdef" for c in ref):
            rows = self.db.execute(q + "id LIKE ?", (ref + "%",)).fetchall()
            if len(rows) > 1:
                raise InvalidArgument(f"network {ref} is ambiguous ({len(rows)} matches found on name)")
            row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"network {ref} not found")
        return _net(row)

    def networks(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT id, name, created, config FROM networks ORDER BY created").fetchall()
        return [_net(r) for r in rows]

    # -- sandboxes and endpoints ----------------------------------------------------------------------
    def put_sandbox(self, cid: str, config: dict[str, Any]) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO sandboxes VALUES (?, ?)", (cid, json.dumps(config)))

    def sandbox(self, cid: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT config FROM sandboxes WHERE container = ?", (cid,)).fetchone()
        return json.loads(row[0]) if row else None

    def sandboxes(self) -> dict[str, dict[str, Any]]:
        return {c: json.loads(v) for c, v in self.db.execute("SELECT container, config FROM sandboxes")}

    def del_sandbox(self, cid: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM sandboxes WHERE container = ?", (cid,))

    def put_endpoint(self, cid: str, nid: str, config: dict[str, Any]) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO endpoints VALUES (?, ?, ?)", (cid, nid, json.dumps(config)))

    def del_endpoint(self, cid: str, nid: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM endpoints WHERE container = ? AND network = ?", (cid, nid))

    def endpoints(
        self, cid: str | None = None, nid: str | None = None
    ) -> list[tuple[str, str, dict[str, Any]]]:
        q, args = "SELECT container, network, config FROM endpoints", []
        if cid is not None:
            q, args = q + " WHERE container = ?", [cid]
        elif nid is not None:
            q, args = q + " WHERE network = ?", [nid]
        return [(c, n, json.loads(v)) for c, n, v in self.db.execute(q + " ORDER BY rowid", args)]


def _net(row: tuple[str, str, float, str]) -> dict[str, Any]:
    return {"Id": row[0], "Name": row[1], "Created": row[2], **json.loads(row[3])}
