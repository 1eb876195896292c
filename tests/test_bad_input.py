"""DESIGN §3.4 (pinned): every kind of bad input against the real server on a real socket.

Each refusal is checked for its status, `Content-Type: application/problem+json` and an RFC 9457
body whose `type` names what is wrong; a refused request must leave no trace (the WAL does not
grow, no file appears in it). Partial acceptance, timestamp bounds, sendBeacon bodies and gzip
bodies are checked for what they must accept.
"""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDictProxy

from relay.serve import OperatorRelay
from relay.sinks.store import EmbeddedStore
from tests import atlas_client
from tests.conftest import T0_MS, RunningRelay, break_wal, request_event, signal_event

# Atlas events as the real client builds them (tests/atlas_client.py).
ATLAS_SLOW = atlas_client.playback_is_slow(
    atlas_client.asset_url(atlas_client.DISTRIBUTORS[0], "8812"),
    "3301",
    "8812",
    user=None,
    title="t",
)
ATLAS_DOWNLOAD = atlas_client.distributor_response_time(
    atlas_client.asset_url(atlas_client.DISTRIBUTORS[1], "48451"),
    "48451",
    "thumbnail",
    fetch_start=10.0,
    response_start=40.0,
    response_end=300.0,
    decoded_body_size=48_000,
    user=atlas_client.logged_in(1),
)
NATIVE = "/v1/events"
ATLAS = "/v1/atlas/events"
PROBLEM_PREFIX = "urn:relay:problem:"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def media_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        return orjson.loads(self.body)


async def send(
    relay: RunningRelay,
    path: str,
    data: bytes | AsyncIterator[bytes] | None = None,
    *,
    method: str = "POST",
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> Answer:
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    async with relay.http.request(method, relay.url(path), data=data, headers=all_headers) as resp:
        return Answer(resp.status, resp.headers, await resp.read())


def body_of(payload: Any) -> bytes:
    return orjson.dumps(payload)


def assert_problem(answer: Answer, status: int, slug: str) -> dict[str, Any]:
    """An RFC 9457 problem with this status whose type names `slug`."""
    assert answer.status == status, answer.body
    assert answer.media_type == "application/problem+json", answer.headers
    problem = answer.json()
    assert isinstance(problem, dict)
    assert problem["type"] == PROBLEM_PREFIX + slug
    assert problem["status"] == status
    assert isinstance(problem["title"], str) and problem["title"].strip()
    return problem


def assert_retry_after(answer: Answer) -> None:
    retry_after = answer.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) > 0


def wal_files(relay: OperatorRelay) -> dict[str, int]:
    directory: Path = relay.settings.data_dir / "wal"
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir())}


@contextmanager
def leaves_no_trace(relay: OperatorRelay) -> Iterator[None]:
    """What happens inside adds nothing to the WAL: no bytes, no segment, no salt file."""
    size, files = relay.wal.size_bytes, wal_files(relay)
    yield
    assert relay.wal.size_bytes == size
    assert wal_files(relay) == files


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


async def metric_value(relay: RunningRelay, name: str, labels: str) -> float:
    async with relay.http.get(relay.operator_url("/metrics")) as resp:
        assert resp.status == 200
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def operator_readyz(relay: RunningRelay) -> Answer:
    async with relay.http.get(relay.operator_url("/readyz")) as resp:
        return Answer(resp.status, resp.headers, await resp.read())


def stored_batches(data_dir: Path) -> list[dict[str, Any]]:
    store = EmbeddedStore(data_dir / "store.sqlite", readonly=True)
    try:
        return [d.source for d in store.documents() if "att" not in d.source]
    finally:
        store.close()


# -- 400: invalid JSON, wrong envelope ------------------------------------------------------------

INVALID_JSON = [b"{", b"not json", b'{"events": [}', b'{"events": []} trailing', b"", b"\xff\xfe"]


@pytest.mark.parametrize("path", [NATIVE, ATLAS])
@pytest.mark.parametrize("raw", INVALID_JSON)
async def test_invalid_json_is_400(relay_server: RunningRelay, path: str, raw: bytes) -> None:
    with leaves_no_trace(relay_server.relay):
        answer = await send(relay_server, path, raw)
    assert_problem(answer, 400, "invalid-json")


WRONG_ENVELOPES: list[Any] = [
    [],
    [request_event()],
    {},
    {"event": [request_event()]},
    {"events": {"0": request_event()}},
    {"events": "request"},
    {"events": None},
    "events",
    None,
    42,
]


@pytest.mark.parametrize("path", [NATIVE, ATLAS])
@pytest.mark.parametrize("payload", WRONG_ENVELOPES, ids=repr)
async def test_wrong_envelope_is_400(relay_server: RunningRelay, path: str, payload: Any) -> None:
    with leaves_no_trace(relay_server.relay):
        answer = await send(relay_server, path, body_of(payload))
    problem = assert_problem(answer, 400, "invalid-envelope")
    assert "events" in problem["title"] + problem.get("detail", "")


async def test_unknown_top_level_field_is_400_on_native_only(relay_server: RunningRelay) -> None:
    marker = "top-level-value-7f3a"
    payload = {"events": [request_event()], "user": {"accountId": marker}}
    with leaves_no_trace(relay_server.relay):
        answer = await send(relay_server, NATIVE, body_of(payload))
    assert_problem(answer, 400, "invalid-envelope")
    assert marker.encode() not in answer.body  # an error never echoes input (P1)
    # Atlas sends more than relay reads; its envelope is taken as it is (DESIGN §3.2).
    atlas = {"events": [ATLAS_SLOW], "meta": marker}
    answer = await send(relay_server, ATLAS, body_of(atlas))
    assert answer.status == 202
    assert answer.json()["accepted"] == 1


# -- 413: body over the limit, gzip bomb, too many events ------------------------------------------

LIMIT = 4096


def padded_payload(size: int) -> bytes:
    """A valid native payload of at least `size` bytes."""
    events: list[dict[str, Any]] = []
    while len(body_of({"events": events})) < size:
        events.append(request_event(client=f"client-{len(events):04d}", ttfb_ms=12.5))
    return body_of({"events": events})


async def test_body_over_limit_with_content_length_is_413(
    start_relay: Callable[..., Any],
) -> None:
    running: RunningRelay = await start_relay(ingest={"max_body_bytes": LIMIT})
    small = padded_payload(LIMIT - 200)
    assert len(small) <= LIMIT
    assert (await send(running, NATIVE, small)).status == 202
    big = padded_payload(2 * LIMIT)
    with leaves_no_trace(running.relay):
        answer = await send(running, NATIVE, big)
    problem = assert_problem(answer, 413, "body-too-large")
    assert str(LIMIT) in problem.get("detail", "")


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_body_over_limit_without_content_length_is_413(
    start_relay: Callable[..., Any],
) -> None:
    running: RunningRelay = await start_relay(ingest={"max_body_bytes": LIMIT})
    small = padded_payload(LIMIT - 200)
    answer = await send(running, NATIVE, chunks_of(small, 512))
    assert answer.status == 202, answer.body  # chunked uploads themselves are fine
    big = padded_payload(16 * LIMIT)
    with leaves_no_trace(running.relay):
        answer = await send(running, NATIVE, chunks_of(big, 1024))
    assert_problem(answer, 413, "body-too-large")


async def test_decompressed_size_is_what_counts(start_relay: Callable[..., Any]) -> None:
    running: RunningRelay = await start_relay(ingest={"max_body_bytes": LIMIT})
    big = padded_payload(4 * LIMIT)
    compressed = gzipped(big)
    assert len(compressed) < LIMIT  # small on the wire, too big once inflated
    with leaves_no_trace(running.relay):
        answer = await send(running, NATIVE, compressed, headers={"Content-Encoding": "gzip"})
    assert_problem(answer, 413, "body-too-large")


def gzip_bomb(inflated_bytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(MIB)
    parts = [compressor.compress(block) for _ in range(inflated_bytes // MIB)]
    parts.append(compressor.flush())
    return b"".join(parts)


async def test_gzip_bomb_is_413_quickly_within_bounded_memory(
    relay_server: RunningRelay,
) -> None:
    bomb = gzip_bomb(50 * MIB)
    assert len(bomb) < 100 * 1024  # a few tens of KB on the wire
    limit = relay_server.relay.settings.ingest.max_body_bytes
    assert limit == MIB
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with leaves_no_trace(relay_server.relay):
            answer = await send(relay_server, NATIVE, bomb, headers={"Content-Encoding": "gzip"})
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_problem(answer, 413, "body-too-large")
    assert elapsed < 2.0
    # Inflating it all would take 50 MiB; the relay stops after the 1 MiB limit.
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB while refusing a gzip bomb"


async def test_too_many_events_is_413(start_relay: Callable[..., Any]) -> None:
    running: RunningRelay = await start_relay(ingest={"max_events_per_request": 5})
    events = [request_event(client=f"c{i}") for i in range(6)]
    with leaves_no_trace(running.relay):
        answer = await send(running, NATIVE, body_of({"events": events}))
    problem = assert_problem(answer, 413, "too-many-events")
    assert "5" in problem.get("detail", "")
    # Atlas neither caps nor retries: its batch is kept up to the cap, the rest counted.
    atlas = [{"type": "playback-is-slow", "resolvedUrl": "https://d1.example/a/1"}] * 6
    answer = await send(running, ATLAS, body_of({"events": atlas}))
    assert answer.status == 202
    assert (answer.json()["accepted"], answer.json()["rejected"]) == (5, 1)
    answer = await send(running, NATIVE, body_of({"events": events[:5]}))
    assert answer.status == 202
    assert answer.json()["accepted"] == 5


async def test_default_event_limit_is_1000(relay_server: RunningRelay) -> None:
    events = [signal_event(client=f"c{i % 40}") for i in range(1001)]
    with leaves_no_trace(relay_server.relay):
        answer = await send(relay_server, NATIVE, body_of({"events": events}))
    assert_problem(answer, 413, "too-many-events")
    answer = await send(relay_server, NATIVE, body_of({"events": events[:1000]}))
    assert answer.status == 202
    assert answer.json()["accepted"] == 1000


# -- 400 / 415: encodings and content types -------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"definitely not gzip",
        gzipped(body_of({"events": [request_event()]}))[:-12],  # truncated
        gzipped(body_of({"events": [request_event()]}))[:10] + b"\x00" * 40,  # corrupt stream
    ],
    ids=["garbage", "truncated", "corrupt"],
)
async def test_invalid_gzip_is_400(relay_server: RunningRelay, raw: bytes) -> None:
    with leaves_no_trace(relay_server.relay):
        answer = await send(relay_server, NATIVE, raw, headers={"Content-Encoding": "gzip"})
    assert_problem(answer, 400, "bad-gzip")


async def test_gzip_of_invalid_json_is_400_invalid_json(relay_server: RunningRelay) -> None:
    with leaves_no_trace(relay_server.relay):
        answer = await send(
            relay_server, NATIVE, gzipped(b"{nope"), headers={"Content-Encoding": "gzip"}
        )
    assert_problem(answer, 400, "invalid-json")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/octet-stream",
        "text/html",
    ],
)
@pytest.mark.parametrize("path", [NATIVE, ATLAS])
async def test_unsupported_content_type_is_415(
    relay_server: RunningRelay, path: str, content_type: str
) -> None:
    with leaves_no_trace(relay_server.relay):
        answer = await send(
            relay_server, path, body_of({"events": [request_event()]}), content_type=content_type
        )
    assert_problem(answer, 415, "unsupported-media-type")


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "compress", "gzip, br"])
async def test_unsupported_content_encoding_is_415(
    relay_server: RunningRelay, encoding: str
) -> None:
    raw = body_of({"events": [request_event()]})
    if encoding == "deflate":
        raw = zlib.compress(raw)
    with leaves_no_trace(relay_server.relay):
        answer = await send(relay_server, NATIVE, raw, headers={"Content-Encoding": encoding})
    assert_problem(answer, 415, "unsupported-encoding")


# -- 404 / 405 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("POST", "/v1/event"), ("POST", "/v1/events/extra"), ("GET", "/v2/config")],
)
async def test_unknown_route_is_404_problem(
    relay_server: RunningRelay, method: str, path: str
) -> None:
    with leaves_no_trace(relay_server.relay):
        answer = await send(relay_server, method=method, path=path, data=b"{}")
    assert_problem(answer, 404, "not-found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", NATIVE, "POST"),
        ("PUT", NATIVE, "POST"),
        ("DELETE", ATLAS, "POST"),
        ("POST", "/v1/config", "GET"),
        ("PATCH", "/v1/operator", "GET"),
    ],
)
async def test_wrong_method_is_405_problem(
    relay_server: RunningRelay, method: str, path: str, allowed: str
) -> None:
    with leaves_no_trace(relay_server.relay):
        answer = await send(relay_server, method=method, path=path, data=b"{}")
    assert_problem(answer, 405, "method-not-allowed")
    allow = {m.strip() for m in answer.headers.get("Allow", "").split(",")}
    assert allowed in allow  # RFC 9110: a 405 names the methods that work


# -- 503: shutting down, WAL not writable ----------------------------------------------------------


async def test_shutting_down_is_503_with_retry_after(relay_server: RunningRelay) -> None:
    relay = relay_server.relay
    payload = body_of({"events": [request_event()]})
    relay.shutting_down = True
    try:
        with leaves_no_trace(relay):
            native = await send(relay_server, NATIVE, payload)
            atlas = await send(
                relay_server, ATLAS, body_of({"events": [{"type": "playback-is-slow"}]})
            )
        ready = await operator_readyz(relay_server)
    finally:
        relay.shutting_down = False
    for answer in (native, atlas):
        assert_problem(answer, 503, "shutting-down")
        assert_retry_after(answer)
    assert ready.status == 503
    assert ready.json()["checks"]["accepting"] is False
    # Back to accepting: the 503 came from the flag, not from a broken relay.
    assert (await send(relay_server, NATIVE, payload)).status == 202


async def test_wal_not_writable_is_503_and_not_ready(relay_server: RunningRelay) -> None:
    relay = relay_server.relay
    payload = body_of({"events": [request_event(), request_event(client="c2")]})
    assert (await send(relay_server, "/readyz", method="GET", content_type=None)).status == 200
    accepted_before = await metric_value(
        relay_server, "relay_events_accepted_total", 'endpoint="native"'
    )
    await break_wal(relay)  # a real write failure: ENOSPC
    windows_before = [(s, relay.windows.window(s).accepted) for s in relay.windows.starts()]
    with leaves_no_trace(relay):
        answer = await send(relay_server, NATIVE, payload)
    ready = await operator_readyz(relay_server)
    live = await send(relay_server, "/healthz", method="GET", content_type=None)
    assert_problem(answer, 503, "wal-unavailable")
    assert_retry_after(answer)
    assert b"No space" not in answer.body  # the internal reason stays internal
    assert ready.status == 503
    assert ready.json()["checks"]["wal_writable"] is False
    assert live.status == 200
    # Nothing half-written: nothing counted as accepted, nothing in the windows.
    assert (
        await metric_value(relay_server, "relay_events_accepted_total", 'endpoint="native"')
        == accepted_before
    )
    assert [(s, relay.windows.window(s).accepted) for s in relay.windows.starts()] == windows_before


# -- 202: partial acceptance, timestamps, sendBeacon, gzip -----------------------------------------


async def test_partial_acceptance_names_each_rejected_event(
    relay_server: RunningRelay, data_dir: Path
) -> None:
    marker = "partial-marker-5c1e"
    events: list[Any] = [
        request_event(client="c1", ttfb_ms=40),
        {"kind": "request", "outcome": "ok"},  # no node
        signal_event(client="c2"),
        {**request_event(), "user": marker},  # unknown field
        request_event(ttfb_ms=-1),
        request_event(node="bad id/with slash"),
        request_event(outcome="teapot"),
        "not an object",
        request_event(client="c3", ts=f"{marker}"),  # not a timestamp
    ]
    answer = await send(relay_server, NATIVE, body_of({"events": events}))
    assert answer.status == 202
    assert answer.media_type == "application/json"
    body = answer.json()
    assert body["accepted"] == 2
    assert body["rejected"] == 7
    errors = body["errors"]
    assert [e["index"] for e in errors] == [1, 3, 4, 5, 6, 7, 8]
    for error in errors:
        assert set(error) == {"index", "field", "reason"}
        assert isinstance(error["reason"], str) and error["reason"]
    fields = {e["index"]: e["field"] for e in errors}
    assert fields[1] == "node"
    assert fields[3] == "user"
    assert fields[4] == "ttfb_ms"
    assert fields[5] == "node.id"
    assert fields[6] == "outcome"
    assert fields[8] == "ts"
    assert marker.encode() not in answer.body  # errors name fields, never echo values (P1)

    # Counted: the batch of this window says 2 accepted, 7 invalid.
    await relay_server.seal_after(70)
    await relay_server.relay.shipper.ship_pending()
    (batch,) = stored_batches(data_dir)
    assert batch["stats"]["accepted"] == 2
    assert batch["stats"]["invalid"] == 7
    assert batch["stats"]["rejected"] == 7


async def test_atlas_partial_acceptance(relay_server: RunningRelay) -> None:
    events: list[Any] = [
        ATLAS_DOWNLOAD,
        {k: v for k, v in ATLAS_SLOW.items() if k != "resolvedUrl"},  # names no distributor
        atlas_client.not_infrastructure(None)[3],  # nft-minting-failed: dropped and counted
        {"no": "type"},
    ]
    answer = await send(relay_server, ATLAS, body_of({"events": events}))
    assert answer.status == 202
    body = answer.json()
    assert body["accepted"] == 1
    assert body["rejected"] == 2
    assert body["unsupported"] == 1
    assert sorted(e["index"] for e in body["errors"]) == [1, 3]
    assert {e["field"] for e in body["errors"] if e["index"] == 3} == {"type"}


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


async def test_timestamps_too_old_too_new_or_sealed_are_rejected_and_counted(
    relay_server: RunningRelay, data_dir: Path
) -> None:
    relay = relay_server.relay
    first = await send(relay_server, NATIVE, body_of({"events": [request_event(client="c0")]}))
    assert first.status == 202
    assert await relay_server.seal_after(70) == 1  # window [T0, T0+60s) is sealed
    now = relay_server.clock.ms
    window = relay.settings.window
    events = [
        request_event(client="c1", ts=now - window.max_past_seconds * 1000 - 1000),
        request_event(client="c1", ts=now + window.max_future_seconds * 1000 + 5000),
        request_event(client="c1", ts=T0_MS + 5000),  # in the sealed window
        request_event(client="c1", ts=iso(T0_MS + 5000)),  # the same, as RFC 3339
        request_event(client="c1", ts=now - 2000),
        request_event(client="c1", ts=iso(now + 1000)),
    ]
    answer = await send(relay_server, NATIVE, body_of({"events": events}))
    assert answer.status == 202
    body = answer.json()
    assert body["accepted"] == 2
    assert body["rejected"] == 4
    errors = body["errors"]
    assert [e["index"] for e in errors] == [0, 1, 2, 3]
    assert all(e["field"] == "ts" for e in errors)
    reasons = [e["reason"] for e in errors]
    assert len({reasons[0], reasons[1], reasons[2]}) == 3  # each says its own reason
    assert reasons[2] == reasons[3]

    for reason, count in {"too_old": 1, "too_new": 1, "late": 2}.items():
        value = await metric_value(
            relay_server, "relay_events_rejected_total", f'reason="{reason}"'
        )
        assert value == count, reason
    assert await relay_server.seal_after(60) == 1
    await relay.shipper.ship_pending()
    batches = {b["window_start_ms"]: b for b in stored_batches(data_dir)}
    stats = batches[T0_MS + 60_000]["stats"]
    assert (stats["too_old"], stats["too_new"], stats["late"]) == (1, 1, 2)
    assert stats["accepted"] == 2
    assert batches[T0_MS]["stats"]["late"] == 0


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "text/plain"])
async def test_send_beacon_text_plain_is_accepted(
    relay_server: RunningRelay, content_type: str
) -> None:
    before = relay_server.relay.wal.size_bytes
    payload = body_of({"events": [request_event(), signal_event(client="c2")]})
    answer = await send(relay_server, NATIVE, payload, content_type=content_type)
    assert answer.status == 202
    assert answer.json() == {"accepted": 2, "rejected": 0, "errors": []}
    atlas = body_of({"events": [ATLAS_SLOW]})
    answer = await send(relay_server, ATLAS, atlas, content_type=content_type)
    assert answer.status == 202
    assert answer.json()["accepted"] == 1
    assert relay_server.relay.wal.size_bytes > before


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "identity"])
async def test_compressed_bodies_are_accepted(relay_server: RunningRelay, encoding: str) -> None:
    before = relay_server.relay.wal.size_bytes
    native = body_of({"events": [request_event(client=f"c{i}") for i in range(3)]})
    atlas = body_of(
        {
            "events": [
                atlas_client.upload_error("5521", "3", "Network Error", user=None),
                atlas_client.bucket_blacklisted("3", user=None),
            ]
        }
    )
    if encoding != "identity":
        native, atlas = gzipped(native), gzipped(atlas)
    headers = {"Content-Encoding": encoding}
    answer = await send(relay_server, NATIVE, native, headers=headers)
    assert answer.status == 202, answer.body
    assert answer.json()["accepted"] == 3
    answer = await send(relay_server, ATLAS, atlas, headers=headers)
    assert answer.status == 202, answer.body
    assert answer.json()["accepted"] == 2
    assert relay_server.relay.wal.size_bytes > before


# -- property: arbitrary bodies never get a 5xx ----------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
native_like = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["request", "signal"]) | json_scalars,
        "node": st.fixed_dictionaries(
            {}, optional={"role": st.sampled_from(["distributor", "storage"]), "id": st.text()}
        )
        | json_values,
        "outcome": st.sampled_from(["ok", "timeout", "http_5xx"]) | json_scalars,
        "signal": st.sampled_from(["blacklisted", "playback_slow"]) | json_scalars,
        "ttfb_ms": json_scalars,
        "bytes": json_scalars,
        "ts": st.integers(min_value=-(2**66), max_value=2**66) | st.text(max_size=40),
        "client": json_scalars,
        "extra": json_values,
    },
)
atlas_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["distributor-response-error", "playback-is-slow", "x"])
        | json_scalars,
        "distributorUrl": json_scalars,
        "resolvedUrl": json_scalars,
        "distributorId": json_scalars,
        "storageOperatorId": json_scalars,
        "storageBagId": json_scalars,
        "initialResponseTime": json_scalars,
        "error": json_scalars,
        "user": st.dictionaries(st.sampled_from(["accountId", "memberId"]), json_scalars)
        | json_values,
    },
)
json_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"events": st.lists(native_like | atlas_like | json_values, max_size=6)}),
).map(lambda value: json.dumps(value).encode())
bodies = st.one_of(json_bodies, st.binary(max_size=256))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=bodies,
    path=st.sampled_from([NATIVE, ATLAS]),
    content_type=st.sampled_from(["application/json", "text/plain; charset=utf-8"]),
    encoding=st.sampled_from(["identity", "gzip", "gzip-claimed"]),
)
async def test_arbitrary_bodies_never_get_a_5xx(
    relay_server: RunningRelay, raw: bytes, path: str, content_type: str, encoding: str
) -> None:
    # gzip-claimed: says gzip, sends the raw bytes.
    headers = {} if encoding == "identity" else {"Content-Encoding": "gzip"}
    data = gzipped(raw) if encoding == "gzip" else raw
    answer = await send(relay_server, path, data, content_type=content_type, headers=headers)
    assert answer.status < 500, answer.body
    if answer.status == 202:
        assert answer.media_type == "application/json"
        body = answer.json()
        events = orjson.loads(raw)["events"]
        counted = body["accepted"] + body["rejected"] + body.get("unsupported", 0)
        assert counted == len(events)
        assert len(body["errors"]) == body["rejected"]
    else:
        assert answer.status in (400, 413), answer.body
        assert_problem(answer, answer.status, answer.json()["type"][len(PROBLEM_PREFIX) :])
