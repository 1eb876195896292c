"""Where the lead reads documents from: the embedded store or Elasticsearch, behind one interface.

Both sources answer the same questions with the same numbers; the aggregation itself (sums,
histogram merges, grouping by node, region and time) runs inside the store, as SQL over the
embedded store's JSON or as Elasticsearch aggregations; over the embedded store, the verified
batches' tallies come from the lead's own rollups of them (relay/lead/rollup.py).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from relay.core.document import Document
from relay.lead.health import OriginPrivacy
from relay.lead.tally import BatchSelection, Tally
from relay.lead.timerange import TimeRange
from relay.registry import Registry
from relay.verify.report import VerificationReport

__all__ = [
    "BatchPage",
    "Buckets",
    "CellQuery",
    "GroupKey",
    "OriginActivity",
    "Source",
    "bucket_start",
]

#: How summaries are grouped in time: not at all, per window start, or per step of this many ms
#: (buckets aligned to multiples of the step since the epoch, so points fall on round times).
Buckets = Literal["none", "window"] | int

#: (node role, node id, region, bucket start in ms; 0 when not grouped in time).
GroupKey = tuple[str, str, str, int]


def bucket_start(window_start_ms: int, buckets: Buckets) -> int:
    if buckets == "none":
        return 0
    if buckets == "window":
        return window_start_ms
    return window_start_ms // buckets * buckets


@dataclass(frozen=True, slots=True)
class CellQuery:
    """Summaries whose window starts inside the range, optionally of one node and region."""

    time_range: TimeRange
    role: str | None = None
    node_id: str | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True)
class OriginActivity:
    """What the stored batch documents of one origin say, verified or not."""

    batches: int
    last_seq: int
    last_signed_at_ms: int
    last_window_end_ms: int


@dataclass(frozen=True, slots=True)
class BatchPage:
    total: int
    sources: list[dict[str, Any]]


class Source(Protocol):
    async def change_token(self) -> Hashable:
        """A value that changes whenever stored documents change (or may have)."""
        ...

    async def state(self) -> str:
        """What the source holds, comparable across restarts: it changes when documents are
        added or removed (a document edited in place may leave it as it was)."""
        ...

    async def verify(self, registry: Registry, now_ms: int) -> VerificationReport:
        """`relay verify` over every stored document."""
        ...

    async def track(self, verified: set[tuple[str, int]]) -> None:
        """Bring any index the lead keeps of the source up to these verified batches (before
        they are put in force); the embedded store's rollups, relay/lead/rollup.py."""
        ...

    async def tallies(
        self, query: CellQuery, selection: BatchSelection, buckets: Buckets
    ) -> dict[GroupKey, Tally]:
        """Summaries of the selected batches, summed per node, region and time bucket."""
        ...

    async def privacy(
        self, time_range: TimeRange, selection: BatchSelection
    ) -> dict[str, OriginPrivacy]:
        """Per origin, from its selected batch headers in the range: the smallest k of its
        aggregate-mode batches and the largest noise scale of its dp-mode ones."""
        ...

    async def origins(self) -> dict[str, OriginActivity]: ...

    async def batches(
        self,
        origin: str | None,
        time_range: TimeRange,
        selection: BatchSelection,
        limit: int,
        offset: int,
    ) -> BatchPage:
        """Batch documents' sources, newest window first, then by origin and seq."""
        ...

    async def batch(self, origin: str, seq: int) -> Document | None: ...

    async def summary(self, origin: str, seq: int, i: int) -> Document | None: ...

    async def checkpoints(
        self, origin: str, selection: BatchSelection, limit: int
    ) -> list[tuple[int, str]]:
        """(seq, checkpoint note) of the origin's selected batches, highest seq first."""
        ...

    async def close(self) -> None: ...
