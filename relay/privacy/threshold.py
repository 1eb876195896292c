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

from relay.aggregate.cells import Cell, CellKey
from relay.privacy.geo import UNKNOWN

__all__ = ["Publication", "apply_threshold"]


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
