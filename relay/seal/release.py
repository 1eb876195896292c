"""Release policies: what a window's state publishes, and the privacy header that says how.

Two policies, chosen once from `privacy.mode`: the k-threshold roll-up (P5) and the dp release
(P7). The seal stage calls a policy without knowing which one it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from relay.aggregate.cells import OpenWindows, WindowState
from relay.privacy.dp_release import DpRelease
from relay.privacy.threshold import apply_threshold

if TYPE_CHECKING:
    from relay.config import PrivacyConfig

__all__ = ["DpPolicy", "KThresholdPolicy", "Release", "ReleasePolicy", "release_policy"]

# Rejection reasons counted in a batch's stats; `rejected` is their sum.
REJECTION_REASONS = ("invalid", "late", "too_old", "too_new", "too_many")


@dataclass(frozen=True)
class Release:
    """What one span publishes: its summaries (leaf order), the stats its batch signs, and the
    exact stats (operator metrics only: in dp mode they differ from the signed ones)."""

    summaries: list[dict[str, Any]]
    signed_stats: dict[str, int]
    exact_stats: dict[str, int]


class ReleasePolicy(Protocol):
    def open_windows(self) -> OpenWindows:
        """The aggregator with the contribution bounds this policy's guarantee rests on."""
        ...

    def release(self, state: WindowState, start_ms: int, end_ms: int) -> Release: ...

    def header(self) -> dict[str, Any]:
        """The `privacy` field of every batch header and of /v1/operator."""
        ...


def exact_stats(
    state: WindowState, suppressed_cells: int, suppressed_events: int
) -> dict[str, int]:
    rejected = {reason: state.rejected.get(reason, 0) for reason in REJECTION_REASONS}
    return {
        "accepted": state.accepted,
        "rejected": sum(rejected.values()),
        **rejected,
        "over_cap": state.over_cap,
        "suppressed_cells": suppressed_cells,
        "suppressed_events": suppressed_events,
        "unsupported_type": state.rejected.get("unsupported_type", 0),
    }


@dataclass(frozen=True)
class KThresholdPolicy:
    """Aggregate mode: cells with k contributors, the rest rolled up or suppressed (P5)."""

    privacy: PrivacyConfig

    def open_windows(self) -> OpenWindows:
        return OpenWindows(self.privacy.max_events_per_contributor)

    def release(self, state: WindowState, start_ms: int, end_ms: int) -> Release:
        publication = apply_threshold(state.cells, self.privacy.k)
        summaries = [cell.summary(key, start_ms, end_ms) for key, cell in publication.cells]
        stats = exact_stats(state, publication.suppressed_cells, publication.suppressed_events)
        return Release(summaries, stats, stats)

    def header(self) -> dict[str, Any]:
        p = self.privacy
        return {
            "mode": p.mode,
            "k": p.k,
            "max_events_per_contributor": p.max_events_per_contributor,
            "geo": p.geo,
        }


@dataclass(frozen=True)
class DpPolicy:
    """dp mode: a fixed publication with noisy counts (relay/privacy/dp_release.py)."""

    privacy: PrivacyConfig
    dp: DpRelease

    def open_windows(self) -> OpenWindows:
        return OpenWindows(
            self.privacy.max_events_per_contributor,
            max_cells_per_contributor=self.privacy.max_cells_per_contributor,
            nodes=self.dp.nodes,
        )

    def release(self, state: WindowState, start_ms: int, end_ms: int) -> Release:
        summaries = self.dp.summaries(state.cells, start_ms, end_ms)
        # Events for unlisted nodes are the dp mode's suppressed events.
        stats = exact_stats(state, 0, state.unlisted)
        # Signed stats derive from the noisy summaries: exact ones would leak.
        return Release(summaries, self.dp.stats(summaries, list(stats)), stats)

    def header(self) -> dict[str, Any]:
        return self.dp.header()


def release_policy(privacy: PrivacyConfig, window_seconds: int) -> ReleasePolicy:
    if privacy.mode == "dp":
        return DpPolicy(privacy, DpRelease.from_config(privacy, window_seconds))
    return KThresholdPolicy(privacy)
