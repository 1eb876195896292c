"""Backpressure and readiness: one reading of the relay's limits (DESIGN §2, §6).

Every buffer is bounded: the WAL and the outbox by bytes, the open windows by estimated memory.
At 90 % of a cap readiness turns false, so that a load balancer moves traffic away before ingest
has to refuse it; at the cap ingest answers 503 instead of losing data or memory. The ingest
handler's 503s, /readyz and the gauges all read this one object, so each threshold exists once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.ingest.boundary import ReadinessChecks, Refusal

if TYPE_CHECKING:
    from relay.aggregate.cells import OpenWindows
    from relay.config import Settings
    from relay.metrics import RelayMetrics
    from relay.outbox.outbox import Outbox
    from relay.outbox.shipper import Shipper
    from relay.seal.stage import SealStage
    from relay.wal.log import WriteAheadLog

__all__ = ["HIGH_WATER", "INFORMATIONAL_CHECKS", "Backpressure"]

HIGH_WATER = 0.9

# Readiness checks reported by /readyz that do not decide `ready`. A sink refusing our key
# (401/403) pauses shipping, not ingest: the relay keeps accepting into the outbox, and if the
# pause lasts, `outbox_below_high_water` turns readiness false in time (DESIGN §2: ready =
# accepting, WAL writable, outbox under its high-water mark). Taking a relay out of its load
# balancer for a credential problem on the lead's side would lose events instead of keeping them.
# The same holds for another document found at one of our ids (`sink_content_matches`).
INFORMATIONAL_CHECKS = frozenset({"sink_authorized", "sink_content_matches"})


class Backpressure:
    def __init__(
        self,
        settings: Settings,
        *,
        wal: WriteAheadLog,
        outbox: Outbox,
        windows: OpenWindows,
        sealer: SealStage,
        shipper: Shipper,
        metrics: RelayMetrics,
    ) -> None:
        self._outbox_max = settings.outbox.max_bytes
        self._memory_max = settings.window.max_memory_bytes
        self._wal = wal
        self._outbox = outbox
        self._windows = windows
        self._sealer = sealer
        self._shipper = shipper
        self._metrics = metrics
        self.shutting_down = False

    def refusal(self) -> Refusal | None:
        """Why a new ingest request must get a 503 now, or None to take it.

        Checked before scrubbing, which would otherwise persist a window salt for nothing.
        """
        if self.shutting_down:
            return Refusal("shutting-down", "Relay is shutting down")
        if self._outbox.size_bytes >= self._outbox_max:
            return Refusal("outbox-full", "Relay outbox is full; retry later")
        if self._wal.failed is not None:
            return Refusal("wal-unavailable", "Relay cannot store events right now")
        if self._wal.size_bytes >= self._wal.max_bytes:
            return Refusal("wal-full", "Relay is at capacity; retry later")
        if self._windows.estimated_bytes >= self._memory_max:
            return Refusal("memory-budget", "Relay is at its memory budget; retry later")
        return None

    def checks(self) -> ReadinessChecks:
        """Each readiness check by name (/readyz)."""
        return {
            "accepting": not self.shutting_down,
            "wal_writable": self._wal.failed is None,
            "wal_below_high_water": self._wal.size_bytes < HIGH_WATER * self._wal.max_bytes,
            "outbox_below_high_water": self._outbox.size_bytes < HIGH_WATER * self._outbox_max,
            "memory_below_high_water": self._windows.estimated_bytes
            < HIGH_WATER * self._memory_max,
            # False while seals fail: events are kept, but nothing is published.
            "sealing": not self._sealer.failing,
            # Informational (see INFORMATIONAL_CHECKS): false while the sink refuses our key.
            "sink_authorized": not self._shipper.paused,
            "sink_content_matches": not self._shipper.conflicted,
        }

    @property
    def ready(self) -> bool:
        return all(ok for name, ok in self.checks().items() if name not in INFORMATIONAL_CHECKS)

    def update_gauges(self) -> None:
        """Set the gauges of the buffers this object watches (at each scrape and each seal)."""
        metrics = self._metrics
        metrics.wal_bytes.set(self._wal.size_bytes)
        metrics.open_windows_bytes.set(self._windows.estimated_bytes)
        metrics.open_windows.set(len(self._windows))
        metrics.update_outbox(*self._outbox.depth(), self._outbox.size_bytes)
