"""WAL record encoding: one frame per ingest request.

Frame = u32 little-endian payload length ‖ u32 CRC-32 of the payload ‖ payload, where the payload
is the JSON array `[3, arrival_window_ms, region, [observation, ...], {reason: count},
[[window_start_ms, network_key], ...]]` and an observation is the positional array of
`Observation`'s fields. Positional arrays keep frames small; the CRC lets replay tell a torn or
corrupt tail from a good record. The network keys are keyed hashes under the window salt (P8).

Format 2 is format 3 without the network keys (`[2, arrival_window_ms, region, observations,
rejected]`); its records decode with no network keys, each contributor its own network.

Format 1 (relay 0.1 before the fast ingest path) had no format number: `[arrival_window_ms,
[observation, ...], {reason: count}]`, each observation with its region and raw timings in ms.
Replay still reads it, so an upgrade loses no acknowledged event.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any

import orjson

from relay.aggregate.observation import IngestRecord, Observation, ms_bucket, throughput_bucket

__all__ = ["HEADER", "CorruptRecord", "decode_payload", "encode", "iter_frames"]

HEADER = struct.Struct("<II")
MAX_PAYLOAD = 64 * 1024 * 1024
FORMAT = 3
_FIELDS = 12  # of an Observation


class CorruptRecord(Exception):
    """A frame whose length or checksum does not hold: a torn write or damaged disk."""


def encode(record: IngestRecord) -> bytes:
    payload = orjson.dumps(
        [
            FORMAT,
            record.arrival_window_ms,
            record.region,
            record.observations,
            dict(record.rejected),
            # Pairs, not an object: JSON object keys are strings.
            list(record.networks.items()),
        ]
    )
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> IngestRecord:
    try:
        fields = orjson.loads(payload)
        if len(fields) == 3:
            return _format_1(*fields)
        version, arrival, region, observations, rejected, *rest = fields
        if (version, len(rest)) not in ((2, 0), (FORMAT, 1)):
            raise ValueError(f"record format {version!r} with {len(fields)} fields")
        networks = {window: key for window, key in rest[0]} if rest else {}
        converted = [tuple(observation) for observation in observations]
        if any(len(observation) != _FIELDS for observation in converted):
            raise ValueError("an observation of the wrong shape")
        return IngestRecord(
            arrival_window_ms=arrival,
            region=region,
            observations=converted,
            rejected=rejected,
            networks=networks,
        )
    except (orjson.JSONDecodeError, TypeError, ValueError, IndexError) as exc:
        raise CorruptRecord(f"undecodable record: {exc}") from None


def _format_1(
    arrival: int, observations: list[list[Any]], rejected: dict[str, int]
) -> IngestRecord:
    # All observations of a record came from one request, so they share its region.
    region = observations[0][4] if observations else "ZZ"
    converted: list[Observation] = []
    for (
        window,
        contributor,
        role,
        node_id,
        _,
        kind,
        name,
        op,
        asset,
        ttfb,
        duration,
        size,
    ) in observations:
        converted.append(
            (
                window,
                contributor,
                role,
                node_id,
                kind,
                name,
                op,
                asset,
                ms_bucket(ttfb),
                ms_bucket(duration),
                size,
                throughput_bucket(size, duration),
            )
        )
    return IngestRecord(arrival, region, converted, rejected, {})


def iter_frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (end offset, payload) per intact frame; raise CorruptRecord at the first bad one."""
    offset = 0
    size = len(data)
    while offset < size:
        if size - offset < HEADER.size:
            raise CorruptRecord(f"torn frame header at offset {offset}")
        length, crc = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        end = start + length
        if length > MAX_PAYLOAD or end > size:
            raise CorruptRecord(f"frame at offset {offset} runs past the end of the segment")
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            raise CorruptRecord(f"checksum mismatch at offset {offset}")
        yield end, payload
        offset = end
