"""The sink contract: idempotent, ordered delivery of one batch's documents at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from relay.sinks.documents import Document

__all__ = ["Sink", "SinkError", "SinkUnauthorizedError"]


class SinkError(Exception):
    """Delivery failed and should be retried later; nothing is dropped."""


class SinkUnauthorizedError(SinkError):
    """The sink refuses the relay's credentials: shipping pauses (and keeps probing) until an
    operator fixes them; nothing is dropped."""


class Sink(Protocol):
    name: str

    async def ship(self, documents: Sequence[Document]) -> None:
        """Store every document, or raise SinkError. Storing a document twice must be a no-op."""

    async def close(self) -> None: ...
