"""A document as relay writes it to a sink and reads it back: index, id and source."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Document"]


@dataclass(frozen=True)
class Document:
    index: str
    id: str
    source: Mapping[str, Any]

    def to_line(self) -> bytes:
        """One NDJSON line of `relay export`, newline included."""
        return orjson.dumps({"_index": self.index, "_id": self.id, "_source": self.source}) + b"\n"

    @classmethod
    def from_line(cls, line: bytes | str) -> Document:
        data = orjson.loads(line)
        return cls(data["_index"], data["_id"], data["_source"])
