"""The embedded store: one SQLite file holding the same documents Elasticsearch would.

Writes are create-only (`INSERT OR IGNORE` on `_id`), the equivalent of `op_type=create`, so
shipping the same batch twice stores it once. As with Elasticsearch's 409, an id already present
counts as stored only if it holds our document: `write` names the ids holding another one.
`relay export`, `relay lead` and `relay verify` read it directly.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from relay.sinks.documents import Document, same_source

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
