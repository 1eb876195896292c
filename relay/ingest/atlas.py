"""Atlas `UserEventsLogger` compatibility (DESIGN §3.2): its payloads, unchanged, mapped to
observations.

The reference is the client as it ships (Joystream/atlas 9a42847ca; tests/atlas_client.py
reproduces its bodies). Download events name no distributor id: the distributor is the host of
`distributorUrl` (else of `resolvedUrl`), public infrastructure and the only part of a URL kept.
`user`, the URLs, `dataObjectId`, titles, video, channel and bag ids and the error text are read
at most once here (the error text to classify it, `user` to key the contributor, a URL for its
host) and never copied.
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

from relay.aggregate.histogram import BOUNDS
from relay.core.vocabulary import NETWORK_WIDE, is_node_id
from relay.ingest.decode import AtlasEvent, AtlasUser, InvalidEvent
from relay.ingest.models import MAX_DURATION_MS, MAX_TTFB_MS
from relay.ingest.scrub import Admission, RequestContext, ScrubResult
from relay.privacy.contributor import client_material

__all__ = ["ATLAS_TYPES", "classify_error", "distributor_node", "scrub_atlas"]

_STATUS = re.compile(r"status code ([45])\d\d")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class _Invalid:
    """Why an event names no node: the field and the reason, never the value (P1)."""

    field: str
    reason: str


def classify_error(message: str | None) -> str:
    """Outcome of an axios error message; the message itself is dropped."""
    if not message:
        return "other"
    if message.startswith("timeout of") or "ETIMEDOUT" in message:
        return "timeout"
    status = _STATUS.search(message)
    if status:
        return "http_5xx" if status.group(1) == "5" else "http_4xx"
    if message == "Network Error":
        return "connection"
    if message in ("canceled", "Request aborted"):
        return "aborted"
    return "other"


@functools.lru_cache(maxsize=256)
def _asset(data_object_type: str | None) -> str | None:
    # Cached: a handful of Atlas type names repeat in every request.
    if data_object_type is None:
        return None
    lowered = data_object_type.lower()
    if "video" in lowered and "thumbnail" not in lowered:
        return "video"
    if any(word in lowered for word in ("thumbnail", "avatar", "cover", "image")):
        return "image"
    return "other"


@functools.lru_cache(maxsize=4096)
def _valid_node_id(candidate: str) -> bool:
    # Cached: node ids are public, few, and repeat in every request.
    return candidate != NETWORK_WIDE and is_node_id(candidate)


@functools.lru_cache(maxsize=4096)
def distributor_node(url: str) -> str | None:
    """The node id a distributor URL names (DESIGN §3.2), None if it names no http(s) host.

    The host, lower-case, IDNA (UTS 46, as browsers write hosts), and `:port` only when it is
    not the scheme's default. User info, path, query and fragment are dropped. Cached: a few
    distributor origins repeat in every performance batch.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # ValueError when not a number in 0..65535
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")  # lower-cased, without user info or brackets
    if scheme not in _DEFAULT_PORTS or not host or ":" in host:
        # ":" is an IPv6 literal: it would be ambiguous with the port in a node id.
        return None
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError:
            return None
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return host if _valid_node_id(host) else None


def _distributor(event: AtlasEvent) -> str | _Invalid:
    for field, url in (
        ("distributorUrl", event.distributorUrl),
        ("resolvedUrl", event.resolvedUrl),
    ):
        if url is not None:
            node = distributor_node(url)
            return _Invalid(field, "not an http(s) URL with a valid host") if node is None else node
    return _bucket_or_id("distributorId", event.distributorId)


def _upload_bucket(event: AtlasEvent) -> str | _Invalid:
    return _bucket_or_id("storageOperatorId", event.storageOperatorId)


def _blacklisted_bucket(event: AtlasEvent) -> str | _Invalid:
    # Atlas passes the storage bucket that just failed an upload as `distributorId`.
    return _bucket_or_id("distributorId", event.distributorId)


def _network_wide(event: AtlasEvent) -> str | _Invalid:
    return NETWORK_WIDE  # the bag id names the uploader's channel: dropped


def _bucket_or_id(field: str, node_id: str | None) -> str | _Invalid:
    if node_id is None:
        return _Invalid(field, "missing: the event names no node")
    if not _valid_node_id(node_id):
        return _Invalid(field, "malformed node id")
    return node_id


@dataclass(frozen=True, slots=True)
class _Mapping:
    kind: str
    name: str | None  # the outcome or signal; None: classify the request's error message
    role: str
    op: str | None
    node: Callable[[AtlasEvent], str | _Invalid]


_DOWNLOAD_ERROR = _Mapping("request", None, "distributor", "download", _distributor)
_UPLOAD_ATTEMPT = _Mapping("request", None, "storage", "upload", _upload_bucket)

#: Atlas type -> what it maps to (DESIGN §3.2, pinned). `distributor-response-error` is either
#: a failed download or, with `storageOperatorId`, a failed upload attempt.
ATLAS_TYPES: dict[str, _Mapping] = {
    "distributor-response-time": _Mapping("request", "ok", "distributor", "download", _distributor),
    "distributor-response-error": _DOWNLOAD_ERROR,
    "distributor-response-timeout": _Mapping(
        "request", "timeout", "distributor", "download", _distributor
    ),
    "playback-wrong-codec": _Mapping("signal", "playback_codec", "distributor", None, _distributor),
    "playback-is-slow": _Mapping("signal", "playback_slow", "distributor", None, _distributor),
    "distributor-blacklisted": _Mapping(
        "signal", "blacklisted", "storage", None, _blacklisted_bucket
    ),
    "asset-upload-failed": _Mapping("signal", "upload_failed", "storage", None, _upload_bucket),
    "missing-operators-for-bag": _Mapping(
        "signal", "missing_operators", "storage", None, _network_wide
    ),
}


def _contributor_material(user: AtlasUser | None, ctx: RequestContext) -> bytes:
    """The Atlas user's account id, else member id, else the network material."""
    if user is not None:
        if user.accountId is not None and str(user.accountId):
            return client_material(f"atlas:accountId:{user.accountId}")
        if user.memberId is not None and str(user.memberId):
            return client_material(f"atlas:memberId:{user.memberId}")
    return ctx.network_material


def scrub_atlas(
    events: Sequence[AtlasEvent | InvalidEvent], ctx: RequestContext, admission: Admission
) -> ScrubResult:
    result = ScrubResult()
    observations = result.observations
    window = admission.window_for(ctx.now_ms, ctx.now_ms)  # Atlas sends no timestamps
    # Atlas attaches the same user to every event of a request: key it once, not per event.
    keys: dict[AtlasUser | None, int] = {}
    for index, event in enumerate(events):
        if isinstance(event, InvalidEvent):
            result.reject(index, "invalid", event.field, event.reason)
            continue
        mapping = ATLAS_TYPES.get(event.type)
        if mapping is None:
            result.unsupported += 1
            continue
        if mapping is _DOWNLOAD_ERROR and event.storageOperatorId is not None:
            mapping = _UPLOAD_ATTEMPT
        node_id = mapping.node(event)
        if isinstance(node_id, _Invalid):
            result.reject(index, "invalid", node_id.field, node_id.reason)
            continue
        if isinstance(window, str):
            result.reject(index, window, "(arrival)", "arrival window unavailable")
            continue
        user = event.user
        contributor = keys.get(user)
        if contributor is None:
            contributor = keys[user] = admission.contributor(
                window, _contributor_material(user, ctx)
            )
        # Atlas's schema does not bound its timings: one out of range counts as absent.
        ttfb = event.initialResponseTime
        duration = event.fullResponseTime
        observations.append(
            (
                window,
                contributor,
                mapping.role,
                node_id,
                mapping.kind,
                mapping.name or classify_error(event.error),
                mapping.op,
                _asset(event.dataObjectType),
                # histogram.BOUNDS is in µs; in range, bisect is bucket_index without a call.
                bisect_left(BOUNDS, ttfb * 1000)
                if ttfb is not None and 0 <= ttfb <= MAX_TTFB_MS
                else None,
                bisect_left(BOUNDS, duration * 1000)
                if duration is not None and 0 <= duration <= MAX_DURATION_MS
                else None,
                None,
                None,
            )
        )
    return result
