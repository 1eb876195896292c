"""The aggregator's apply is total: any observation that passed validation is counted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.aggregate.cells import OpenWindows
from relay.ingest.models import MAX_BYTES, MAX_DURATION_MS, MAX_TTFB_MS
from relay.observation import IngestRecord, Observation


@settings(max_examples=300, deadline=None)
@given(
    ttfb=st.none() | st.floats(0, MAX_TTFB_MS),
    duration=st.none() | st.floats(0, MAX_DURATION_MS),
    size=st.none() | st.integers(0, MAX_BYTES - 1),
)
def test_any_valid_request_is_counted(
    ttfb: float | None, duration: float | None, size: int | None
) -> None:
    windows = OpenWindows(max_events_per_contributor=50)
    windows.sealed_until_ms = 0
    obs = Observation(
        60_000,
        1,
        "distributor",
        "d1",
        "EU",
        "request",
        "ok",
        "download",
        None,
        ttfb,
        duration,
        size,
    )
    windows.apply(IngestRecord(60_000, (obs,), {}))
    state = windows.pop(60_000)
    (cell,) = state.cells.values()
    assert (state.accepted, cell.requests) == (1, 1)
    assert sum(cell.ttfb.values()) == (ttfb is not None)
    assert sum(cell.duration.values()) == (duration is not None)
