"""Per-window, per-cell accumulation of observations, with contribution bounding (P4).

A cell is (node role, node id, region). It keeps counts, sums and log-scale histograms (P6: no
minimum, maximum or any single event's value survives), plus each contributor's and each source
network's event count, which serve both the bounds of P4 and the distinct counts of P5.

Node ids come from what clients send (Atlas names distributors by URL host), so the node space is
bounded per window too: at most `max_nodes` distinct nodes, and at most `max_cells_per_network`
new cells opened by one source network. An event whose cell would be past either budget is
dropped and counted (`over_budget`, part of `over_cap`), so a flood of invented nodes costs
memory in proportion to the networks behind it, and never refuses honest clients. Nodes on the
known-node list (`privacy.nodes`) are exempt, so a flood cannot crowd them out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, NamedTuple, NotRequired, TypeVar, cast

from pydantic import Field, with_config
from typing_extensions import TypedDict

from relay.aggregate import histogram
from relay.aggregate.histogram import Histogram
from relay.aggregate.observation import IngestRecord
from relay.core.fields import Count, Region
from relay.core.numbers import MAX_SAFE_INT
from relay.core.vocabulary import Asset, NodeRef, Op, Outcome, Role, Signal

__all__ = [
    "Breakdown",
    "Cell",
    "CellKey",
    "EventLabel",
    "OpenWindows",
    "Stats",
    "Summary",
    "WindowState",
]

CellKey = tuple[str, str, str]  # (role, node id, region)


@with_config(extra="forbid")
class Summary(TypedDict):
    """The published fields of one cell (node, region) of one window: the leaf content (§5.2).

    No per-event value, identifier or timestamp: counts, sums and histograms only (P1, P6).
    """

    window_start_ms: Count
    window_end_ms: Count
    node: NodeRef
    region: Region
    requests: Annotated[
        Count, Field(description="Request events; the outcome counts add up to this.")
    ]
    outcomes: dict[Outcome, Count]
    ops: dict[Op, Count]
    signals: dict[Signal, Count]
    assets: dict[Asset, Count]
    bytes: NotRequired[
        Annotated[
            Count | None,
            Field(
                description="Sum of reported bytes, saturating at 2^53 - 1; not published in dp "
                "mode (a sum of values up to 2^40 has no useful sensitivity bound)."
            ),
        ]
    ]
    ttfb_us: Annotated[Histogram, Field(description="Time to first byte, microseconds.")]
    duration_us: Annotated[Histogram, Field(description="Download time, microseconds.")]
    throughput_bps: Annotated[
        Histogram, Field(description="Bytes per second of requests with both.")
    ]


def by_name(counts: Mapping[str, int]) -> dict[Any, int]:
    """Counts by vocabulary name, sorted: the published form of outcomes, ops, signals, assets.

    The names are the vocabulary's (checked at ingest; records carry them as text), hence the
    `Any` key that lets them fill the Literal-keyed fields of Summary.
    """
    return dict(sorted(counts.items()))


def node_ref(role: str, node_id: str) -> NodeRef:
    """A cell's node as a summary names it (`role` is a Role: checked at ingest)."""
    return {"role": cast(Role, role), "id": node_id}


# Memory accounting for the open-window budget, measured with tracemalloc on CPython 3.11
# (tests/test_cells.py checks the estimate stays above the measured size): ~88 B per
# (cell, contributor) entry, ~1.9 kB per cell with a few histogram buckets.
ENTRY_BYTES = 100
CELL_BYTES = 2_500


EventLabel = tuple[str, str, str | None]  # (kind, name, op) of an observation
_K = TypeVar("_K")


def _add_into(total: dict[_K, int], more: Mapping[_K, int]) -> None:
    for key, count in more.items():
        total[key] = total.get(key, 0) + count


class Breakdown(NamedTuple):
    requests: int
    outcomes: dict[str, int]
    ops: dict[str, int]
    signals: dict[str, int]


class Cell:
    __slots__ = (
        "assets",
        "bytes_total",
        "contributors",
        "duration",
        "networks",
        "tally",
        "throughput",
        "ttfb",
    )

    def __init__(self) -> None:
        self.contributors: dict[int, int] = {}
        self.networks: dict[int, int] = {}  # events per source network key
        # Events by (kind, name, op): one dict update per event on the hot path; the published
        # outcomes, ops and signals are derived from it.
        self.tally: dict[EventLabel, int] = {}
        self.assets: dict[str, int] = {}
        self.bytes_total = 0
        self.ttfb: dict[int, int] = {}
        self.duration: dict[int, int] = {}
        self.throughput: dict[int, int] = {}

    @property
    def requests(self) -> int:
        return self.breakdown().requests

    @property
    def outcomes(self) -> dict[str, int]:
        return self.breakdown().outcomes

    @property
    def ops(self) -> dict[str, int]:
        return self.breakdown().ops

    @property
    def signals(self) -> dict[str, int]:
        return self.breakdown().signals

    def breakdown(self) -> Breakdown:
        """The published counts of the tally, in one pass over it."""
        requests = 0
        outcomes: dict[str, int] = {}
        ops: dict[str, int] = {}
        signals: dict[str, int] = {}
        for (kind, name, op), count in self.tally.items():
            if kind == "request":
                requests += count
                outcomes[name] = outcomes.get(name, 0) + count
                op = op or "download"
                ops[op] = ops.get(op, 0) + count
            else:
                signals[name] = signals.get(name, 0) + count
        return Breakdown(requests, outcomes, ops, signals)

    @property
    def events(self) -> int:
        return sum(self.tally.values())

    def merge(self, other: Cell) -> None:
        """Fold `other` into this cell (the roll-up of P5); contributor counts add up."""
        _add_into(self.contributors, other.contributors)
        _add_into(self.networks, other.networks)
        _add_into(self.tally, other.tally)
        _add_into(self.assets, other.assets)
        _add_into(self.ttfb, other.ttfb)
        _add_into(self.duration, other.duration)
        _add_into(self.throughput, other.throughput)
        self.bytes_total = min(self.bytes_total + other.bytes_total, MAX_SAFE_INT)

    def summary(self, key: CellKey, window_start_ms: int, window_end_ms: int) -> Summary:
        """The published fields of this cell: the leaf content of DESIGN §5.2."""
        role, node_id, region = key
        counts = self.breakdown()
        return {
            "window_start_ms": window_start_ms,
            "window_end_ms": window_end_ms,
            "node": node_ref(role, node_id),
            "region": region,
            "requests": counts.requests,
            "outcomes": by_name(counts.outcomes),
            "ops": by_name(counts.ops),
            "signals": by_name(counts.signals),
            "assets": by_name(self.assets),
            "bytes": self.bytes_total,
            "ttfb_us": histogram.to_document(self.ttfb),
            "duration_us": histogram.to_document(self.duration),
            "throughput_bps": histogram.to_document(self.throughput),
        }


_OMITTED_BEFORE = "absent on batches of older relays"


# extra_items (PEP 728) is what pydantic turns into the schema's additionalProperties; mypy does
# not know it yet.
@with_config(extra="allow")
class Stats(TypedDict, extra_items=Count):  # type: ignore[call-arg]
    """Event counts of the batch's window (§5.3); more non-negative counts may be added."""

    accepted: Annotated[Count, Field(description="Events acknowledged into this window.")]
    rejected: Annotated[
        Count, Field(description="Sum of invalid, late, too_old, too_new and too_many.")
    ]
    invalid: Count
    late: Annotated[
        Count, Field(description="Events for this window that arrived after it was sealed.")
    ]
    too_old: Count
    too_new: Count
    too_many: NotRequired[
        Annotated[
            Count,
            Field(description=f"Atlas events past the per-request cap; {_OMITTED_BEFORE}."),
        ]
    ]
    over_cap: Annotated[
        Count,
        Field(
            description="Accepted events dropped by contribution bounding (P4) or the node budgets."
        ),
    ]
    over_budget: NotRequired[
        Annotated[
            Count,
            Field(
                description="The part of over_cap whose cell was past the node budgets "
                f"(window.max_nodes, window.max_cells_per_network); {_OMITTED_BEFORE}."
            ),
        ]
    ]
    suppressed_cells: Annotated[
        Count, Field(description="Cells withheld under k after roll-up (P5).")
    ]
    suppressed_events: Annotated[Count, Field(description="Accepted events in suppressed cells.")]
    unsupported_type: Annotated[
        Count, Field(description="Atlas events of types relay does not map.")
    ]


@dataclass
class WindowState:
    """Everything accumulated for one window, until it is sealed."""

    start_ms: int
    cells: dict[CellKey, Cell] = field(default_factory=dict)
    accepted: int = 0
    over_cap: int = 0
    # The part of over_cap dropped by the node budgets (max_nodes, max_cells_per_network).
    over_budget: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    # dp mode only: events for nodes outside the published list, and cells per contributor.
    unlisted: int = 0
    cells_touched: dict[int, int] = field(default_factory=dict)
    # The node budgets: distinct (role, node id), and cells opened per source network.
    nodes: set[tuple[str, str]] = field(default_factory=set)
    cells_opened: dict[int, int] = field(default_factory=dict)

    def stats(self, suppressed_cells: int, suppressed_events: int) -> Stats:
        """The exact counts of this window; `rejected` is the sum of the rejection reasons."""
        reasons = self.rejected
        invalid, late, too_old, too_new, too_many = (
            reasons.get(reason, 0)
            for reason in ("invalid", "late", "too_old", "too_new", "too_many")
        )
        return {
            "accepted": self.accepted,
            "rejected": invalid + late + too_old + too_new + too_many,
            "invalid": invalid,
            "late": late,
            "too_old": too_old,
            "too_new": too_new,
            "too_many": too_many,
            "over_cap": self.over_cap,
            "over_budget": self.over_budget,
            "suppressed_cells": suppressed_cells,
            "suppressed_events": suppressed_events,
            "unsupported_type": reasons.get("unsupported_type", 0),
        }


class OpenWindows:
    """The aggregator: applies WAL records to the windows they belong to.

    `apply` is deterministic in its input, so replaying the WAL rebuilds the exact state, including
    which events were over a cap or a budget.

    Bounds (P4): an event is dropped and counted as over_cap when its contributor already added
    `max_events_per_contributor` to the cell, or its source network `max_events_per_network`
    (client-supplied ids refine bounding within a network, never widen it), or its cell would be
    past the node budgets (`max_nodes`, `max_cells_per_network`; also counted as over_budget).

    In dp mode (P7) two more bounds apply: events for nodes outside `nodes` are dropped and
    counted (`unlisted`), and a contributor adds to at most `max_cells_per_contributor` cells per
    window; an event for a further cell is dropped and counted as over_cap. In aggregate mode
    `known_nodes` (optional) only exempts the listed nodes from the node budgets.
    """

    def __init__(
        self,
        max_events_per_contributor: int,
        *,
        max_events_per_network: int | None = None,
        max_nodes: int | None = None,
        max_cells_per_network: int | None = None,
        known_nodes: frozenset[tuple[str, str]] = frozenset(),
        max_cells_per_contributor: int | None = None,
        nodes: frozenset[tuple[str, str]] | None = None,
    ) -> None:
        self._cap = max_events_per_contributor
        self._network_cap = (
            max_events_per_contributor if max_events_per_network is None else max_events_per_network
        )
        self._max_nodes = max_nodes
        self._cells_per_network = max_cells_per_network
        self._known = known_nodes
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
        self._entries -= sum(
            len(cell.contributors) + len(cell.networks) for cell in state.cells.values()
        )
        self._entries -= len(state.cells_touched) + len(state.nodes) + len(state.cells_opened)
        return state

    def _open_cell(self, state: WindowState, role: str, node_id: str, network: int) -> bool:
        """Whether a new cell for this node may be opened by this network (the node budgets)."""
        node = (role, node_id)
        if node in self._known:
            return True
        new_node = node not in state.nodes
        if new_node and self._max_nodes is not None and len(state.nodes) >= self._max_nodes:
            return False
        opened = state.cells_opened.get(network, 0)
        if self._cells_per_network is not None:
            if opened >= self._cells_per_network:
                return False
            if not opened:
                self._entries += 1
            state.cells_opened[network] = opened + 1
        if new_node:
            state.nodes.add(node)
            self._entries += 1
        return True

    def apply(self, record: IngestRecord) -> None:
        # Windows already sealed (their batches are in the outbox) are skipped: on replay this is
        # what makes a record that straddles a seal count exactly once.
        sealed = self.sealed_until_ms
        if record.rejected and record.arrival_window_ms >= sealed:
            self.window(record.arrival_window_ms).rejected.update(record.rejected)
        region = record.region
        networks = record.networks
        cap = self._cap
        network_cap = self._network_cap
        cells_cap = self._cells_cap
        nodes = self._nodes
        state: WindowState | None = None
        network: int | None = None
        for (
            window,
            contributor,
            role,
            node_id,
            kind,
            name,
            op,
            asset,
            ttfb,
            duration,
            nbytes,
            throughput,
        ) in record.observations:
            # The events of a request almost always share a window: look it up once.
            if state is None or state.start_ms != window:
                if window < sealed:
                    continue
                state = self.window(window)
                network = networks.get(window)
            # A record from before source networks (WAL format 2): the contributor is the network.
            source = contributor if network is None else network
            state.accepted += 1
            if nodes is not None and (role, node_id) not in nodes:
                state.unlisted += 1
                continue
            key = (role, node_id, region)
            cell = state.cells.get(key)
            if cell is None:
                if not self._open_cell(state, role, node_id, source):
                    state.over_cap += 1
                    state.over_budget += 1
                    continue
                cell = state.cells[key] = Cell()
                self._cells += 1
            seen = cell.contributors.get(contributor, 0)
            from_network = cell.networks.get(source, 0)
            if seen >= cap or from_network >= network_cap:
                state.over_cap += 1
                continue
            if not seen:
                if cells_cap is not None:
                    touched = state.cells_touched.get(contributor, 0)
                    if touched >= cells_cap:
                        state.over_cap += 1
                        continue
                    if not touched:
                        self._entries += 1
                    state.cells_touched[contributor] = touched + 1
                self._entries += 1
            if not from_network:
                self._entries += 1
            cell.contributors[contributor] = seen + 1
            cell.networks[source] = from_network + 1
            # Counted inline rather than by a Cell method: this loop runs once per event, and
            # the call alone was a fifth of it.
            label = (kind, name, op)
            tally = cell.tally
            tally[label] = tally.get(label, 0) + 1
            if asset is not None:
                cell.assets[asset] = cell.assets.get(asset, 0) + 1
            if ttfb is not None:
                cell.ttfb[ttfb] = cell.ttfb.get(ttfb, 0) + 1
            if duration is not None:
                cell.duration[duration] = cell.duration.get(duration, 0) + 1
            if nbytes is not None:
                cell.bytes_total = min(cell.bytes_total + nbytes, MAX_SAFE_INT)
            if throughput is not None:
                cell.throughput[throughput] = cell.throughput.get(throughput, 0) + 1
