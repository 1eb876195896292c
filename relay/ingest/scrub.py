"""Turning validated input into scrubbed observations: window, contributor key, region.

Everything identifying enters here and only derived values leave: the event time becomes a window
start, `client` (or IP + User-Agent family) becomes a keyed per-window hash (P2), the IP's source
network another (P4, P5, P8), the IP a macro-region (P3). Native and Atlas handlers both go
through `Admission`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import Field, with_config
from typing_extensions import TypedDict

from relay.aggregate.observation import Observation
from relay.aggregate.window import window_start
from relay.core.fields import Count
from relay.privacy.contributor import WindowSalts, contributor_key

__all__ = ["Admission", "EventError", "RequestContext", "ScrubResult"]


@with_config(extra="forbid")
class EventError(TypedDict):
    """Why one event of a request was rejected; never echoes a value (P1)."""

    index: Annotated[Count, Field(description="Position of the event in `events`.")]
    field: Annotated[str, Field(description="The offending field, dotted, or (event) / (arrival).")]
    reason: str


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What one request contributes besides its body; lives only as long as the handler."""

    now_ms: int
    region: str
    network_material: bytes  # IP + User-Agent family, only ever fed to the keyed hash
    source_network: bytes  # the IP's /24 or /48 (contributor.source_network), likewise


@dataclass
class ScrubResult:
    observations: list[Observation] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    errors: list[EventError] = field(default_factory=list)
    unsupported: int = 0

    def reject(self, index: int, reason: str, field_name: str, detail: str) -> None:
        self.rejected[reason] += 1
        self.errors.append({"index": index, "field": field_name, "reason": detail})

    def reject_overflow(self, first_index: int, count: int) -> None:
        """Events past the per-request cap: counted (`too_many`), one error entry for them all."""
        self.rejected["too_many"] += count
        self.errors.append(
            {
                "index": first_index,
                "field": "events",
                "reason": f"too_many: {count} events past the cap of {first_index} not counted",
            }
        )


class Admission:
    """Assigns an event to a window, or says why it cannot have one."""

    def __init__(
        self,
        *,
        window_ms: int,
        max_past_ms: int,
        max_future_ms: int,
        salts: WindowSalts,
        persist_salt: Callable[[int, bytes], None],
    ) -> None:
        self.window_ms = window_ms
        self._max_past_ms = max_past_ms
        self._max_future_ms = max_future_ms
        self._salts = salts
        self._persist_salt = persist_salt
        self._persisted: set[int] = set()
        # Windows starting before this are sealed or being sealed: their events are late.
        self.closed_until_ms = -1

    def restore_salts(self, salts: dict[int, bytes]) -> None:
        for window, salt in salts.items():
            self._salts.restore(window, salt)
            self._persisted.add(window)

    def destroy_salts_before(self, until_ms: int) -> None:
        for window in [w for w in self._persisted if w < until_ms]:
            self._salts.destroy(window)
            self._persisted.discard(window)

    def window_for(self, ts_ms: int, now_ms: int) -> int | str:
        """The window start for an event at `ts_ms`, or the rejection reason."""
        if ts_ms < now_ms - self._max_past_ms:
            return "too_old"
        if ts_ms > now_ms + self._max_future_ms:
            return "too_new"
        start = window_start(ts_ms, self.window_ms)
        if start < self.closed_until_ms:
            return "late"
        return start

    def contributor(self, window_start_ms: int, material: bytes) -> int:
        """The keyed hash of `material` (client or network material) under the window's salt."""
        salt = self._salts.salt_for(window_start_ms)
        if window_start_ms not in self._persisted:
            self._persist_salt(window_start_ms, salt)
            self._persisted.add(window_start_ms)
        return int.from_bytes(contributor_key(salt, material), "big")

    def networks(self, observations: Iterable[Observation], material: bytes) -> dict[int, int]:
        """The request's source network key in each window its observations fall in.

        The same keyed hash as a contributor's, under each window's salt (P8): a network's key
        links its events within a window and nowhere else. `material` is
        `contributor.source_network`, domain-separated from every contributor material.
        """
        windows = {observation[0] for observation in observations}
        return {window: self.contributor(window, material) for window in sorted(windows)}
