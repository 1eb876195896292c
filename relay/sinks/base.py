"""The sink contract: idempotent, ordered delivery of one batch's documents at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from relay.core.document import Document

__all__ = ["Sink", "SinkConflictError", "SinkError", "SinkUnauthorizedError"]


class SinkError(Exception):
    """Delivery failed and should be retried later; nothing is dropped."""


class SinkUnauthorizedError(SinkError):
    """The sink refuses the relay's credentials: shipping pauses (and keeps probing) until an
    operator fixes them; nothing is dropped."""


class SinkConflictError(SinkError):
    """The sink holds another document at one of our ids (someone took the id first): the
    batch stays in the outbox, shipping stops at it, and the relay alerts until a person removes
    the other document; nothing is dropped."""

    def __init__(self, where: str, ids: Sequence[str]) -> None:
        self.ids = list(ids)
        shown = ", ".join(self.ids[:3]) + (" …" if len(self.ids) > 3 else "")
        super().__init__(
            f"{len(self.ids)} of our document ids hold another document in {where} ({shown}); "
            "the batch is kept until those documents are removed"
        )


class Sink(Protocol):
    name: str

    async def ship(self, documents: Sequence[Document]) -> None:
        """Store every document, or raise SinkError. Storing a document twice must be a no-op;
        finding another document at one of the ids raises SinkConflictError."""

    async def close(self) -> None: ...
