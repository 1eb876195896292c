"""What a batch publishes in dp mode (P7): a fixed cell set, noisy counts, the guarantee.

Publication rule. The cells of a dp batch are every listed node (`privacy.nodes`, public chain
data) × every region of the geo mode (the seven continents and ZZ; ZZ only with geo `none`), in
every window, noisy zeros included. Which cells appear thus depends on configuration only, never
on the data, and the release is pure ε-DP (δ = 0). Events for unlisted nodes are dropped before
bounding and counted (operator metrics: dropped, reason `suppressed`).

The k-threshold of aggregate mode (P5) is not applied: whether a cell has k contributors is a
data-dependent decision that one contributor can flip, so it has no finite privacy loss and does
not compose with DP. The noise replaces it. DP thresholding (a stability histogram, publishing a
cell when its noisy count clears a bar set by δ) was the alternative; it was not chosen because
at the noise scales a contributor-day budget implies, the bar would hide nearly every cell, a
missing cell could not be told from a silent node, and it would add a δ.

Stats. Exact per-window counts of what contributors sent (accepted, over_cap, rejected, …) would
let a lead with many fake clients see one real client's events, so the signed stats of a dp
batch are derived from the noisy summaries only: `accepted` = Σ (requests + Σ signals) over the
batch, every drop and rejection count 0. The exact counts stay with the operator (/metrics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from relay.aggregate.cells import Cell, CellKey
from relay.privacy import dp
from relay.privacy.ledger import Budget, decimal_text

__all__ = ["DpRelease"]

_EMPTY: Final = Cell()


@dataclass(frozen=True)
class DpRelease:
    nodes: frozenset[tuple[str, str]]  # (role, id)
    cells: tuple[CellKey, ...]  # the fixed publication, in leaf order
    geo: str
    max_events_per_contributor: int
    budget: Budget

    def summaries(
        self, cells: Mapping[CellKey, Cell], window_start_ms: int, window_end_ms: int
    ) -> list[dict[str, Any]]:
        """One noisy summary per cell of the fixed set, in leaf order (one OpenDP call)."""
        exact: list[int] = []
        for key in self.cells:
            exact.extend(dp.cell_counts(cells.get(key, _EMPTY)))
        noisy = dp.add_noise(exact, self.budget.scale)
        size = dp.LAYOUT_SIZE
        return [
            dp.noisy_summary(key, noisy[i * size : (i + 1) * size], window_start_ms, window_end_ms)
            for i, key in enumerate(self.cells)
        ]

    @staticmethod
    def stats(summaries: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, int]:
        """The signed stats of a dp batch: derived from the noisy summaries only."""
        stats = dict.fromkeys(keys, 0)
        stats["accepted"] = sum(s["requests"] + sum(s["signals"].values()) for s in summaries)
        return stats

    def header(self) -> dict[str, Any]:
        """The guarantee, as stated in every batch header and at /v1/operator.

        Integers where the value is one; ε values as exact decimal strings (never binary floats).
        """
        budget = self.budget
        return {
            "mode": "dp",
            "geo": self.geo,
            "publication": "fixed",
            "unit": "contributor-day",
            "max_events_per_contributor": self.max_events_per_contributor,
            "max_cells_per_contributor": budget.cells,
            "sensitivity": budget.sensitivity,
            "mechanism": "discrete_laplace",
            "scale": budget.scale,
            "epsilon": decimal_text(budget.epsilon),
            "window_epsilon": decimal_text(budget.window_epsilon),
            "delta": 0,
            "windows_per_day": budget.windows_per_day,
            "daily_epsilon": decimal_text(budget.daily_epsilon),
            "daily_epsilon_cap": decimal_text(budget.cap),
        }
