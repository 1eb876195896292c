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

The slower path must not be a way to buy event-loop time: building Python objects for a body of
nested junk costs ~300 ms per MB where skipping it costs ~4 ms. So it builds only what the models
read (`_shaped`): the envelope and each event are scanned into raw slices (msgspec validates the
JSON without building it), unknown fields are dropped (or, where the model forbids them, kept as
one null: the model's first error is the same), and a container where the model wants a scalar
becomes an empty one (the model's error does not depend on what is inside).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar, Union

import msgspec
import orjson
import typing_extensions
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from relay.core.problem import Problem
from relay.core.vocabulary import (
    NODE_ID_MAX,
    NODE_ID_PYTHON_PATTERN,
    Asset,
    Op,
    Outcome,
    Role,
    Signal,
)
from relay.ingest import models

__all__ = [
    "AtlasEvent",
    "AtlasUser",
    "Decoded",
    "InvalidEvent",
    "NodeRef",
    "RequestEvent",
    "SignalEvent",
    "decode_atlas",
    "decode_native",
    "describe_error",
    "too_many_events",
]


class NodeRef(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    role: Role
    id: Annotated[
        str, msgspec.Meta(min_length=1, max_length=NODE_ID_MAX, pattern=NODE_ID_PYTHON_PATTERN)
    ]


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
    asset: Asset | None = None
    ts: _Ts | None = None
    client: _Client | None = None


class RequestEvent(_NativeEvent, tag="request", frozen=True):
    outcome: Outcome
    op: Op | None = None
    ttfb_ms: Annotated[float, msgspec.Meta(ge=0, le=models.MAX_TTFB_MS)] | None = None
    duration_ms: Annotated[float, msgspec.Meta(ge=0, le=models.MAX_DURATION_MS)] | None = None
    bytes: Annotated[int, msgspec.Meta(ge=0, lt=models.MAX_BYTES)] | None = None


class SignalEvent(_NativeEvent, tag="signal", frozen=True):
    signal: Signal


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

    events: Sequence[_Decoded | InvalidEvent]
    overflow: int

    @classmethod
    def capped(cls, events: list[_Decoded], max_events: int) -> Decoded[_Decoded]:
        overflow = len(events) - max_events
        return cls(events[:max_events], overflow) if overflow > 0 else cls(events, 0)


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """An event the models rejected: the field and the reason, never the value."""

    field: str
    reason: str


# What sends a body to the models. Besides a wrong value: nesting deeper than msgspec recurses
# (RecursionError) and invalid UTF-8 inside a string the struct reads (UnicodeDecodeError); the
# fallback answers both with a 400.
_FAST_PATH_MISSES = (
    msgspec.ValidationError,
    msgspec.DecodeError,
    RecursionError,
    UnicodeDecodeError,
)

_native_decoder = msgspec.json.Decoder(_NativePayload)
_atlas_decoder = msgspec.json.Decoder(_AtlasPayload)


def decode_native(body: bytes, max_events: int) -> Decoded[RequestEvent | SignalEvent]:
    """The events of a `POST /v1/events` body up to `max_events`, and how many came past it;
    Problem(400) if the envelope is wrong. Events past the cap are never built."""
    try:
        return Decoded.capped(_native_decoder.decode(body).events, max_events)
    except _FAST_PATH_MISSES:
        pass
    events = _envelope(body, closed=True)
    return Decoded(
        [_NATIVE.validated(raw) for raw in events[:max_events]], max(0, len(events) - max_events)
    )


def decode_atlas(body: bytes, max_events: int) -> Decoded[AtlasEvent]:
    """As `decode_native`, for a `POST /v1/atlas/events` body."""
    try:
        return Decoded.capped(_atlas_decoder.decode(body).events, max_events)
    except _FAST_PATH_MISSES:
        pass
    events = _envelope(body, closed=False)
    return Decoded(
        [_ATLAS.validated(raw) for raw in events[:max_events]], max(0, len(events) - max_events)
    )


class _RawNativeEnvelope(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    events: list[msgspec.Raw]


class _RawAtlasEnvelope(msgspec.Struct, gc=False):
    events: list[msgspec.Raw]


_raw_native_envelope = msgspec.json.Decoder(_RawNativeEnvelope)
_raw_atlas_envelope = msgspec.json.Decoder(_RawAtlasEnvelope)
# For a body that is not the envelope, what it is instead: any JSON value, containers as raw
# slices. A union rather than an object so that malformed JSON is `invalid-json` even when it
# is not an object.
_Top = Union[dict[str, msgspec.Raw], list[msgspec.Raw], str, int, float, bool, None]  # noqa: UP007
_top_decoder = msgspec.json.Decoder(_Top)
_JSON_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def too_many_events(limit: int) -> Problem:
    return Problem(
        413,
        "too-many-events",
        "Too many events in one request",
        f"at most {limit} events per request",
    )


def _envelope(body: bytes, *, closed: bool) -> list[msgspec.Raw]:
    """The events of a body as raw JSON slices; Problem(400) if it is not the envelope.

    The whole body is checked to be JSON (syntax by msgspec, which skips strings without
    checking their UTF-8, so that separately), but nothing inside an event is built here: the
    callers build only the events within the cap (1 MB of `1,` is 500 000 events, 1.5 s of the
    models' time).
    """
    decoder = _raw_native_envelope if closed else _raw_atlas_envelope
    try:
        body.decode("utf-8")
        events: list[msgspec.Raw] = decoder.decode(body).events
    except msgspec.ValidationError:  # before its base class, DecodeError
        raise _envelope_problem(body, closed) from None
    except _JSON_ERRORS:
        raise Problem(400, "invalid-json", "Body is not valid JSON") from None
    return events


def _envelope_problem(body: bytes, closed: bool) -> Problem:
    """What is wrong with a body that is not the envelope (msgspec stops at the first error)."""
    try:
        payload = _top_decoder.decode(body)
    except (*_JSON_ERRORS, msgspec.ValidationError):  # a number beyond a double, say
        return Problem(400, "invalid-json", "Body is not valid JSON")
    if isinstance(payload, dict) and closed and set(payload) - {"events"}:
        return Problem(
            400,
            "invalid-envelope",
            "Unknown top-level field",
            'the native envelope has only "events"',
        )
    return Problem(
        400,
        "invalid-envelope",
        "Body must be an object with an events array",
        'expected {"events": [...]}',
    )


_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


@dataclass(frozen=True)
class _Shape:
    """What a model reads of a JSON object: its fields (nested models by their own shape)."""

    fields: Mapping[str, _Shape | None]
    forbids_unknown: bool


def _shape_of(annotation: Any) -> _Shape | None:
    """What the models of `annotation` read of a JSON object; None if it names no model.

    A union of models (the native event's kinds) reads what any of them reads: which model
    validates a value is decided only once it is built.
    """
    if typing.get_origin(annotation) is Annotated:
        return _shape_of(typing.get_args(annotation)[0])
    if _is_union(annotation):
        shapes = [s for o in typing.get_args(annotation) if (s := _shape_of(o)) is not None]
        return _merged(shapes) if shapes else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = {
            field.alias or name: _shape_of(field.annotation)
            for name, field in annotation.model_fields.items()
        }
        return _Shape(fields, annotation.model_config.get("extra") == "forbid")
    if typing_extensions.is_typeddict(annotation):  # NodeRef
        hints = typing.get_type_hints(annotation, include_extras=True)
        config = getattr(annotation, "__pydantic_config__", {})
        fields = {name: _shape_of(hint) for name, hint in hints.items()}
        return _Shape(fields, config.get("extra") == "forbid")
    return None


def _merged(shapes: Sequence[_Shape]) -> _Shape:
    """One shape reading what each of `shapes` reads; unknown fields kept if any forbids them."""
    fields: dict[str, _Shape | None] = {}
    for name in dict.fromkeys(name for shape in shapes for name in shape.fields):
        nested = [n for shape in shapes if (n := shape.fields.get(name)) is not None]
        fields[name] = _merged(nested) if nested else None
    return _Shape(fields, any(shape.forbids_unknown for shape in shapes))


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _tag_field(annotation: Any) -> str | None:
    """The field that picks the model of a discriminated union `annotation`, if it is one."""
    if typing.get_origin(annotation) is not Annotated:
        return None
    for metadata in annotation.__metadata__:
        if isinstance(metadata, FieldInfo) and isinstance(metadata.discriminator, str):
            return metadata.discriminator
    return None


def _shaped(raw: msgspec.Raw, shape: _Shape | None) -> Any:
    """The JSON value of `raw`, built only as far as a model of `shape` looks.

    With `shape` None a scalar is wanted: a container becomes an empty one of its kind, which
    the model rejects exactly as it would the full one, without building it.
    """
    view = memoryview(raw)
    first = bytes(view[:1])
    if first == b"[":
        return []
    if first != b"{":
        try:
            return orjson.loads(view)
        except orjson.JSONDecodeError:
            # Valid JSON past what orjson (so the models) take, a number beyond a double: as
            # when the whole body was read with orjson.
            raise Problem(400, "invalid-json", "Body is not valid JSON") from None
    if shape is None:
        return {}
    shaped: dict[str, Any] = {}
    unknown_kept = False
    for key, value in _fields_decoder.decode(raw).items():
        if key in shape.fields:
            shaped[key] = _shaped(value, shape.fields[key])
        elif shape.forbids_unknown and not unknown_kept:
            # The model names the first unknown field it meets, whatever its value; the rest
            # would only add errors nobody reads.
            shaped[key] = None
            unknown_kept = True
    return shaped


def _native_event(
    event: models.NativeRequestEvent | models.NativeSignalEvent,
) -> RequestEvent | SignalEvent:
    node = NodeRef(role=event.node["role"], id=event.node["id"])
    if isinstance(event, models.NativeSignalEvent):
        return SignalEvent(
            node=node, signal=event.signal, asset=event.asset, ts=event.ts, client=event.client
        )
    return RequestEvent(
        node=node,
        outcome=event.outcome,
        op=event.op,
        ttfb_ms=event.ttfb_ms,
        duration_ms=event.duration_ms,
        bytes=event.bytes,
        asset=event.asset,
        ts=event.ts,
        client=event.client,
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


_Validated = TypeVar("_Validated")
_Event = TypeVar("_Event")


class _EventModel(Generic[_Validated, _Event]):
    """One event as the models read it: validated, or described as an InvalidEvent."""

    def __init__(self, annotation: Any, convert: Callable[[_Validated], _Event]) -> None:
        self._adapter: TypeAdapter[_Validated] = TypeAdapter(annotation)
        self._shape = _shape_of(annotation)
        self._tag_field = _tag_field(annotation)
        self._convert = convert

    def validated(self, raw: msgspec.Raw) -> _Event | InvalidEvent:
        """The answer for `raw`, built only as far as the models read."""
        return self.answer(_shaped(raw, self._shape))

    def answer(self, value: Any) -> _Event | InvalidEvent:
        try:
            validated = self._adapter.validate_python(value)
        except ValidationError as exc:
            return InvalidEvent(*describe_error(exc, self._tag_field))
        return self._convert(validated)


_NATIVE = _EventModel(models.NativeEvent, _native_event)
_ATLAS = _EventModel(models.AtlasEvent, _atlas_event)

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


def describe_error(error: ValidationError, tag_field: str | None = None) -> tuple[str, str]:
    """(field, reason) of the first error, without echoing any input value.

    An unknown field is named only if its name looks like a field name: a key can carry data too.
    With `tag_field`, `error` is of a union of models discriminated by that field: a location
    within a model starts with the tag, which is no field, and a wrong tag is that field's error
    (pydantic's own message quotes the value).
    """
    first = error.errors(include_url=False, include_input=False)[0]
    loc = first["loc"]
    if tag_field is not None:
        if first["type"] == "union_tag_not_found":
            return tag_field, "Field required"
        if first["type"] == "union_tag_invalid":
            return tag_field, f"Input should be one of {first['ctx']['expected_tags']}"
        loc = loc[1:]
    parts = [str(p) for p in loc if not isinstance(p, int)]
    parts = [p if _FIELD_NAME.match(p) else "(unknown field)" for p in parts]
    return ".".join(parts) or "(event)", first["msg"]
