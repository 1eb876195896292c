"""What the HTTP layer (relay/ingest/http.py) needs of a relay, and nothing more.

`relay.serve.OperatorRelay` satisfies `IngestRelay`; the HTTP apps depend on this Protocol, not on
the relay's WAL, outbox, windows or seal stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from relay.aggregate.observation import IngestRecord
    from relay.config import IngestConfig
    from relay.ingest.client_config import ClientConfigDocument
    from relay.ingest.scrub import Admission
    from relay.metrics import RelayMetrics
    from relay.privacy.geo import RegionResolver

__all__ = ["IngestRelay", "Readiness", "Refusal"]


@dataclass(frozen=True)
class Refusal:
    """Why ingest answers 503 now: a problem type (`urn:relay:problem:<type>`) and its title."""

    type: str
    title: str


class Readiness(Protocol):
    """The relay's one reading of its buffers' limits (relay.backpressure.Backpressure)."""

    @property
    def ready(self) -> bool: ...

    def refusal(self) -> Refusal | None:
        """Why a new ingest request must get a 503 now, or None to take it."""
        ...

    def checks(self) -> dict[str, bool]: ...

    def update_gauges(self) -> None: ...


class IngestRelay(Protocol):
    @property
    def ingest_config(self) -> IngestConfig: ...

    @property
    def clock(self) -> Callable[[], int]:
        """Milliseconds since the epoch; injectable, so tests can move time."""
        ...

    @property
    def window_ms(self) -> int: ...

    @property
    def metrics(self) -> RelayMetrics: ...

    @property
    def backpressure(self) -> Readiness: ...

    @property
    def admission(self) -> Admission: ...

    @property
    def resolver(self) -> RegionResolver: ...

    @property
    def client_config(self) -> ClientConfigDocument: ...

    async def accept(self, record: IngestRecord) -> Refusal | None:
        """Make ``record`` durable and counted; a Refusal (a 503) when it cannot be stored."""
        ...

    def operator_view(self) -> dict[str, Any]: ...

    def log_size(self) -> int:
        """The size of the transparency log at the current checkpoint (0 before the first)."""
        ...

    def log_leaves(self, size: int) -> list[bytes] | None:
        """The leaf hashes of batches 0..size − 1, or None if some predate stored leaves."""
        ...
