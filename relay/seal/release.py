"""Release policies: what a window's state publishes, and the privacy header that says how.

Two policies, chosen once from `privacy.mode`: the k-threshold roll-up (P5) and the dp release
(P7). The seal stage calls a policy without knowing which one it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from relay.aggregate.cells import OpenWindows, Stats, Summary, WindowState
from relay.attest.batch import Privacy
from relay.privacy.dp_release import DpPrivacy, DpRelease
from relay.privacy.geo import REGIONS, UNKNOWN
from relay.privacy.ledger import plan_budget
from relay.privacy.threshold import AggregatePrivacy, apply_threshold

if TYPE_CHECKING:
    from relay.config import PrivacyConfig, WindowConfig

__all__ = [
    "DpPolicy",
    "KThresholdPolicy",
    "Release",
    "ReleasePolicy",
    "dp_release",
    "release_policy",
]


@dataclass(frozen=True)
class Release:
    """What one span publishes: its summaries (leaf order), the stats its batch signs, and the
    exact stats (operator metrics only: in dp mode they differ from the signed ones)."""

    summaries: list[Summary]
    signed_stats: Stats
    exact_stats: Stats


class ReleasePolicy(Protocol):
    def open_windows(self) -> OpenWindows:
        """The aggregator with the contribution bounds this policy's guarantee rests on."""
        ...

    def release(self, state: WindowState, start_ms: int, end_ms: int) -> Release: ...

    def header(self) -> Privacy:
        """The `privacy` field of every batch header and of /v1/operator."""
        ...


def _open_windows(
    privacy: PrivacyConfig, window: WindowConfig, *, dp_nodes: frozenset[tuple[str, str]] | None
) -> OpenWindows:
    """The aggregator with the bounds of P4 and the node budgets, in either mode."""
    known_nodes = frozenset((node["role"], node["id"]) for node in privacy.nodes)
    return OpenWindows(
        privacy.max_events_per_contributor,
        max_events_per_network=privacy.network_cap,
        max_nodes=window.max_nodes,
        max_cells_per_network=window.max_cells_per_network,
        known_nodes=known_nodes,
        max_cells_per_contributor=None if dp_nodes is None else privacy.max_cells_per_contributor,
        nodes=dp_nodes,
    )


@dataclass(frozen=True)
class KThresholdPolicy:
    """Aggregate mode: cells with k contributors and k_networks source networks, the rest
    rolled up or suppressed (P5)."""

    privacy: PrivacyConfig
    window: WindowConfig

    def open_windows(self) -> OpenWindows:
        return _open_windows(self.privacy, self.window, dp_nodes=None)

    def release(self, state: WindowState, start_ms: int, end_ms: int) -> Release:
        privacy = self.privacy
        publication = apply_threshold(state.cells, privacy.k, privacy.network_threshold)
        summaries = [cell.summary(key, start_ms, end_ms) for key, cell in publication.cells]
        stats = state.stats(publication.suppressed_cells, publication.suppressed_events)
        return Release(summaries, stats, stats)

    def header(self) -> AggregatePrivacy:
        p = self.privacy
        return {
            "mode": "aggregate",
            "k": p.k,
            "k_networks": p.network_threshold,
            "max_events_per_contributor": p.max_events_per_contributor,
            "max_events_per_network": p.network_cap,
            "geo": p.geo,
        }


@dataclass(frozen=True)
class DpPolicy:
    """dp mode: a fixed publication with noisy counts (relay/privacy/dp_release.py)."""

    privacy: PrivacyConfig
    window: WindowConfig
    dp: DpRelease

    def open_windows(self) -> OpenWindows:
        return _open_windows(self.privacy, self.window, dp_nodes=self.dp.nodes)

    def release(self, state: WindowState, start_ms: int, end_ms: int) -> Release:
        summaries = self.dp.summaries(state.cells, start_ms, end_ms)
        # Events for unlisted nodes are the dp mode's suppressed events.
        stats = state.stats(0, state.unlisted)
        # Signed stats derive from the noisy summaries: exact ones would leak.
        return Release(summaries, self.dp.stats(summaries), stats)

    def header(self) -> DpPrivacy:
        return self.dp.header()


def dp_release(privacy: PrivacyConfig, window_seconds: int) -> DpRelease:
    """The dp mode's fixed publication and noise, planned from the configuration."""
    budget = plan_budget(
        epsilon=privacy.epsilon,
        max_events=privacy.max_events_per_contributor,
        cells=privacy.max_cells_per_contributor,
        window_seconds=window_seconds,
        cap=privacy.daily_epsilon_cap,
    )
    nodes = frozenset((node["role"], node["id"]) for node in privacy.nodes)
    geo = privacy.geo
    if geo == "country":
        raise ValueError("dp mode publishes regions, never countries")  # PrivacyConfig refuses it
    regions = (UNKNOWN,) if geo == "none" else REGIONS
    return DpRelease(
        nodes=nodes,
        cells=tuple(sorted((role, i, region) for role, i in nodes for region in regions)),
        geo=geo,
        max_events_per_contributor=privacy.max_events_per_contributor,
        budget=budget,
    )


def release_policy(privacy: PrivacyConfig, window: WindowConfig) -> ReleasePolicy:
    if privacy.mode == "dp":
        return DpPolicy(privacy, window, dp_release(privacy, window.seconds))
    return KThresholdPolicy(privacy, window)
