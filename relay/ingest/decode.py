"""Request bodies to events: a fast decoder for well-formed bodies, the models for everything else.

The pydantic models of `models.py` are the contract: `schemas/` is generated from them, and they
say what is wrong with a bad event without echoing its value. Validating a body with them costs
~4.6 µs per Atlas event, twice what orjson alone takes to build the dicts. The msgspec structs
here decode and validate the same body in ~0.7 µs per event, so every body is tried here first;
a body that fails here for any reason is handed to the models, event by event, which keep the
valid events and describe the invalid ones.

The structs are therefore a second spelling of the models, held to them by
tests/test_decode.py (hypothesis): whatever the structs accept, the models accept with the same
values. Where they are stricter (an RFC 3339 `ts`, a numeric string in an Atlas timing, an
explicit null the models tolerate) a body only takes the slower path. The structs carry no
identifier beyond what the handler reads: unknown Atlas fields are skipped without allocation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
import orjson
from pydantic import BaseModel, ValidationError

from relay.ingest import models
from relay.ingest.problem import Problem

__all__ = [
    "AtlasEvent",
    "AtlasUser",
    "Decoded",
    "EventError",
    "NodeRef",
    "RequestEvent",
    "SignalEvent",
    "decode_atlas",
    "decode_native",
    "describe_error",
]

# Anchored with \Z: msgspec matches with Python's `re`, where `$` also matches before a final
# newline, which the models' (Rust) regex does not.
_NODE_ID = r"^[A-Za-z0-9:._-]+\Z"


class NodeRef(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    role: Literal["distributor", "storage"]
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_NODE_ID)]


# msgspec decodes any JSON integer to an int, orjson (the model path) one beyond 64 bits to a
# float, which an int field rejects: bounded here to int64, the rest takes the model path.
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Ts = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # epoch ms; RFC 3339 takes the model path
_Client = Annotated[str, msgspec.Meta(max_length=128)]


class _NativeEvent(
    msgspec.Struct,
    tag_field="kind",
    forbid_unknown_fields=True,
    frozen=True,
    gc=False,
    kw_only=True,  # the subclasses' required field follows these optional ones
):
    """What both kinds of native event have; `kind` is the tag that picks the subclass."""

    node: NodeRef
    asset: models.Asset | None = None
    ts: _Ts | None = None
    client: _Client | None = None


class RequestEvent(_NativeEvent, tag="request", frozen=True):
    outcome: models.Outcome
    op: models.Op | None = None
    ttfb_ms: Annotated[float, msgspec.Meta(ge=0, le=models.MAX_TTFB_MS)] | None = None
    duration_ms: Annotated[float, msgspec.Meta(ge=0, le=models.MAX_DURATION_MS)] | None = None
    bytes: Annotated[int, msgspec.Meta(ge=0, lt=models.MAX_BYTES)] | None = None


class SignalEvent(_NativeEvent, tag="signal", frozen=True):
    signal: models.Signal


class AtlasUser(msgspec.Struct, frozen=True, gc=False):
    accountId: str | _Int64 | None = None
    memberId: str | _Int64 | None = None


class AtlasEvent(msgspec.Struct, frozen=True, gc=False):
    type: str
    distributorUrl: str | None = None
    resolvedUrl: str | None = None
    distributorId: str | None = None
    storageOperatorId: str | None = None
    dataObjectType: str | None = None
    initialResponseTime: float | None = None
    fullResponseTime: float | None = None
    error: str | None = None
    user: AtlasUser | None = None


class _NativePayload(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    events: Annotated[list[RequestEvent | SignalEvent], msgspec.Meta(max_length=models.MAX_EVENTS)]


class _AtlasPayload(msgspec.Struct, gc=False):
    events: list[AtlasEvent]  # uncapped, as Atlas sends it: the handler counts what is past the cap


_Decoded = TypeVar("_Decoded")


@dataclass(frozen=True, slots=True)
class Decoded(Generic[_Decoded]):
    """The events of a body up to the per-request cap, and how many came past it."""

    events: Sequence[_Decoded | EventError]
    overflow: int

    @classmethod
    def capped(cls, events: list[_Decoded], max_events: int) -> Decoded[_Decoded]:
        overflow = len(events) - max_events
        return cls(events[:max_events], overflow) if overflow > 0 else cls(events, 0)


@dataclass(frozen=True, slots=True)
class EventError:
    """An event the models rejected: the field and the reason, never the value."""

    field: str
    reason: str


_native_decoder = msgspec.json.Decoder(_NativePayload)
_atlas_decoder = msgspec.json.Decoder(_AtlasPayload)


def decode_native(body: bytes, max_events: int) -> Decoded[RequestEvent | SignalEvent]:
    """The events of a `POST /v1/events` body; Problem(400) if the envelope is wrong."""
    try:
        return Decoded.capped(_native_decoder.decode(body).events, max_events)
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    events = _envelope(body, closed=True)
    return Decoded(
        [_validated(raw, models.NativeEvent, _native_event) for raw in events[:max_events]],
        max(0, len(events) - max_events),
    )


def decode_atlas(body: bytes, max_events: int) -> Decoded[AtlasEvent]:
    """The events of a `POST /v1/atlas/events` body; Problem(400) if the envelope is wrong."""
    try:
        return Decoded.capped(_atlas_decoder.decode(body).events, max_events)
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    events = _envelope(body, closed=False)
    # Only the events within the cap are validated: the rest are counted, never looked at.
    return Decoded(
        [_validated(raw, models.AtlasEvent, _atlas_event) for raw in events[:max_events]],
        max(0, len(events) - max_events),
    )


def _envelope(body: bytes, *, closed: bool) -> list[Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Problem(400, "invalid-json", "Body is not valid JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise Problem(
            400,
            "invalid-envelope",
            "Body must be an object with an events array",
            'expected {"events": [...]}',
        )
    if closed and set(payload) != {"events"}:
        raise Problem(
            400,
            "invalid-envelope",
            "Unknown top-level field",
            'the native envelope has only "events"',
        )
    events: list[Any] = payload["events"]
    return events


_Model = TypeVar("_Model", bound=BaseModel)
_Event = TypeVar("_Event")


def _validated(
    raw: Any, model: type[_Model], convert: Callable[[_Model], _Event]
) -> _Event | EventError:
    try:
        validated = model.model_validate(raw)
    except ValidationError as exc:
        return EventError(*describe_error(exc))
    return convert(validated)


def _native_event(event: models.NativeEvent) -> RequestEvent | SignalEvent:
    node = NodeRef(role=event.node.role, id=event.node.id)
    ts = event.ts if isinstance(event.ts, int) else None  # the model turned a string into ms
    if event.kind == "request":
        assert event.outcome is not None  # the model's kind check
        return RequestEvent(
            node=node,
            outcome=event.outcome,
            op=event.op,
            ttfb_ms=event.ttfb_ms,
            duration_ms=event.duration_ms,
            bytes=event.bytes,
            asset=event.asset,
            ts=ts,
            client=event.client,
        )
    assert event.signal is not None
    return SignalEvent(
        node=node, signal=event.signal, asset=event.asset, ts=ts, client=event.client
    )


def _atlas_event(event: models.AtlasEvent) -> AtlasEvent:
    user = event.user
    return AtlasEvent(
        type=event.type,
        distributorUrl=event.distributorUrl,
        resolvedUrl=event.resolvedUrl,
        distributorId=event.distributorId,
        storageOperatorId=event.storageOperatorId,
        dataObjectType=event.dataObjectType,
        initialResponseTime=event.initialResponseTime,
        fullResponseTime=event.fullResponseTime,
        error=event.error,
        user=None if user is None else AtlasUser(accountId=user.accountId, memberId=user.memberId),
    )


_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


def describe_error(error: ValidationError) -> tuple[str, str]:
    """(field, reason) of the first error, without echoing any input value.

    An unknown field is named only if its name looks like a field name: a key can carry data too.
    """
    first = error.errors(include_url=False, include_input=False)[0]
    parts = [str(p) for p in first["loc"] if not isinstance(p, int)]
    parts = [p if _FIELD_NAME.match(p) else "(unknown field)" for p in parts]
    return ".".join(parts) or "(event)", first["msg"]
