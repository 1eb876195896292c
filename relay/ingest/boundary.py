"""What the HTTP layer (relay/ingest/http.py) needs of a relay, and nothing more.

`relay.serve.OperatorRelay` satisfies `IngestRelay`; the HTTP apps depend on this Protocol, not on
the relay's WAL, outbox, windows or seal stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Protocol

from pydantic import Field, with_config
from typing_extensions import TypedDict

from relay.attest.batch import Privacy
from relay.core.fields import Count, Hash64, Kid, Origin, VerifierKeyString

if TYPE_CHECKING:
    from relay.aggregate.observation import IngestRecord
    from relay.config import IngestConfig
    from relay.ingest.client_config import RenderedClientConfig
    from relay.ingest.scrub import Admission
    from relay.metrics import RelayMetrics
    from relay.privacy.geo import RegionResolver

__all__ = [
    "BackpressureView",
    "ChainHeadView",
    "IngestRelay",
    "OperatorView",
    "Readiness",
    "ReadinessChecks",
    "Refusal",
]


@with_config(extra="forbid")
class ChainHeadView(TypedDict):
    seq: Count
    batch_hash: Hash64


@with_config(extra="forbid")
class OperatorView(TypedDict):
    """`GET /v1/operator`: who this relay is and where its chain stands."""

    origin: Origin
    kid: Kid
    vkey: VerifierKeyString
    head: Annotated[ChainHeadView | None, Field(description="null before the first batch.")]
    checkpoint: Annotated[
        str | None, Field(description="Latest signed checkpoint; null before one.")
    ]
    privacy: Privacy
    window_seconds: Annotated[int, Field(ge=1)]


# extra_items (PEP 728) is what pydantic turns into the schema's additionalProperties; mypy does
# not know it yet.
@with_config(extra="allow")
class ReadinessChecks(TypedDict, extra_items=bool):  # type: ignore[call-arg]
    """Each readiness check by name; more may be added."""

    accepting: Annotated[bool, Field(description="Not shutting down.")]
    wal_writable: bool
    wal_below_high_water: Annotated[bool, Field(description="WAL under 90 % of wal.max_bytes.")]
    outbox_below_high_water: Annotated[
        bool, Field(description="Outbox under 90 % of outbox.max_bytes.")
    ]
    memory_below_high_water: Annotated[
        bool, Field(description="Open windows under 90 % of window.max_memory_bytes.")
    ]
    sealing: Annotated[
        bool,
        Field(
            description="The last seal succeeded. False while seals fail (outbox, disk, key "
            "rotation): events are kept in the WAL and retried, nothing is published meanwhile."
        ),
    ]
    sink_authorized: Annotated[
        bool,
        Field(
            description="Informational, not part of `ready`: false while the sink refuses the "
            "operator's credentials (shipping paused, nothing dropped)."
        ),
    ]
    sink_content_matches: Annotated[
        bool,
        Field(
            description="Informational, not part of `ready`: false while the sink holds another "
            "document at one of the relay's document ids (shipping waits at that batch, nothing "
            "dropped)."
        ),
    ]


@with_config(extra="forbid")
class Readiness(TypedDict):
    """`GET /readyz` on the operator listener: ready is true exactly when every check but the
    informational ones is."""

    ready: bool
    checks: ReadinessChecks


@dataclass(frozen=True)
class Refusal:
    """Why ingest answers 503 now: a problem type (`urn:relay:problem:<type>`) and its title."""

    type: str
    title: str


class BackpressureView(Protocol):
    """The relay's one reading of its buffers' limits (relay.backpressure.Backpressure)."""

    @property
    def ready(self) -> bool: ...

    def refusal(self) -> Refusal | None:
        """Why a new ingest request must get a 503 now, or None to take it."""
        ...

    def checks(self) -> ReadinessChecks: ...

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
    def backpressure(self) -> BackpressureView: ...

    @property
    def admission(self) -> Admission: ...

    @property
    def resolver(self) -> RegionResolver: ...

    @property
    def client_config(self) -> RenderedClientConfig: ...

    async def accept(self, record: IngestRecord) -> Refusal | None:
        """Make ``record`` durable and counted; a Refusal (a 503) when it cannot be stored."""
        ...

    def operator_view(self) -> OperatorView: ...

    def log_size(self) -> int:
        """The size of the transparency log at the current checkpoint (0 before the first)."""
        ...

    def log_leaves(self, size: int) -> list[bytes] | None:
        """The leaf hashes of batches 0..size − 1, or None if some predate stored leaves."""
        ...
