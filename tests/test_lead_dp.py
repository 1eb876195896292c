"""In dp mode the lead shows every noisy figure with its 95 % margin, b·ln(1/0.05) per count."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from relay.lead.source import CellQuery
from relay.lead.timerange import TimeRange
from relay.sinks.store import EmbeddedStore
from tests.conftest import T0_MS, RunningRelay, request_event
from tests.test_lead_data import lead_service


async def test_noisy_figures_carry_their_margin(start_relay: Callable[..., Any]) -> None:
    running: RunningRelay = await start_relay(
        privacy={"mode": "dp", "geo": "none", "nodes": [{"role": "distributor", "id": "d1"}]}
    )
    events = [request_event("d1", client=f"c{i}", ttfb_ms=50) for i in range(20)]
    status, _ = await running.post("/v1/events", {"events": events})
    assert status == 202
    # Three windows (one per minute, due 10 s after its end), so a sum of three noisy summaries.
    assert [await running.seal_after(s) for s in (70, 60, 60)] == [1, 1, 1]
    assert await running.relay.shipper.ship_pending()
    settings = running.relay.settings
    store = EmbeddedStore(settings.data_dir / "store.sqlite", readonly=True)
    try:
        batches = [d.source for d in store.documents() if "att" not in d.source]
    finally:
        store.close()
    scale = batches[0]["privacy"]["scale"]
    assert batches[0]["privacy"]["mode"] == "dp" and scale >= 1

    service = await lead_service(settings)
    try:
        answer = await service.nodes(
            TimeRange(T0_MS, T0_MS + 3_600_000), role=None, region=None, include_unverified=False
        )
        (node,) = answer["nodes"]
        assert node["summaries"] == 3
        assert node["noise"] == {
            "scale": scale,
            "summaries": 3,
            "margin95": {
                "count": round(math.log(20) * math.sqrt(3 * scale**2), 1),
                "requests": round(math.log(20) * math.sqrt(9 * 3 * scale**2), 1),
            },
        }
        # One summary alone: exactly b·ln 20 per count.
        one = await service.series(
            "distributor", "d1", TimeRange(T0_MS, T0_MS + 60_000), step_ms=None, region=None,
            include_unverified=False,
        )  # fmt: skip
        assert one["points"][0]["noise"]["margin95"]["count"] == round(scale * math.log(20), 1)
        # The noisy counts themselves are what the summaries say, summed.
        tallies = await service.source.tallies(
            CellQuery(TimeRange(T0_MS, T0_MS + 3_600_000)),
            service.verification.current.verified,
            "none",
        )
        assert node["requests"] == sum(t.requests for t in tallies.values())
    finally:
        await service.source.close()
