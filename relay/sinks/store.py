"""The embedded store: one SQLite file holding the same documents Elasticsearch would.

Writes are create-only (`INSERT OR IGNORE` on `_id`), the equivalent of `op_type=create`, so
shipping the same batch twice stores it once. As with Elasticsearch's 409, an id already present
counts as stored only if it holds our document: `write` names the ids holding another one.
`relay export`, `relay lead` and `relay verify` read it directly.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from relay.attest.merkle import CompactRange
from relay.core.b64 import b64decode, b64encode
from relay.core.document import Document
from relay.sinks.documents import ChainStart, same_source

__all__ = ["EmbeddedStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    doc_index TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('batch', 'summary')),
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    i INTEGER NOT NULL,
    source BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_order ON documents (origin, seq, kind, i);
-- Per origin, where its chain starts after retention deleted its oldest batches
-- (relay/sinks/retention.py): the first seq kept, the batch_hash of the one before it, and the
-- frontier of the log of batch messages 0..first_seq − 1 (JSON list of base64 hashes).
CREATE TABLE IF NOT EXISTS retained (
    origin TEXT PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    prev TEXT NOT NULL,
    log TEXT NOT NULL,
    deleted_at_ms INTEGER NOT NULL
);
"""


class EmbeddedStore:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        # Writes run in worker threads (StoreSink). A worker whose awaiting task was cancelled
        # (shutdown) keeps running, so every use of the one connection is serialised here:
        # two threads in one SQLite connection interleave transactions, or crash the process.
        self._lock = threading.Lock()
        if readonly:
            if not path.exists():
                raise FileNotFoundError(f"no embedded store at {path}")
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def write(self, documents: Sequence[Document]) -> list[str]:
        """Store documents not already present; return the ids that hold another document.

        Those are left as they are (create-only), and so are ours already stored.
        """
        rows = []
        for doc in documents:
            kind = "summary" if "att" in doc.source else "batch"
            rows.append(
                (
                    doc.id,
                    doc.index,
                    kind,
                    doc.source["origin"],
                    doc.source["seq"],
                    doc.source.get("i", -1),
                    orjson.dumps(doc.source),
                )
            )
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if self._db.total_changes - before == len(rows):
                return []
            # Some ids existed: after a re-ship those hold our own documents. Rare, so looked up
            # only then.
            ours = {doc.id: doc.source for doc in documents}
            return [
                doc_id
                for doc_id, source in self._stored(list(ours))
                if not same_source(ours[doc_id], orjson.loads(source))
            ]

    def _stored(self, ids: list[str]) -> Iterator[tuple[str, bytes]]:
        for start in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            yield from self._db.execute(
                f"SELECT doc_id, source FROM documents WHERE doc_id IN ({marks})", chunk
            )

    def chain_starts(self) -> dict[str, ChainStart]:
        """Where each origin's chain starts after retention (none for a store never pruned)."""
        try:
            rows = self._db.execute("SELECT origin, first_seq, prev, log FROM retained").fetchall()
        except sqlite3.OperationalError:  # a store written before retention existed
            return {}
        return {
            origin: ChainStart(
                first_seq,
                b64decode(prev),
                CompactRange.from_list(first_seq, [b64decode(h) for h in orjson.loads(log)]),
            )
            for origin, first_seq, prev, log in rows
        }

    def delete_before(self, origin: str, start: ChainStart, now_ms: int) -> int:
        """Delete the origin's batches and summaries below ``start.seq`` and record ``start``,
        in one transaction (a batch never goes without its summaries); return documents deleted.
        """
        assert start.log is not None
        log = orjson.dumps([b64encode(h) for h in start.log.to_list()])
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "DELETE FROM documents WHERE origin = ? AND seq < ?", (origin, start.seq)
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO retained VALUES (?, ?, ?, ?, ?)",
                    (origin, start.seq, b64encode(start.prev), log, now_ms),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return cursor.rowcount

    def batches(
        self, origin: str, from_seq: int
    ) -> Generator[tuple[int, dict[str, Any]], None, None]:
        """(seq, source) of the origin's batch documents from ``from_seq`` on, in seq order."""
        rows = self._db.execute(
            "SELECT seq, source FROM documents WHERE kind = 'batch' AND origin = ? AND seq >= ?"
            " ORDER BY seq",
            (origin, from_seq),
        )
        for seq, source in rows:
            yield seq, orjson.loads(source)

    def origins(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT DISTINCT origin FROM documents")]

    def documents(self, origin: str | None = None) -> Iterator[Document]:
        """Every document, batches before their summaries, in (origin, seq, i) order."""
        query = "SELECT doc_index, doc_id, source FROM documents"
        params: tuple[str, ...] = ()
        if origin is not None:
            query += " WHERE origin = ?"
            params = (origin,)
        query += " ORDER BY origin, seq, kind, i"
        for index, doc_id, source in self._db.execute(query, params):
            yield Document(index, doc_id, orjson.loads(source))
