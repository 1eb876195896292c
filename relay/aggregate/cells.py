"""Per-window, per-cell accumulation of observations, with contribution bounding (P4).

A cell is (node role, node id, region). It keeps counts, sums and log-scale histograms (P6: no
minimum, maximum or any single event's value survives), plus each contributor's event count,
which serves both the bound of P4 and the distinct count of P5.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from relay.aggregate import histogram
from relay.observation import IngestRecord, Observation

__all__ = ["MAX_SAFE_INT", "Cell", "CellKey", "OpenWindows", "WindowState"]

CellKey = tuple[str, str, str]  # (role, node id, region)

# Canonical JSON keeps integers below 2^53 (DESIGN §5.1); a byte total saturates there.
MAX_SAFE_INT = 2**53 - 1

# Memory accounting for the open-window budget, measured with tracemalloc on CPython 3.11
# (tests/test_cells.py checks the estimate stays above the measured size): ~88 B per
# (cell, contributor) entry, ~1.9 kB per cell with a few histogram buckets.
ENTRY_BYTES = 100
CELL_BYTES = 2_500


class Cell:
    __slots__ = (
        "assets",
        "bytes_total",
        "contributors",
        "duration",
        "ops",
        "outcomes",
        "requests",
        "signals",
        "throughput",
        "ttfb",
    )

    def __init__(self) -> None:
        self.contributors: dict[int, int] = {}
        self.requests = 0
        self.outcomes: Counter[str] = Counter()
        self.ops: Counter[str] = Counter()
        self.signals: Counter[str] = Counter()
        self.assets: Counter[str] = Counter()
        self.bytes_total = 0
        self.ttfb: Counter[int] = Counter()
        self.duration: Counter[int] = Counter()
        self.throughput: Counter[int] = Counter()

    @property
    def events(self) -> int:
        return self.requests + sum(self.signals.values())

    def add(self, obs: Observation) -> None:
        if obs.asset is not None:
            self.assets[obs.asset] += 1
        if obs.kind == "signal":
            self.signals[obs.name] += 1
            return
        self.requests += 1
        self.outcomes[obs.name] += 1
        self.ops[obs.op or "download"] += 1
        if obs.ttfb_ms is not None:
            self.ttfb[histogram.bucket_index(obs.ttfb_ms * 1000)] += 1
        if obs.duration_ms is not None:
            self.duration[histogram.bucket_index(obs.duration_ms * 1000)] += 1
        if obs.bytes is not None:
            self.bytes_total = min(self.bytes_total + obs.bytes, MAX_SAFE_INT)
            if obs.duration_ms:
                rate = obs.bytes * 1000 / obs.duration_ms
                # Beyond ~9 Tbit/s is a measurement artefact, not a rate: leave it out of the
                # histogram. `add` runs inside the WAL writer and on replay, so it never raises.
                if rate <= histogram.MAX_VALUE:
                    self.throughput[histogram.bucket_index(rate)] += 1

    def merge(self, other: Cell) -> None:
        """Fold `other` into this cell (the roll-up of P5); contributor counts add up."""
        for contributor, count in other.contributors.items():
            self.contributors[contributor] = self.contributors.get(contributor, 0) + count
        self.requests += other.requests
        self.outcomes.update(other.outcomes)
        self.ops.update(other.ops)
        self.signals.update(other.signals)
        self.assets.update(other.assets)
        self.bytes_total = min(self.bytes_total + other.bytes_total, MAX_SAFE_INT)
        self.ttfb.update(other.ttfb)
        self.duration.update(other.duration)
        self.throughput.update(other.throughput)

    def summary(self, key: CellKey, window_start_ms: int, window_end_ms: int) -> dict[str, Any]:
        """The published fields of this cell: the leaf content of DESIGN §5.2."""
        role, node_id, region = key
        return {
            "window_start_ms": window_start_ms,
            "window_end_ms": window_end_ms,
            "node": {"role": role, "id": node_id},
            "region": region,
            "requests": self.requests,
            "outcomes": dict(sorted(self.outcomes.items())),
            "ops": dict(sorted(self.ops.items())),
            "signals": dict(sorted(self.signals.items())),
            "assets": dict(sorted(self.assets.items())),
            "bytes": self.bytes_total,
            "ttfb_us": histogram.to_document(self.ttfb),
            "duration_us": histogram.to_document(self.duration),
            "throughput_bps": histogram.to_document(self.throughput),
        }


@dataclass
class WindowState:
    """Everything accumulated for one window, until it is sealed."""

    start_ms: int
    cells: dict[CellKey, Cell] = field(default_factory=dict)
    accepted: int = 0
    over_cap: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    # dp mode only: events for nodes outside the published list, and cells per contributor.
    unlisted: int = 0
    cells_touched: dict[int, int] = field(default_factory=dict)


class OpenWindows:
    """The aggregator: applies WAL records to the windows they belong to.

    `apply` is deterministic in its input, so replaying the WAL rebuilds the exact state, including
    which events were over the cap.

    In dp mode (P7) two more bounds apply: events for nodes outside `nodes` are dropped and
    counted (`unlisted`), and a contributor adds to at most `max_cells_per_contributor` cells per
    window; an event for a further cell is dropped and counted as over_cap.
    """

    def __init__(
        self,
        max_events_per_contributor: int,
        *,
        max_cells_per_contributor: int | None = None,
        nodes: frozenset[tuple[str, str]] | None = None,
    ) -> None:
        self._cap = max_events_per_contributor
        self._cells_cap = max_cells_per_contributor
        self._nodes = nodes
        self._windows: dict[int, WindowState] = {}
        self.sealed_until_ms = -1
        self._cells = 0
        self._entries = 0

    @property
    def estimated_bytes(self) -> int:
        """Approximate memory held by open windows (for the `window.max_memory_bytes` budget)."""
        return self._cells * CELL_BYTES + self._entries * ENTRY_BYTES

    def __len__(self) -> int:
        return len(self._windows)

    def window(self, start_ms: int) -> WindowState:
        state = self._windows.get(start_ms)
        if state is None:
            state = self._windows[start_ms] = WindowState(start_ms)
        return state

    def starts(self) -> list[int]:
        return sorted(self._windows)

    def pop(self, start_ms: int) -> WindowState:
        state = self._windows.pop(start_ms, None) or WindowState(start_ms)
        self._cells -= len(state.cells)
        self._entries -= sum(len(cell.contributors) for cell in state.cells.values())
        self._entries -= len(state.cells_touched)
        return state

    def apply(self, record: IngestRecord) -> None:
        # Windows already sealed (their batches are in the outbox) are skipped: on replay this is
        # what makes a record that straddles a seal count exactly once.
        sealed = self.sealed_until_ms
        if record.rejected and record.arrival_window_ms >= sealed:
            self.window(record.arrival_window_ms).rejected.update(record.rejected)
        cap = self._cap
        cells_cap = self._cells_cap
        nodes = self._nodes
        for obs in record.observations:
            if obs.window_start_ms < sealed:
                continue
            state = self.window(obs.window_start_ms)
            state.accepted += 1
            if nodes is not None and (obs.role, obs.node_id) not in nodes:
                state.unlisted += 1
                continue
            key = (obs.role, obs.node_id, obs.region)
            cell = state.cells.get(key)
            if cell is None:
                cell = state.cells[key] = Cell()
                self._cells += 1
            seen = cell.contributors.get(obs.contributor, 0)
            if seen >= cap:
                state.over_cap += 1
                continue
            if not seen:
                if cells_cap is not None:
                    touched = state.cells_touched.get(obs.contributor, 0)
                    if touched >= cells_cap:
                        state.over_cap += 1
                        continue
                    if not touched:
                        self._entries += 1
                    state.cells_touched[obs.contributor] = touched + 1
                self._entries += 1
            cell.contributors[obs.contributor] = seen + 1
            cell.add(obs)
