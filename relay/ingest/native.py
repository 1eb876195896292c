"""Native schema v1 (DESIGN §3.1): decoded events to observations, the invalid ones named."""

from __future__ import annotations

from collections.abc import Sequence

from relay.aggregate.observation import ms_bucket, throughput_bucket
from relay.ingest.decode import InvalidEvent, RequestEvent, SignalEvent
from relay.ingest.scrub import Admission, RequestContext, ScrubResult
from relay.privacy.contributor import client_material

__all__ = ["scrub_native"]


def scrub_native(
    events: Sequence[RequestEvent | SignalEvent | InvalidEvent],
    ctx: RequestContext,
    admission: Admission,
) -> ScrubResult:
    result = ScrubResult()
    observations = result.observations
    now_ms = ctx.now_ms
    arrival = admission.window_for(now_ms, now_ms)  # the window of every event without `ts`
    keys: dict[tuple[int, str | None], int] = {}
    for index, event in enumerate(events):
        if isinstance(event, InvalidEvent):
            result.reject(index, "invalid", event.field, event.reason)
            continue
        window = arrival if event.ts is None else admission.window_for(event.ts, now_ms)
        if isinstance(window, str):
            result.reject(index, window, "ts", _WINDOW_REASONS[window])
            continue
        client = event.client
        contributor = keys.get((window, client))
        if contributor is None:
            material = ctx.network_material if client is None else client_material(client)
            contributor = keys[(window, client)] = admission.contributor(window, material)
        node = event.node
        if isinstance(event, RequestEvent):
            ttfb, duration, nbytes = event.ttfb_ms, event.duration_ms, event.bytes
            observations.append(
                (
                    window,
                    contributor,
                    node.role,
                    node.id,
                    "request",
                    event.outcome,
                    event.op or "download",
                    event.asset,
                    ms_bucket(ttfb),
                    ms_bucket(duration),
                    nbytes,
                    throughput_bucket(nbytes, duration),
                )
            )
        else:
            observations.append(
                (
                    window,
                    contributor,
                    node.role,
                    node.id,
                    "signal",
                    event.signal,
                    None,
                    event.asset,
                    None,
                    None,
                    None,
                    None,
                )
            )
    return result


_WINDOW_REASONS = {
    "too_old": "timestamp older than the accepted past (window.max_past_seconds)",
    "too_new": "timestamp further in the future than accepted (window.max_future_seconds)",
    "late": "the window of this timestamp is already sealed",
}
