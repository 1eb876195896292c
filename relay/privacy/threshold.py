"""k-threshold with roll-up (P5).

A (node, region) cell is published only when at least k distinct contributors stand behind it.
The failing cells of a node, together with its unknown-region cell, roll up into (node, ZZ); if
that still has fewer than k contributors it is suppressed and counted. Published totals are sums of
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


def apply_threshold(cells: Mapping[CellKey, Cell], k: int) -> Publication:
    by_node: dict[tuple[str, str], list[tuple[str, Cell]]] = {}
    for (role, node_id, region), cell in cells.items():
        by_node.setdefault((role, node_id), []).append((region, cell))

    published: list[tuple[CellKey, Cell]] = []
    suppressed_cells = suppressed_events = 0
    for (role, node_id), regions in by_node.items():
        rollup = Cell()
        rolled = 0
        for region, cell in regions:
            if region != UNKNOWN and len(cell.contributors) >= k:
                published.append(((role, node_id, region), cell))
            else:
                rollup.merge(cell)
                rolled += 1
        if not rolled:
            continue
        if len(rollup.contributors) >= k:
            published.append(((role, node_id, UNKNOWN), rollup))
        else:
            suppressed_cells += rolled
            suppressed_events += rollup.events
    published.sort(key=lambda item: item[0])
    return Publication(published, suppressed_cells, suppressed_events)
