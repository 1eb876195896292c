"""WAL frames: records round-trip, damage is detected, and an older relay's records still replay."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.aggregate.histogram import MAX_INDEX
from relay.aggregate.observation import IngestRecord, ms_bucket, throughput_bucket
from relay.wal import codec

_buckets = st.none() | st.integers(0, MAX_INDEX)
_observations = st.tuples(
    st.integers(0, 2**45),
    st.integers(0, 2**64 - 1),
    st.sampled_from(["distributor", "storage"]),
    st.text(min_size=1, max_size=8),
    st.sampled_from(["request", "signal"]),
    st.sampled_from(["ok", "timeout", "blacklisted"]),
    st.sampled_from([None, "download", "upload"]),
    st.sampled_from([None, "video", "image"]),
    _buckets,
    _buckets,
    st.none() | st.integers(0, 2**40 - 1),
    _buckets,
)


@settings(max_examples=200, deadline=None)
@given(
    arrival=st.integers(0, 2**45),
    region=st.sampled_from(["EU", "NA", "ZZ"]),
    observations=st.lists(_observations, max_size=20),
    rejected=st.dictionaries(st.sampled_from(["invalid", "late", "too_old"]), st.integers(1, 99)),
    networks=st.dictionaries(st.integers(0, 2**45), st.integers(0, 2**64 - 1), max_size=3),
)
def test_records_round_trip(
    arrival: int,
    region: str,
    observations: list[Any],
    rejected: dict[str, int],
    networks: dict[int, int],
) -> None:
    record = IngestRecord(arrival, region, observations, rejected, networks)
    ((_, payload),) = codec.iter_frames(codec.encode(record))
    assert codec.decode_payload(payload) == record


def test_a_torn_or_altered_frame_is_reported() -> None:
    frame = codec.encode(IngestRecord(60_000, "EU", [], {"invalid": 1}, {}))
    with pytest.raises(codec.CorruptRecord, match="past the end"):
        list(codec.iter_frames(frame[:-1]))
    altered = frame[:-2] + bytes([frame[-2] ^ 1]) + frame[-1:]
    with pytest.raises(codec.CorruptRecord, match="checksum"):
        list(codec.iter_frames(altered))


def _frame(payload: bytes) -> bytes:
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def test_format_1_records_replay_with_their_timings_bucketed() -> None:
    # As relay 0.1 wrote them: no format number, a region and raw ms timings per observation.
    request = [60_000, 7, "distributor", "d1", "EU", "request", "ok", "download", "video"]
    signal = [60_000, 7, "distributor", "d1", "EU", "signal", "playback_slow", None, None]
    old = [60_000, [[*request, 85.5, 1200.0, 50_000], [*signal, None, None, None]], {"invalid": 2}]
    ((_, payload),) = codec.iter_frames(_frame(orjson.dumps(old)))
    record = codec.decode_payload(payload)
    assert record.region == "EU"
    assert record.rejected == {"invalid": 2}
    timings = (ms_bucket(85.5), ms_bucket(1200.0), 50_000, throughput_bucket(50_000, 1200.0))
    assert list(record.observations) == [
        (60_000, 7, "distributor", "d1", "request", "ok", "download", "video", *timings),
        (60_000, 7, "distributor", "d1", "signal", "playback_slow", None, None, *[None] * 4),
    ]


def test_format_2_records_replay_without_network_keys() -> None:
    # As relay wrote them before source networks: each contributor is then its own network.
    request = [60_000, 7, "distributor", "d1", "request", "ok", "download", None, 3, 4, 10, 5]
    ((_, payload),) = codec.iter_frames(
        _frame(orjson.dumps([2, 60_000, "EU", [request], {"invalid": 1}]))
    )
    assert codec.decode_payload(payload) == IngestRecord(
        60_000, "EU", [tuple(request)], {"invalid": 1}, {}
    )


@pytest.mark.parametrize(
    "value",
    [[4, 60_000, "EU", [], {}, []], [3, 60_000, "EU", [], {}], [2, 60_000, "EU", [], {}, []]],
)
def test_a_record_of_an_unknown_format_is_corrupt(value: Any) -> None:
    ((_, payload),) = codec.iter_frames(_frame(orjson.dumps(value)))
    with pytest.raises(codec.CorruptRecord, match="format"):
        codec.decode_payload(payload)


@pytest.mark.parametrize(
    "value",
    [
        7,
        "x",
        [],
        [60_000, [[]], {}],
        [60_000, [[1, 2]], {}],
        [2, 60_000, "EU", [[1]], {}],
        [3, 60_000, "EU", [], {}, [[1, 2, 3]]],
        [3, 60_000, "EU", [], {}, 5],
    ],
)
def test_a_malformed_record_with_a_good_checksum_is_corrupt(value: Any) -> None:
    # Replay sets the segment aside on CorruptRecord; any other exception would stop the relay.
    ((_, payload),) = codec.iter_frames(_frame(orjson.dumps(value)))
    with pytest.raises(codec.CorruptRecord):
        codec.decode_payload(payload)
