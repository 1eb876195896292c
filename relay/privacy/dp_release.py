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
from typing import Annotated, Final, Literal

from pydantic import Field, with_config
from typing_extensions import TypedDict

from relay.aggregate.cells import Cell, CellKey, Stats, Summary
from relay.core.fields import DecimalText
from relay.core.numbers import MAX_SAFE_INT
from relay.privacy import dp
from relay.privacy.ledger import Budget, decimal_text

__all__ = ["DpPrivacy", "DpRelease"]

_Positive = Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]


@with_config(extra="forbid")
class DpPrivacy(TypedDict):
    """The privacy parameters of `dp` mode (P7): the guarantee as stated by the relay, with its
    mechanism, sensitivity and ε budget (ε values as exact decimal strings, never floats)."""

    mode: Literal["dp"]
    geo: Literal["region", "none"]
    publication: Annotated[
        Literal["fixed"],
        Field(
            description="Every listed node × region is published each window, whatever the data."
        ),
    ]
    unit: Annotated[
        Literal["contributor-day"], Field(description="The privacy unit of the budget.")
    ]
    max_events_per_contributor: _Positive
    max_cells_per_contributor: _Positive
    sensitivity: Annotated[_Positive, Field(description="L1 sensitivity of one cell.")]
    mechanism: Literal["discrete_laplace"]
    scale: Annotated[
        _Positive, Field(description="Laplace scale b of every noised value; ±95 % = b·ln 20.")
    ]
    epsilon: Annotated[DecimalText, Field(description="ε of one cell's release in one window.")]
    window_epsilon: Annotated[
        DecimalText, Field(description="ε one contributor may spend per window.")
    ]
    delta: Literal[0]
    windows_per_day: _Positive
    daily_epsilon: DecimalText
    daily_epsilon_cap: DecimalText


_EMPTY: Final = Cell()


@dataclass(frozen=True)
class DpRelease:
    nodes: frozenset[tuple[str, str]]  # (role, id)
    cells: tuple[CellKey, ...]  # the fixed publication, in leaf order
    geo: Literal["region", "none"]
    max_events_per_contributor: int
    budget: Budget

    def summaries(
        self, cells: Mapping[CellKey, Cell], window_start_ms: int, window_end_ms: int
    ) -> list[Summary]:
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
    def stats(summaries: Sequence[Summary]) -> Stats:
        """The signed stats of a dp batch: derived from the noisy summaries only, every count
        but `accepted` zero (the exact ones are WindowState.stats)."""
        return {
            "accepted": sum(s["requests"] + sum(s["signals"].values()) for s in summaries),
            "rejected": 0,
            "invalid": 0,
            "late": 0,
            "too_old": 0,
            "too_new": 0,
            "too_many": 0,
            "over_cap": 0,
            "over_budget": 0,
            "suppressed_cells": 0,
            "suppressed_events": 0,
            "unsupported_type": 0,
        }

    def header(self) -> DpPrivacy:
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
