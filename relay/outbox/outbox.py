"""The outbox: sealed batches, durable before anything else happens (DESIGN §6).

One SQLite file with `synchronous=FULL`. Sealing a window writes, in one transaction, the batch's
documents and the new chain head, which includes `sealed_until_ms`: the WAL position consumed. A
crash before the commit leaves the window in the WAL to be sealed again; a crash after it leaves the
batch here to be shipped. Documents leave the outbox in seq order, once their sink has them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from relay.core.b64 import b64decode, b64encode
from relay.core.document import Document
from relay.sinks.documents import unpack_source

__all__ = ["ChainHead", "Outbox"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chain (
    origin TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    batch_hash BLOB NOT NULL,
    sealed_until_ms INTEGER NOT NULL,
    log_frontier TEXT NOT NULL,
    checkpoint TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS genesis (
    origin TEXT PRIMARY KEY,
    start_ms INTEGER NOT NULL
);
-- The leaf hash of every batch message, one row per seq, kept for good (append-only): a
-- consistency proof (RFC 9162 §2.1.4) needs interior nodes of the whole tree, which the compact
-- frontier in `chain` does not have. 32 bytes a seq (about 70 bytes with SQLite's row overhead):
-- one batch per 300 s window is ~7 MB a year. Reading them back from the sink instead would make
-- the proof depend on a store the operator may not run (Elasticsearch is the lead's).
CREATE TABLE IF NOT EXISTS log_leaves (
    seq INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER NOT NULL,
    ord INTEGER NOT NULL,
    doc_index TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    source BLOB NOT NULL,
    sealed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (seq, ord)
);
"""


@dataclass(frozen=True)
class ChainHead:
    """Where the origin's batch chain stands after its last sealed batch."""

    seq: int
    batch_hash: bytes
    sealed_until_ms: int
    log_frontier: tuple[bytes, ...]  # CompactRange of the log of batch messages
    checkpoint: str

    @property
    def log_size(self) -> int:
        return self.seq + 1


class Outbox:
    def __init__(self, path: Path, origin: str) -> None:
        self._origin = origin
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT coalesce(sum(length(source)), 0) FROM pending").fetchone()
        self.size_bytes: int = row[0]

    def close(self) -> None:
        self._db.close()

    def head(self) -> ChainHead | None:
        row = self._db.execute(
            "SELECT seq, batch_hash, sealed_until_ms, log_frontier, checkpoint FROM chain"
            " WHERE origin = ?",
            (self._origin,),
        ).fetchone()
        if row is None:
            return None
        frontier = tuple(b64decode(h) for h in orjson.loads(row[3]))
        return ChainHead(row[0], row[1], row[2], frontier, row[4])

    def genesis(self, default_ms: int) -> int:
        """Where the chain begins: fixed at the first start, before any event is accepted.

        Until the first batch is sealed this is the only record of which windows are open, so a
        crash before then must not forget it.
        """
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO genesis VALUES (?, ?)", (self._origin, default_ms)
            )
            row = self._db.execute(
                "SELECT start_ms FROM genesis WHERE origin = ?", (self._origin,)
            ).fetchone()
        return int(row[0])

    def commit(
        self,
        head: ChainHead,
        documents: Sequence[Document],
        *,
        log_leaf: bytes,
        sealed_at_ms: int,
    ) -> None:
        """Store a sealed batch and advance the chain head, atomically and durably.

        ``log_leaf`` is the batch message's leaf hash in the log of batch messages (DESIGN §5.5).
        """
        frontier = orjson.dumps([b64encode(h) for h in head.log_frontier])
        rows = [
            (head.seq, ord_, doc.index, doc.id, orjson.dumps(doc.source), sealed_at_ms)
            for ord_, doc in enumerate(documents)
        ]
        with self._transaction():
            self._db.executemany("INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("INSERT INTO log_leaves VALUES (?, ?)", (head.seq, log_leaf))
            self._db.execute(
                "INSERT INTO chain VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(origin) DO UPDATE SET"
                " seq = excluded.seq, batch_hash = excluded.batch_hash,"
                " sealed_until_ms = excluded.sealed_until_ms,"
                " log_frontier = excluded.log_frontier, checkpoint = excluded.checkpoint",
                (
                    self._origin,
                    head.seq,
                    head.batch_hash,
                    head.sealed_until_ms,
                    frontier,
                    head.checkpoint,
                ),
            )
        self.size_bytes += sum(len(row[4]) for row in rows)

    def log_leaves(self, size: int) -> list[bytes] | None:
        """The leaf hashes of batches 0..size − 1, or None if any of them was not recorded.

        A relay upgraded from a version that kept only the frontier has no leaves for the batches
        it sealed before; it cannot prove consistency for trees that include them.
        """
        rows = self._db.execute(
            "SELECT leaf_hash FROM log_leaves WHERE seq < ? ORDER BY seq", (size,)
        ).fetchall()
        if len(rows) != size:
            return None
        return [row[0] for row in rows]

    def oldest(self) -> tuple[int, list[Document]] | None:
        """The lowest-seq batch still waiting for its sink, with all its documents."""
        row = self._db.execute("SELECT min(seq) FROM pending").fetchone()
        if row[0] is None:
            return None
        seq = row[0]
        docs = [
            Document(index, doc_id, unpack_source(source))
            for index, doc_id, source in self._db.execute(
                "SELECT doc_index, doc_id, source FROM pending WHERE seq = ? ORDER BY ord", (seq,)
            )
        ]
        return seq, docs

    def shipped(self, seq: int) -> None:
        with self._transaction():
            row = self._db.execute(
                "SELECT coalesce(sum(length(source)), 0) FROM pending WHERE seq = ?", (seq,)
            ).fetchone()
            self._db.execute("DELETE FROM pending WHERE seq = ?", (seq,))
        self.size_bytes -= row[0]

    def depth(self) -> tuple[int, int | None]:
        """(batches waiting, sealed_at_ms of the oldest waiting batch)."""
        row = self._db.execute(
            "SELECT count(DISTINCT seq), min(sealed_at_ms) FROM pending"
        ).fetchone()
        return row[0], row[1]

    def _transaction(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            # After some errors (SQLITE_FULL, SQLITE_IOERR) SQLite has rolled back already; a
            # second ROLLBACK would raise and hide the error that says what went wrong.
            self._db.execute("ROLLBACK")
