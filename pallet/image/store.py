"""The image store: which images exist (by config digest, docker's image ID), their manifests and
their tags, in one SQLite file. Blobs live in the content store; this only names them.

Every change is one ``BEGIN IMMEDIATE`` transaction, so a tag move, an image delete or a load seen
from another process is all there or not at all.
"""

from __future__ import annotations

import time

from pallet.errors import NotFound
from pallet.metadata import SQLiteStore
from pallet.oci.digest import Digest
from pallet.oci.reference import Reference, parse
from pallet.oci.value import Value

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,            -- config digest
    manifest TEXT NOT NULL,         -- manifest digest in the content store
    created TEXT NOT NULL DEFAULT '',
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    ref TEXT PRIMARY KEY,           -- normalised: docker.io/library/busybox:latest
    image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tagged REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tags_image ON tags(image);
"""


class ImageRecord(Value):
    __slots__ = ("id", "manifest", "created", "added", "tags", "last_tag_time")

    def __init__(
        self,
        id: Digest,
        manifest: Digest,
        created: str,
        added: float,
        tags: list[Reference] | None = None,
        last_tag_time: float = 0.0,
    ) -> None:
        self.id = id
        self.manifest = manifest
        self.created = created
        self.added = added
        self.tags = [] if tags is None else tags
        self.last_tag_time = last_tag_time


class ImageStore(SQLiteStore):
    SCHEMA = _SCHEMA

    def _record(self, row: tuple[str, str, str, float]) -> ImageRecord:
        tag_rows = self.db.execute(
            "SELECT ref, tagged FROM tags WHERE image = ? ORDER BY ref", (row[0],)
        ).fetchall()
        return ImageRecord(
            Digest.parse(row[0]),
            Digest.parse(row[1]),
            row[2],
            row[3],
            [parse(r) for r, _ in tag_rows],
            max((t for _, t in tag_rows), default=0.0),
        )

    def add(self, image_id: Digest, manifest: Digest, created: str, tags: list[Reference]) -> None:
        """Record an image (again: a re-load updates its manifest) and point ``tags`` at it."""
        now = time.time()
        with self.tx() as db:
            db.execute(
                "INSERT INTO images (id, manifest, created, added) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET manifest = excluded.manifest",
                (str(image_id), str(manifest), created, now),
            )
            for ref in tags:
                db.execute(
                    "INSERT INTO tags (ref, image, tagged) VALUES (?, ?, ?) "
                    "ON CONFLICT(ref) DO UPDATE SET image = excluded.image, tagged = excluded.tagged",
                    (str(ref), str(image_id), now),
                )

    def get(self, image_id: Digest) -> ImageRecord:
        row = self.db.execute(
            "SELECT id, manifest, created, added FROM images WHERE id = ?", (str(image_id),)
        ).fetchone()
        if row is None:
            raise NotFound(f'image "{image_id}": not found')
        return self._record(row)

    def by_tag(self, ref: Reference) -> ImageRecord | None:
        row = self.db.execute("SELECT image FROM tags WHERE ref = ?", (str(ref),)).fetchone()
        return None if row is None else self.get(Digest.parse(row[0]))

    def by_prefix(self, prefix: str) -> list[ImageRecord]:
        rows = self.db.execute(
            "SELECT id, manifest, created, added FROM images WHERE id LIKE ?", (f"sha256:{prefix}%",)
        ).fetchall()
        return [self._record(r) for r in rows]

    def by_manifest(self, manifest: Digest) -> list[ImageRecord]:
        rows = self.db.execute(
            "SELECT id, manifest, created, added FROM images WHERE manifest = ?", (str(manifest),)
        ).fetchall()
        return [self._record(r) for r in rows]

    def all(self) -> list[ImageRecord]:
        rows = self.db.execute(
            "SELECT id, manifest, created, added FROM images ORDER BY added DESC, id"
        ).fetchall()
        return [self._record(r) for r in rows]

    def untag(self, ref: Reference) -> None:
        with self.tx() as db:
            if db.execute("DELETE FROM tags WHERE ref = ?", (str(ref),)).rowcount == 0:
                raise NotFound(f'image "{ref.familiar()}": no such tag')

    def delete(self, image_id: Digest) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM images WHERE id = ?", (str(image_id),))

    def close(self) -> None:
        self.db.close()
