"""Input schemas (DESIGN §3.1, §3.2, pinned). These models are the privacy boundary.

The native schema forbids unknown fields: anything an app sends must be named here, so a new
identifier cannot slip through by accident. The Atlas models describe only the subset relay reads;
everything else Atlas sends (user ids, content ids, URLs, free text) is ignored by the handler and
never copied anywhere. `schemas/` is generated from these models (`python -m relay.schemagen`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from relay.core.vocabulary import Asset, NodeRef, Op, Outcome, Signal

__all__ = [
    "ATLAS_ERROR_EXAMPLE",
    "ATLAS_PERFORMANCE_EXAMPLE",
    "MAX_BYTES",
    "MAX_DURATION_MS",
    "MAX_EVENTS",
    "MAX_TTFB_MS",
    "SCHEMA_VERSION",
    "AtlasEvent",
    "AtlasPayload",
    "AtlasUser",
    "NativeEvent",
    "NativePayload",
    "NativeRequestEvent",
    "NativeSignalEvent",
]

#: Version of the native event schema; carried in every batch header and in /v1/config.
SCHEMA_VERSION = 1

# Events per request as the schema states it (the default); the handler enforces
# `ingest.max_events_per_request`, and a longer body only skips the fast decoder.
MAX_EVENTS = 1000
MAX_TTFB_MS = 600_000
MAX_DURATION_MS = 3_600_000
MAX_BYTES = 2**40


def _epoch_ms(value: object) -> int | None:
    """`ts` as epoch milliseconds: given so, or an RFC 3339 date-time (DESIGN §3.1)."""
    if value is None:
        return None
    if type(value) is int:  # not a bool, not a float: no coercion
        if value < 0:
            raise ValueError("epoch milliseconds must be non-negative")
        return value
    if not isinstance(value, str):
        raise ValueError("expected epoch milliseconds (an integer) or an RFC 3339 date-time")
    # RFC 3339 §5.6 allows lower-case "t"/"z" and a leap second (:60), which
    # datetime.fromisoformat does not: normalise both (a leap second counts as :59).
    text = value.upper()
    if text[16:19] == ":60":
        text = text[:17] + "59" + text[19:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise ValueError("RFC 3339 date-time needs a time zone offset")
    return int(parsed.timestamp() * 1000)


#: Event time, validated to epoch milliseconds; the JSON Schema states what `_epoch_ms` takes.
_Timestamp = Annotated[
    int | None,
    PlainValidator(_epoch_ms),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "description": "Epoch milliseconds."},
                {
                    "type": "string",
                    "format": "date-time",
                    "description": "RFC 3339 date-time with a time zone offset.",
                },
                {"type": "null"},
            ]
        }
    ),
    Field(
        description="Event time; default is the arrival time. Only its window start is kept; "
        "outside [now - window.max_past_seconds, now + window.max_future_seconds] the event is "
        "rejected."
    ),
]


# A field of the other kind: absent, or null (which the schema has always allowed); an error
# that says whose field it is rather than pydantic's "Input should be None".
def _absent(kind: str) -> Callable[[object], None]:
    def check(value: object) -> None:
        if value is not None:
            raise PydanticCustomError("kind_field", "Only allowed for kind {kind}", {"kind": kind})

    return check


_RequestOnly = Annotated[
    None,
    PlainValidator(_absent("request"), json_schema_input_type=None),
    Field(description="Only for kind request: absent or null here."),
]
_SignalOnly = Annotated[
    None,
    PlainValidator(_absent("signal"), json_schema_input_type=None),
    Field(description="Only for kind signal: absent or null here."),
]
_Ttfb = Annotated[
    float | None,
    Field(ge=0, le=MAX_TTFB_MS, allow_inf_nan=False, description="Time to first byte."),
]
_Duration = Annotated[
    float | None,
    Field(ge=0, le=MAX_DURATION_MS, allow_inf_nan=False, description="Time to the last byte."),
]
_Bytes = Annotated[int | None, Field(ge=0, lt=MAX_BYTES)]
_Client = Annotated[
    str | None,
    Field(
        max_length=128,
        description="Pseudonymous contributor key: used only for bounding and distinct counts, "
        "never stored.",
    ),
]

# Both kinds list every field of the schema, in the same order (the first error named is the
# first field found wrong): the ones of the other kind as `_RequestOnly`/`_SignalOnly`. Strict:
# "12" is not a number and true is not 1. What the JSON Schema rejects, relay rejects.
_EVENT_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True)


class NativeRequestEvent(BaseModel):
    """A request to a node and how it went, native schema v1."""

    model_config = _EVENT_CONFIG

    kind: Literal["request"]
    node: NodeRef
    op: Op | None = Field(None, description="Default download.")
    outcome: Outcome
    signal: _SignalOnly = None
    ttfb_ms: _Ttfb = None
    duration_ms: _Duration = None
    bytes: _Bytes = None
    asset: Asset | None = None
    ts: _Timestamp = None
    client: _Client = None


class NativeSignalEvent(BaseModel):
    """Something an app noticed about a node, native schema v1."""

    model_config = _EVENT_CONFIG

    kind: Literal["signal"]
    node: NodeRef
    op: _RequestOnly = None
    outcome: _RequestOnly = None
    signal: Signal
    ttfb_ms: _RequestOnly = None
    duration_ms: _RequestOnly = None
    bytes: _RequestOnly = None
    asset: Asset | None = None
    ts: _Timestamp = None
    client: _Client = None


#: One observation, native schema v1: `kind` says which.
NativeEvent = Annotated[NativeRequestEvent | NativeSignalEvent, Field(discriminator="kind")]

_NATIVE_EXAMPLE: dict[str, Any] = {
    "events": [
        {
            "kind": "request",
            "node": {"role": "distributor", "id": "mrbovo.distributor.cc"},
            "op": "download",
            "outcome": "ok",
            "ttfb_ms": 84.5,
            "duration_ms": 1290,
            "bytes": 5242880,
            "asset": "video",
            "ts": "2026-01-05T10:15:00Z",
            "client": "b3f1c2e0-7d6a-4d0e-9b1a-2f0c9e8a7d61",
        },
        {
            "kind": "signal",
            "node": {"role": "distributor", "id": "mrbovo.distributor.cc"},
            "signal": "playback_slow",
            "ts": 1767608100000,
        },
    ]
}


class NativePayload(BaseModel):
    """`POST /v1/events` body."""

    model_config = ConfigDict(
        extra="forbid", title="NativePayload", json_schema_extra={"examples": [_NATIVE_EXAMPLE]}
    )

    events: list[NativeEvent] = Field(max_length=MAX_EVENTS)


class AtlasUser(BaseModel):
    """The part of Atlas's `user` that keys the contributor (P2); the rest is ignored."""

    model_config = ConfigDict(extra="ignore", title="AtlasUser")

    accountId: str | int | None = None
    memberId: str | int | None = None


class AtlasEvent(BaseModel):
    """The fields of an Atlas `UserEventsLogger` event that relay reads (DESIGN §3.2).

    Atlas sends more (dataObjectId, title, videoId, channelId, storageBagId, codec, ...): allowed
    in the payload so Atlas needs no change, and ignored: never even copied into an object. Of
    the URLs only the host is kept (it names a distributor, public infrastructure).
    """

    model_config = ConfigDict(extra="ignore", title="AtlasEvent")

    type: str
    distributorUrl: str | None = Field(
        None, description="Origin of the asset URL; its host names the distributor."
    )
    resolvedUrl: str | None = Field(
        None,
        description="The asset URL; its host names the distributor when distributorUrl is absent.",
    )
    distributorId: str | None = Field(
        None,
        description="Atlas before 2023-06: the distributor's id, used when no URL is present; "
        "on distributor-blacklisted, the storage bucket id that failed an upload.",
    )
    storageOperatorId: str | None = Field(None, description="Storage bucket id of an upload.")
    dataObjectType: str | None = None
    initialResponseTime: float | None = None
    fullResponseTime: float | None = None
    error: str | None = None
    user: AtlasUser | None = None


# Bodies as the real Atlas client builds them (commit 9a42847ca): tests/atlas_client.py builds
# the same two and tests/test_atlas.py holds them equal, so the examples cannot drift from it.
_ATLAS_USER = {
    "accountId": "5f5VZnnw7gZe9Wv6sZL3v6NfzV9446kedP2hra1ymyxRU5i7",
    "memberId": "1003",
    "channelId": "7003",
}
#: A 60 s flush of Atlas's performance events: downloads (one with the timing hidden by the
#: browser, hence a negative initialResponseTime) and one of Atlas's non-infrastructure events.
ATLAS_PERFORMANCE_EXAMPLE: dict[str, Any] = {
    "events": [
        {
            "type": "distributor-response-time",
            "dataObjectId": "48451",
            "dataObjectType": "thumbnail",
            "resolvedUrl": "https://mrbovo.distributor.cc/distributor/api/v1/assets/48451",
            "distributorUrl": "https://mrbovo.distributor.cc",
            "initialResponseTime": 85.5,
            "fullResponseTime": 190.5,
            "downloadSpeed": 462.25714285714287,
            "user": _ATLAS_USER,
        },
        {
            "type": "distributor-response-time",
            "dataObjectId": "48452",
            "dataObjectType": "video",
            "resolvedUrl": "https://dist1.joyutils.org/distributor/api/v1/assets/48452",
            "distributorUrl": "https://dist1.joyutils.org",
            "initialResponseTime": -1533.0,
            "fullResponseTime": 1417.5,
            "downloadSpeed": 0.0,
            "user": _ATLAS_USER,
        },
        {
            "type": "request-response-time",
            "requestName": "GetBasicVideos",
            "timeToComplete": 231.4,
            "user": _ATLAS_USER,
        },
    ]
}
#: A 5 s flush of Atlas's error events from a logged-out user: a codec error (desktop: `codec`
#: is an unawaited Promise, `{}`), an upload attempt that failed and the bucket it blacklisted,
#: the upload giving up, and a bag left with no storage operator.
ATLAS_ERROR_EXAMPLE: dict[str, Any] = {
    "events": [
        {
            "type": "playback-wrong-codec",
            "dataObjectId": "8813",
            "dataObjectType": "video",
            "resolvedUrl": "https://mrbovo.distributor.cc/distributor/api/v1/assets/8813",
            "distributorUrl": "https://mrbovo.distributor.cc",
            "assetType": "video",
            "codec": {},
            "user": {},
        },
        {
            "type": "distributor-response-error",
            "dataObjectId": "5521",
            "storageOperatorId": "3",
            "error": "Network Error",
            "user": {},
        },
        {"type": "distributor-blacklisted", "distributorId": "3", "user": {}},
        {
            "type": "asset-upload-failed",
            "dataObjectId": "5521",
            "dataObjectType": "video",
            "storageOperatorId": "7",
            "storageOperatorUrl": "https://storage-7.example/storage",
            "error": "Network Error",
            "user": {},
        },
        {"type": "missing-operators-for-bag", "storageBagId": "dynamic:channel:7003", "user": {}},
    ]
}


class AtlasPayload(BaseModel):
    """`POST /v1/atlas/events` body, as Atlas sends it.

    Atlas does not cap its batches: events past `ingest.max_events_per_request` are rejected
    (reason `too_many`) and the rest accepted, never the whole body refused.
    """

    model_config = ConfigDict(
        extra="ignore",
        title="AtlasPayload",
        json_schema_extra={"examples": [ATLAS_PERFORMANCE_EXAMPLE, ATLAS_ERROR_EXAMPLE]},
    )

    events: list[AtlasEvent]
