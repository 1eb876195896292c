"""k-threshold with roll-up (P5).

A (node, region) cell is published only when at least k distinct contributors and at least
k_networks distinct source networks stand behind it: contributors are whatever ids clients send,
so one network could invent k of them, while networks (IPv4 /24, IPv6 /48) it cannot. The failing
cells of a node, together with its unknown-region cell, roll up into (node, ZZ); if that still
falls short of either threshold it is suppressed and counted. Published totals are sums of
published cells only, so no subtraction of published numbers reveals a suppressed cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal, NotRequired

from pydantic import Field, with_config
from typing_extensions import TypedDict

from relay.aggregate.cells import Cell, CellKey
from relay.core.numbers import MAX_SAFE_INT
from relay.privacy.geo import UNKNOWN

__all__ = ["AggregatePrivacy", "Publication", "apply_threshold"]


@with_config(extra="forbid")
class AggregatePrivacy(TypedDict):
    """The privacy parameters of `aggregate` mode (signed with every batch): k-thresholds (P5),
    contribution bounds (P4) and geo granularity (P3). Batches of relays from before source
    networks omit k_networks and max_events_per_network."""

    mode: Literal["aggregate"]
    k: Annotated[int, Field(ge=2, le=MAX_SAFE_INT)]
    k_networks: NotRequired[
        Annotated[
            int,
            Field(
                ge=2,
                le=MAX_SAFE_INT,
                description="Distinct source networks (IPv4 /24, IPv6 /48) a published cell needs.",
            ),
        ]
    ]
    max_events_per_contributor: Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]
    max_events_per_network: NotRequired[
        Annotated[
            int,
            Field(
                ge=1,
                le=MAX_SAFE_INT,
                description="Events one source network may add to a cell per window.",
            ),
        ]
    ]
    geo: Literal["region", "country", "none"]


@dataclass(frozen=True)
class Publication:
    cells: list[tuple[CellKey, Cell]]  # sorted by key: the leaf order of the batch
    suppressed_cells: int
    suppressed_events: int


def apply_threshold(
    cells: Mapping[CellKey, Cell], k: int, k_networks: int | None = None
) -> Publication:
    """The publishable cells; `k_networks` defaults to k."""
    k_net = k if k_networks is None else k_networks
    by_node: dict[tuple[str, str], list[tuple[str, Cell]]] = {}
    for (role, node_id, region), cell in cells.items():
        by_node.setdefault((role, node_id), []).append((region, cell))

    published: list[tuple[CellKey, Cell]] = []
    suppressed_cells = suppressed_events = 0
    for (role, node_id), regions in by_node.items():
        rollup = Cell()
        rolled = 0
        for region, cell in regions:
            if region != UNKNOWN and len(cell.contributors) >= k and len(cell.networks) >= k_net:
                published.append(((role, node_id, region), cell))
            else:
                rollup.merge(cell)
                rolled += 1
        if not rolled:
            continue
        if len(rollup.contributors) >= k and len(rollup.networks) >= k_net:
            published.append(((role, node_id, UNKNOWN), rollup))
        else:
            suppressed_cells += rolled
            suppressed_events += rollup.events
    published.sort(key=lambda item: item[0])
    return Publication(published, suppressed_cells, suppressed_events)
