"""The aggregator's apply is total: any observation that passed validation is counted."""

from __future__ import annotations

import tracemalloc

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.aggregate.cells import OpenWindows
from relay.aggregate.observation import IngestRecord
from relay.ingest.decode import decode_native
from relay.ingest.models import MAX_BYTES, MAX_DURATION_MS, MAX_TTFB_MS
from relay.ingest.native import scrub_native
from relay.ingest.scrub import RequestContext
from tests.conftest import memory_admission, observation, request_event


@settings(max_examples=300, deadline=None)
@given(
    ttfb=st.none() | st.floats(0, MAX_TTFB_MS),
    duration=st.none() | st.floats(0, MAX_DURATION_MS),
    size=st.none() | st.integers(0, MAX_BYTES - 1),
)
def test_any_valid_request_is_counted(
    ttfb: float | None, duration: float | None, size: int | None
) -> None:
    # Scrub and apply are total: no value the schema admits makes either raise.
    body = orjson.dumps({"events": [request_event(ttfb_ms=ttfb, duration_ms=duration, bytes=size)]})
    ctx = RequestContext(
        now_ms=60_000, region="EU", network_material=b"n\x00test", source_network=b"s\x00test"
    )
    result = scrub_native(decode_native(body, 1000).events, ctx, memory_admission())
    windows = OpenWindows(max_events_per_contributor=50)
    windows.sealed_until_ms = 0
    windows.apply(IngestRecord(60_000, "EU", result.observations, {}, {}))
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
                "EU",
                [
                    observation(
                        chunk * 10_000 + n,
                        f"d{n % 50}",
                        window_start_ms=60_000,
                        ttfb_ms=n % 900,
                        duration_ms=n % 9000,
                        bytes=n,
                    )
                    for n in range(10_000)
                ],
                {},
                {},  # no network keys: each contributor is its own network, the costliest case
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
