"""Sinks on the relay's own disk: the embedded SQLite store and an NDJSON file."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import orjson

from relay.core.document import Document
from relay.sinks.base import SinkConflictError, SinkError
from relay.sinks.store import EmbeddedStore

__all__ = ["NdjsonSink", "StoreSink"]


class StoreSink:
    name = "store"

    def __init__(self, path: Path) -> None:
        self._store = EmbeddedStore(path)

    async def ship(self, documents: Sequence[Document]) -> None:
        try:
            taken = await asyncio.to_thread(self._store.write, documents)
        except OSError as exc:
            raise SinkError(f"embedded store write failed: {exc}") from exc
        if taken:
            raise SinkConflictError("the embedded store", taken)

    async def close(self) -> None:
        # In a thread: it waits for a write still running after its task was cancelled.
        await asyncio.to_thread(self._store.close)


class NdjsonSink:
    """Appends documents to a file, one per line, fsynced per batch.

    Idempotent by seq: a batch at or below the last seq in the file (a re-ship after a crash
    between append and outbox delete) is skipped.
    """

    name = "ndjson"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._last_seq = self._read_last_seq()

    def _read_last_seq(self) -> int:
        if not self._path.exists():
            return -1
        last = -1
        with self._path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    last = max(last, int(orjson.loads(line)["_source"]["seq"]))
        return last

    async def ship(self, documents: Sequence[Document]) -> None:
        try:
            await asyncio.to_thread(self._append, documents)
        except OSError as exc:
            raise SinkError(f"ndjson append failed: {exc}") from exc

    def _append(self, documents: Sequence[Document]) -> None:
        # Under a lock, seq check included: an append whose task was cancelled keeps running in
        # its thread, and a re-ship of the same batch must neither interleave with nor repeat it.
        seq = documents[0].source["seq"]
        with self._lock:
            if seq <= self._last_seq:
                return
            with self._path.open("ab") as fh:
                fh.write(b"".join(doc.to_line() for doc in documents))
                fh.flush()
                os.fsync(fh.fileno())
            self._last_seq = seq

    async def close(self) -> None:
        return None
