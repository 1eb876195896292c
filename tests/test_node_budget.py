"""The node space is bounded (issue 11 item 4; issue 12 finding 4), against a running relay.

Node ids come from what clients send, so made-up ones cost memory. Before the node budgets a few
hundred requests of 1000 invented nodes filled `window.max_memory_bytes`, and then every client
got 503 until the window sealed. Now one network opens at most `window.max_cells_per_network`
cells and a window holds at most `window.max_nodes` nodes; events past either are dropped and
counted (`over_budget`, part of `over_cap`, so the batch still balances), and honest clients keep
being served.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import RunningRelay, from_network, request_event
from tests.test_pipeline import balance, batches, ship, summaries
from tests.verify_support import codes, registry_of, verify

StartRelay = Callable[..., Any]


async def _flood(running: RunningRelay, network: int, prefix: str, nodes: int) -> None:
    events = [request_event(f"{prefix}-{n}", client=f"bot-{n}") for n in range(nodes)]
    status, body = await running.post(
        "/v1/events", {"events": events}, headers=from_network(network)
    )
    assert status == 202 and body["accepted"] == nodes, body


async def test_invented_nodes_are_dropped_and_counted_and_honest_clients_served(
    start_relay: StartRelay,
) -> None:
    running: RunningRelay = await start_relay(
        window={"max_nodes": 200, "max_cells_per_network": 50, "max_memory_bytes": 2**20},
        privacy={"nodes": [{"role": "distributor", "id": "listed"}]},
        ingest={"rate_limit": {"enabled": False}},
    )
    relay = running.relay
    # One network, 1000 invented nodes: it opens 50 cells, the other 950 events are dropped.
    await _flood(running, 100, "one", 1000)
    state = relay.windows.window(relay.windows.starts()[0])
    assert (len(state.cells), state.over_budget) == (50, 950)
    # Twenty more networks with 1000 invented nodes each: the window stops at 200 nodes.
    for network in range(101, 121):
        await _flood(running, network, f"net{network}", 1000)
    assert len(state.nodes) == 200 and len(state.cells) == 200
    # The memory stays far under a budget 20 000 cells would have filled (2.5 kB each).
    assert relay.windows.estimated_bytes < 2**20
    # Honest users on three networks are still served: the listed node is published; a real
    # node that first appears now is past max_nodes and dropped like the invented ones.
    for network in range(3):
        events = [request_event("listed", client=f"u{network}")] * 2
        events.append(request_event("unlisted-real", client=f"u{network}"))
        status, body = await running.post(
            "/v1/events", {"events": events}, headers=from_network(network)
        )
        assert status == 202 and body["accepted"] == 3, body

    assert await running.seal_after(70) == 1
    docs = await ship(running)
    (batch,) = batches(docs)
    published = summaries(docs, batch["seq"])
    assert [(s["node"]["id"], s["requests"]) for s in published] == [("listed", 6)]
    stats = batch["stats"]
    dropped = 21_000 - 200 + 3  # every invented event past the first 200 nodes, and the late node
    assert stats["accepted"] == 21_000 + 9
    assert stats["over_budget"] == dropped
    assert stats["over_cap"] == dropped
    assert stats["suppressed_events"] == 200  # the invented cells that got in: 1 contributor each
    balance(batch, published)
    assert codes(verify(registry_of(running), docs)) == set()
    registry = relay.metrics.registry
    sample = registry.get_sample_value("relay_events_dropped_total", {"reason": "over_budget"})
    assert sample == dropped
    assert registry.get_sample_value("relay_events_dropped_total", {"reason": "over_cap"}) == 0
