"""Guard against gross ingest slowdowns: the pipeline's cost relative to parsing alone.

Timing is relative (the same bodies, interleaved, medians), never absolute, so a slow or busy
machine does not fail it; a 5x regression in the per-event path does. `relay bench` measures the
real figures over HTTP.
"""

from __future__ import annotations

import statistics
import time

import orjson

from relay.aggregate.cells import OpenWindows
from relay.aggregate.observation import IngestRecord
from relay.bench.bodies import atlas_bodies, with_new_user
from relay.ingest.atlas import scrub_atlas
from relay.ingest.decode import decode_atlas
from relay.ingest.scrub import RequestContext
from relay.privacy.contributor import source_network
from relay.wal import codec
from tests import atlas_client
from tests.conftest import memory_admission

NOW_MS = 1_767_571_200_000 + 1_000
# Measured ratio on the development machine: ~3 (msgspec decoding, bucketed tuples, inline
# counting). A regression that multiplies the per-event cost by four or more crosses this; noise
# does not.
MAX_RATIO = 12.0


def test_pipeline_cost_relative_to_parsing() -> None:
    bodies = atlas_bodies(40)
    admission = memory_admission(window_ms=300_000)
    admission.closed_until_ms = 0
    windows = OpenWindows(max_events_per_contributor=50)
    windows.sealed_until_ms = 0
    ctx = RequestContext(NOW_MS, "EU", b"n\x00bench", source_network("192.0.2.1"))

    def parse_only() -> None:
        for body in bodies:
            orjson.loads(body)

    def pipeline() -> None:
        for body in bodies:
            result = scrub_atlas(decode_atlas(body, 1000).events, ctx, admission)
            networks = admission.networks(result.observations, ctx.source_network)
            record = IngestRecord(
                NOW_MS - NOW_MS % 300_000, "EU", result.observations, {}, networks
            )
            codec.encode(record)
            windows.apply(record)

    ratios = []
    for _ in range(7):
        started = time.perf_counter()
        parse_only()
        parsed = time.perf_counter() - started
        started = time.perf_counter()
        pipeline()
        ratios.append((time.perf_counter() - started) / parsed)
    assert statistics.median(ratios) < MAX_RATIO, ratios


def test_each_bench_request_is_a_new_atlas_user() -> None:
    # The bench's traffic model: a body keeps its size and events, its user changes per request.
    (body,) = atlas_bodies(1)
    first, second = with_new_user(body, 1), with_new_user(body, 2)
    assert len(first) == len(second) == len(body)
    users = [
        {event["user"]["accountId"] for event in orjson.loads(b)["events"]}
        for b in (body, first, second)
    ]
    assert all(len(u) == 1 for u in users)  # one user per body, as Atlas sends it
    assert len(set().union(*users)) == 3


def _shapes() -> dict[str, list[tuple[str, ...]]]:
    """The key sequences tests/atlas_client.py (the real client's builders) produce, by type."""
    user = atlas_client.logged_in(1)
    events = [
        *atlas_client.performance_batch(user, 7),
        *atlas_client.error_batch(user),
        *atlas_client.error_batch(user, seed=1),
        *atlas_client.not_infrastructure(user),
    ]
    shapes: dict[str, list[tuple[str, ...]]] = {}
    for event in events:
        shapes.setdefault(event["type"], []).append(tuple(event))
    return shapes


def test_bench_bodies_have_the_real_client_shapes() -> None:
    # The bench must parse what Atlas sends: every event's keys, in order, are those the real
    # client's code path produces for its type (no invented field, none missing).
    shapes = _shapes()
    seen: set[str] = set()
    for body in atlas_bodies(20):
        events = orjson.loads(body)["events"]
        assert len({orjson.dumps(e["user"]) for e in events}) == 1
        for event in events:
            assert tuple(event) in shapes[event["type"]], event["type"]
            assert set(event["user"]) == {"accountId", "memberId", "channelId"}
            seen.add(event["type"])
    assert {"distributor-response-time", "playback-wrong-codec", "asset-upload-failed"} <= seen
