"""Native schema v1 (DESIGN §3.1): validate each event, keep the valid ones, name what is wrong."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from relay.ingest.models import NativeEvent
from relay.ingest.scrub import Admission, RequestContext, ScrubResult
from relay.observation import Observation
from relay.privacy.contributor import client_material

__all__ = ["describe_error", "scrub_native"]

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


def describe_error(error: ValidationError) -> tuple[str, str]:
    """(field, reason) of the first error, without echoing any input value.

    An unknown field is named only if its name looks like a field name: a key can carry data too.
    """
    first = error.errors(include_url=False, include_input=False)[0]
    parts = [str(p) for p in first["loc"] if not isinstance(p, int)]
    parts = [p if _FIELD_NAME.match(p) else "(unknown field)" for p in parts]
    return ".".join(parts) or "(event)", first["msg"]


def scrub_native(events: list[Any], ctx: RequestContext, admission: Admission) -> ScrubResult:
    result = ScrubResult()
    keys: dict[tuple[int, bytes], int] = {}
    for index, raw in enumerate(events):
        try:
            # Already validated on the fast path (the whole body at once), or raw on the slow one.
            event = raw if isinstance(raw, NativeEvent) else NativeEvent.model_validate(raw)
        except ValidationError as exc:
            field_name, reason = describe_error(exc)
            result.reject(index, "invalid", field_name, reason)
            continue
        ts_ms = event.ts if isinstance(event.ts, int) else ctx.now_ms
        window = admission.window_for(ts_ms, ctx.now_ms)
        if isinstance(window, str):
            result.reject(index, window, "ts", _WINDOW_REASONS[window])
            continue
        material = ctx.network_material if event.client is None else client_material(event.client)
        contributor = keys.get((window, material))
        if contributor is None:
            contributor = keys[(window, material)] = admission.contributor(window, material)
        result.observations.append(
            Observation(
                window_start_ms=window,
                contributor=contributor,
                role=event.node.role,
                node_id=event.node.id,
                region=ctx.region,
                kind=event.kind,
                name=event.outcome if event.kind == "request" else event.signal,  # type: ignore[arg-type]
                op=(event.op or "download") if event.kind == "request" else None,
                asset=event.asset,
                ttfb_ms=event.ttfb_ms,
                duration_ms=event.duration_ms,
                bytes=event.bytes,
            )
        )
    return result


_WINDOW_REASONS = {
    "too_old": "timestamp older than the accepted past (window.max_past_seconds)",
    "too_new": "timestamp further in the future than accepted (window.max_future_seconds)",
    "late": "the window of this timestamp is already sealed",
}
