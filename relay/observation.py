"""The scrubbed observation: the only shape in which app data travels past the ingest handler.

It carries no identifier (P1): the node is public infrastructure, the region is coarse (P3), the
contributor is a keyed, per-window hash (P2). This is what the WAL stores and the aggregator reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["IngestRecord", "Observation"]


class Observation(NamedTuple):
    # A NamedTuple rather than a frozen dataclass: it is built once per event on the ingest hot
    # path, and a tuple is built in C where a frozen dataclass sets each field through
    # object.__setattr__ (~2 µs per event).
    window_start_ms: int
    contributor: int  # 64-bit keyed hash (P2), an int because it is smaller than bytes
    role: str
    node_id: str
    region: str
    kind: str  # "request" | "signal"
    name: str  # the outcome of a request, or the signal's name
    op: str | None = None
    asset: str | None = None
    ttfb_ms: float | None = None
    duration_ms: float | None = None
    bytes: int | None = None


@dataclass(frozen=True, slots=True)
class IngestRecord:
    """What one ingest request adds: its accepted observations and its rejection counts.

    Rejections are attributed to the window the request arrived in, so a batch's stats say what
    happened at ingest while that window was current.
    """

    arrival_window_ms: int
    observations: tuple[Observation, ...]
    rejected: Mapping[str, int]
