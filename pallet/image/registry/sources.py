"""Where each blob came from (docker's "v2 metadata"): ``(digest, registry, repository)`` rows
recorded on pull and push, so that a push to another repository of the same registry can ask for a
cross-repository mount instead of uploading the bytes again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pallet.oci.digest import Digest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    digest TEXT NOT NULL,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (digest, registry, repository)
);
"""


class BlobSources:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def add(self, digests: list[Digest], registry: str, repository: str) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO sources (digest, registry, repository) VALUES (?, ?, ?)",
            [(str(d), registry, repository) for d in digests],
        )

    def repositories(self, digest: Digest, registry: str) -> list[str]:
        rows = self.db.execute(
            "SELECT repository FROM sources WHERE digest = ? AND registry = ? ORDER BY repository",
            (str(digest), registry),
        ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        self.db.close()
