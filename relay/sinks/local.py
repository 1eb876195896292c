"""Sinks on the relay's own disk: the embedded SQLite store and an NDJSON file."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import orjson

from relay.sinks.base import SinkError
from relay.sinks.documents import Document
from relay.sinks.store import EmbeddedStore

__all__ = ["NdjsonSink", "StoreSink"]


class StoreSink:
    name = "store"

    def __init__(self, path: Path) -> None:
        self._store = EmbeddedStore(path)

    async def ship(self, documents: Sequence[Document]) -> None:
        try:
            await asyncio.to_thread(self._store.write, documents)
        except OSError as exc:
            raise SinkError(f"embedded store write failed: {exc}") from exc

    async def close(self) -> None:
        self._store.close()


class NdjsonSink:
    """Appends documents to a file, one per line, fsynced per batch.

    Idempotent by seq: a batch at or below the last seq in the file (a re-ship after a crash
    between append and outbox delete) is skipped.
    """

    name = "ndjson"

    def __init__(self, path: Path) -> None:
        self._path = path
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
        seq = documents[0].source["seq"]
        if seq <= self._last_seq:
            return
        data = b"".join(doc.to_line() for doc in documents)
        try:
            await asyncio.to_thread(self._append, data)
        except OSError as exc:
            raise SinkError(f"ndjson append failed: {exc}") from exc
        self._last_seq = seq

    def _append(self, data: bytes) -> None:
        with self._path.open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    async def close(self) -> None:
        return None
