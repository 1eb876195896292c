"""The witness's memory: one SQLite file, durable before a cosignature leaves the witness.

A witness that forgot a tree it cosigned could be shown a different one of the same size and
cosign that too, so every cosigned checkpoint is kept (`synchronous=FULL`), not only the latest.
Findings are kept once each (same origin, code, size and root), however often a poll sees them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from relay.verify.judge import Seen

__all__ = ["StoredFinding", "WitnessStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cosigned (
    origin TEXT NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    cosigned_at INTEGER NOT NULL,
    PRIMARY KEY (origin, size)
);
CREATE TABLE IF NOT EXISTS findings (
    origin TEXT NOT NULL,
    code TEXT NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    message TEXT NOT NULL,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (origin, code, size, root)
);
"""


@dataclass(frozen=True, slots=True)
class StoredFinding:
    origin: str
    code: str
    size: int
    message: str
    seen_at: int


class WitnessStore:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def latest(self, origin: str) -> Seen | None:
        """The largest tree of ``origin`` cosigned so far."""
        row = self._db.execute(
            "SELECT size, root FROM cosigned WHERE origin = ? ORDER BY size DESC LIMIT 1",
            (origin,),
        ).fetchone()
        return None if row is None else Seen(row[0], row[1])

    def root_at(self, origin: str, size: int) -> bytes | None:
        row = self._db.execute(
            "SELECT root FROM cosigned WHERE origin = ? AND size = ?", (origin, size)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def latest_note(self, origin: str) -> str | None:
        """The cosigned note of the largest tree of ``origin``, for auditors."""
        row = self._db.execute(
            "SELECT note FROM cosigned WHERE origin = ? ORDER BY size DESC LIMIT 1", (origin,)
        ).fetchone()
        return None if row is None else str(row[0])

    def add_cosigned(self, origin: str, size: int, root: bytes, note: str, at: int) -> None:
        self._db.execute(
            "INSERT INTO cosigned VALUES (?, ?, ?, ?, ?)", (origin, size, root, note, at)
        )

    def add_finding(
        self, origin: str, code: str, size: int, root: bytes, message: str, at: int
    ) -> bool:
        """Record a finding; False if this one (origin, code, size, root) was known already."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO findings VALUES (?, ?, ?, ?, ?, ?)",
            (origin, code, size, root, message, at),
        )
        return cursor.rowcount == 1

    def findings(self) -> list[StoredFinding]:
        return [
            StoredFinding(*row)
            for row in self._db.execute(
                "SELECT origin, code, size, message, seen_at FROM findings ORDER BY seen_at, origin"
            )
        ]
