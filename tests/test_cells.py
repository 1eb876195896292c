"""The aggregator's apply is total: any observation that passed validation is counted."""

from __future__ import annotations

import tracemalloc

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


def test_memory_estimate_is_conservative() -> None:
    tracemalloc.start()
    try:
        windows = OpenWindows(max_events_per_contributor=50)
        windows.sealed_until_ms = 0
        before = tracemalloc.get_traced_memory()[0]
        for chunk in range(5):
            record = IngestRecord(
                60_000,
                tuple(
                    Observation(
                        60_000,
                        chunk * 10_000 + n,
                        "distributor",
                        f"d{n % 50}",
                        "EU",
                        "request",
                        "ok",
                        "download",
                        None,
                        n % 900,
                        n % 9000,
                        n,
                    )
                    for n in range(10_000)
                ),
                {},
            )
            windows.apply(record)
            del record
        measured = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert measured <= windows.estimated_bytes <= 2 * measured
    # Under 200 bytes per active contributor (DESIGN §10), cells included.
    assert measured / 50_000 < 200
    windows.pop(60_000)
    assert windows.estimated_bytes == 0
