"""Input schemas (DESIGN §3.1, §3.2, pinned). These models are the privacy boundary.

The native schema forbids unknown fields: anything an app sends must be named here, so a new
identifier cannot slip through by accident. The Atlas models describe only the subset relay reads;
everything else Atlas sends (user ids, content ids, URLs, free text) is ignored by the handler and
never copied anywhere. `schemas/` is generated from these models (`python -m relay.schemagen`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from relay.core.vocabulary import Asset, NodeRef, Op, Outcome, Signal

__all__ = [
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
]

#: Version of the native event schema; carried in every batch header and in /v1/config.
SCHEMA_VERSION = 1

# Events per request as the schema states it (the default); the handler enforces
# `ingest.max_events_per_request`, and a longer body only skips the fast decoder.
MAX_EVENTS = 1000
MAX_TTFB_MS = 600_000
MAX_DURATION_MS = 3_600_000
MAX_BYTES = 2**40


class NativeEvent(BaseModel):
    """One observation, native schema v1."""

    # Strict: "12" is not a number and true is not 1. What the JSON Schema rejects, relay rejects.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, title="Event")

    kind: Literal["request", "signal"]
    node: NodeRef
    op: Op | None = Field(None, description="request only; default download")
    outcome: Outcome | None = Field(None, description="request only, required there")
    signal: Signal | None = Field(None, description="signal only, required there")
    ttfb_ms: float | None = Field(None, ge=0, le=MAX_TTFB_MS, allow_inf_nan=False)
    duration_ms: float | None = Field(None, ge=0, le=MAX_DURATION_MS, allow_inf_nan=False)
    bytes: int | None = Field(None, ge=0, lt=MAX_BYTES)
    asset: Asset | None = None
    ts: int | str | None = Field(
        None,
        description="RFC 3339 date-time or epoch milliseconds; default is the arrival time.",
        json_schema_extra={"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]},
    )
    client: str | None = Field(
        None,
        max_length=128,
        description="Pseudonymous contributor key: used only for bounding and distinct counts, "
        "never stored.",
    )

    @field_validator("ts")
    @classmethod
    def _ts_to_ms(cls, value: int | str | None) -> int | None:
        if value is None:
            return None
        if isinstance(value, int):
            if value < 0:
                raise ValueError("epoch milliseconds must be non-negative")
            return value
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

    @model_validator(mode="after")
    def _kind_fields(self) -> NativeEvent:
        if self.kind == "request":
            if self.outcome is None:
                raise ValueError("outcome is required for kind request")
            if self.signal is not None:
                raise ValueError("signal is only allowed for kind signal")
        else:
            if self.signal is None:
                raise ValueError("signal is required for kind signal")
            extra = [
                name
                for name in ("op", "outcome", "ttfb_ms", "duration_ms", "bytes")
                if getattr(self, name) is not None
            ]
            if extra:
                raise ValueError(f"{', '.join(extra)} not allowed for kind signal")
        return self


class NativePayload(BaseModel):
    """`POST /v1/events` body."""

    model_config = ConfigDict(extra="forbid", title="NativePayload")

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


class AtlasPayload(BaseModel):
    """`POST /v1/atlas/events` body, as Atlas sends it.

    Atlas does not cap its batches: events past `ingest.max_events_per_request` are rejected
    (reason `too_many`) and the rest accepted, never the whole body refused.
    """

    model_config = ConfigDict(extra="ignore", title="AtlasPayload")

    events: list[AtlasEvent]
