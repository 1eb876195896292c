"""What a source's aggregation returns for one group of summaries, and which batches it reads.

A `Tally` is the sum of a group of summary documents: counts added, histograms merged exactly
(counts of equal representative values added), and how many summaries each operator contributed.
Sources compute tallies inside the store (SQL or Elasticsearch aggregations); the lead only adds
tallies of groups together (regions into a node) and derives percentiles and ratios from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from typing import TypeVar

__all__ = ["BatchSelection", "Tally", "merge_counts"]

K = TypeVar("K")


def merge_counts(into: dict[K, int], other: Mapping[K, int]) -> None:
    for key, count in other.items():
        into[key] = into.get(key, 0) + count


@dataclass(slots=True)
class Tally:
    requests: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    #: Requests per operation (download, upload, probe), beside the outcomes (not crossed).
    ops: dict[str, int] = field(default_factory=dict)
    signals: dict[str, int] = field(default_factory=dict)
    #: Histograms as representative value (µs) → count, merged over the group.
    ttfb_us: dict[int, int] = field(default_factory=dict)
    duration_us: dict[int, int] = field(default_factory=dict)
    #: Operator origin → number of its summaries in the group.
    origins: dict[str, int] = field(default_factory=dict)
    last_window_end_ms: int | None = None

    @property
    def summaries(self) -> int:
        return sum(self.origins.values())

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        merge_counts(self.outcomes, other.outcomes)
        merge_counts(self.ops, other.ops)
        merge_counts(self.signals, other.signals)
        merge_counts(self.ttfb_us, other.ttfb_us)
        merge_counts(self.duration_us, other.duration_us)
        merge_counts(self.origins, other.origins)
        if other.last_window_end_ms is not None:
            self.last_window_end_ms = max(self.last_window_end_ms or 0, other.last_window_end_ms)

    @classmethod
    def total(cls, tallies: Iterable[Tally]) -> Tally:
        result = cls()
        for tally in tallies:
            result.add(tally)
        return result


@dataclass(frozen=True, slots=True)
class BatchSelection:
    """Batches to read: those in `ranges` (include) or all others (exclude).

    `ranges` are (origin, first seq, last seq), inclusive: a chain that verified is one range,
    so the filter stays small however long the chain is.
    """

    ranges: tuple[tuple[str, int, int], ...]
    include: bool

    @classmethod
    def of(cls, batches: Iterable[tuple[str, int]], *, include: bool) -> BatchSelection:
        ranges: list[tuple[str, int, int]] = []
        for origin, group in groupby(sorted(batches), key=lambda pair: pair[0]):
            seqs = [seq for _, seq in group]
            start = previous = seqs[0]
            for seq in seqs[1:]:
                if seq != previous + 1:
                    ranges.append((origin, start, previous))
                    start = seq
                previous = seq
            ranges.append((origin, start, previous))
        return cls(tuple(ranges), include)

    def contains(self, origin: str, seq: int) -> bool:
        inside = any(o == origin and lo <= seq <= hi for o, lo, hi in self.ranges)
        return inside == self.include
