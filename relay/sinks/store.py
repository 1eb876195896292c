"""The embedded store: one SQLite file holding the same documents Elasticsearch would.

Writes are create-only (`INSERT OR IGNORE` on `_id`), the equivalent of `op_type=create` with
409 = already stored, so shipping the same batch twice stores it once. `relay export`,
`relay lead` and `relay verify` read it directly.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from relay.sinks.documents import Document

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

    def write(self, documents: Sequence[Document]) -> int:
        """Store documents not already present; return how many were new."""
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
            return self._db.total_changes - before

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
