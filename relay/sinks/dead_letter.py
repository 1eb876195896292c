"""The dead-letter file: documents a sink rejected as malformed (400), kept for a person.

A rejected document cannot be stored by retrying, and it must not block the ones after it; it
must not be lost either. Each line is `{"document": {"_index", "_id", "_source"}, "status",
"error", "at_ms"}`; `document` is in `relay export` form, so after fixing the cause (usually a
mapping) the lead can re-send it as it is.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from relay.core.clock import wall_clock_ms
from relay.core.document import Document

__all__ = ["DeadLetter", "DeadLetterFile"]


@dataclass(frozen=True)
class DeadLetter:
    document: Document
    status: int
    error: Any  # the sink's own error object, kept verbatim

    def to_line(self, at_ms: int) -> bytes:
        entry = {
            "document": {
                "_index": self.document.index,
                "_id": self.document.id,
                "_source": self.document.source,
            },
            "status": self.status,
            "error": self.error,
            "at_ms": at_ms,
        }
        return orjson.dumps(entry) + b"\n"


class DeadLetterFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def append(self, letters: Sequence[DeadLetter]) -> None:
        """Append and fsync: the batch leaves the outbox only after this returns."""
        at_ms = wall_clock_ms()
        data = b"".join(letter.to_line(at_ms) for letter in letters)
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        with self.path.open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
