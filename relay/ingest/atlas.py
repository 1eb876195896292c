"""Atlas `UserEventsLogger` compatibility (DESIGN §3.2): its payloads, unchanged, mapped to
observations. `user`, `dataObjectId`, `resolvedUrl`, `distributorUrl`, `userDevice` and the
error text are read at most once here (the error text to classify it, `user` to key the
contributor) and never copied.
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_left
from collections.abc import Sequence

from relay.aggregate.histogram import BOUNDS
from relay.ingest.decode import AtlasEvent, AtlasUser, EventError
from relay.ingest.models import MAX_DURATION_MS, MAX_TTFB_MS
from relay.ingest.scrub import Admission, RequestContext, ScrubResult
from relay.privacy.contributor import client_material

__all__ = ["ATLAS_TYPES", "classify_error", "scrub_atlas"]

_NODE_ID = re.compile(r"^[A-Za-z0-9:._-]{1,128}$")
_STATUS = re.compile(r"status code ([45])\d\d")

# Atlas type -> (kind, name, role, op). Requests with name None classify the error message.
ATLAS_TYPES: dict[str, tuple[str, str | None, str, str | None]] = {
    "distributor-response-time": ("request", "ok", "distributor", "download"),
    "distributor-response-error": ("request", None, "distributor", "download"),
    "distributor-response-timeout": ("request", "timeout", "distributor", "download"),
    "distributor-blacklisted": ("signal", "blacklisted", "distributor", None),
    "playback-is-slow": ("signal", "playback_slow", "distributor", None),
    "playback-wrong-codec": ("signal", "playback_codec", "distributor", None),
    "asset-upload-failed": ("request", None, "storage", "upload"),
    "missing-operators-for-bag": ("signal", "missing_operators", "storage", None),
}


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


def _storage_node(event: AtlasEvent) -> str | None:
    if event.type == "missing-operators-for-bag":
        return event.storageBagId
    return event.storageProviderId or event.distributorId


@functools.lru_cache(maxsize=4096)
def _valid_node_id(candidate: str) -> bool:
    # Cached: node ids are public, few, and repeat in every request.
    return _NODE_ID.match(candidate) is not None


def _contributor_material(user: AtlasUser | None, ctx: RequestContext) -> bytes:
    """The Atlas user's account id, else member id, else the network material."""
    if user is not None:
        if user.accountId is not None and str(user.accountId):
            return client_material(f"atlas:accountId:{user.accountId}")
        if user.memberId is not None and str(user.memberId):
            return client_material(f"atlas:memberId:{user.memberId}")
    return ctx.network_material


def scrub_atlas(
    events: Sequence[AtlasEvent | EventError], ctx: RequestContext, admission: Admission
) -> ScrubResult:
    result = ScrubResult()
    observations = result.observations
    window = admission.window_for(ctx.now_ms, ctx.now_ms)  # Atlas sends no timestamps
    # Atlas attaches the same user to every event of a request: key it once, not per event.
    keys: dict[AtlasUser | None, int] = {}
    for index, event in enumerate(events):
        if isinstance(event, EventError):
            result.reject(index, "invalid", event.field, event.reason)
            continue
        mapping = ATLAS_TYPES.get(event.type)
        if mapping is None:
            result.unsupported += 1
            continue
        kind, name, role, op = mapping
        node_id = event.distributorId if role == "distributor" else _storage_node(event)
        if node_id is None or not _valid_node_id(node_id):
            result.reject(index, "invalid", "distributorId", "missing or malformed node id")
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
                role,
                node_id,
                kind,
                name or classify_error(event.error),
                op,
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
