"""Sybil attacks from one source network, against a running relay (P4, P5; issue 12, finding 1).

One network can invent contributors three ways: native `client` values, Atlas `user.accountId`s,
or no ids and a different User-Agent family per request. None of them may make a cell
publishable (the privacy attack: one real event plus k − 1 invented contributors would publish
the victim's values), or move a busy cell by more than one network's bound (the integrity
attack: a thousand invented timeouts making an honest node look down).

Loopback is a trusted proxy in the tests (conftest), so X-Forwarded-For says which network a
request comes from, as it does behind a real reverse proxy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import RunningRelay, network_ip, request_event
from tests.test_contributor import (
    CHROME,
    CHROME_ANDROID,
    CURL,
    EDGE,
    FIREFOX,
    FIREFOX_IOS,
    GOOGLEBOT,
    OPERA,
    SAFARI_IOS,
    SAFARI_MAC,
)
from tests.test_pipeline import balance, batches, ship, summaries

StartRelay = Callable[..., Any]
FLAVOURS = ["client", "atlas_account", "ua_family"]
NODE = "1:7"
#: Ten User-Agent families (contributor.ua_family): the most one address can be without ids.
FAMILIES = [
    CHROME,
    FIREFOX,
    SAFARI_MAC,
    EDGE,
    OPERA,
    CURL,
    CHROME_ANDROID,
    FIREFOX_IOS,
    SAFARI_IOS,
    GOOGLEBOT,
]
ATTACKER = 250  # network index of the attacker; honest users and victims use 0, 1, 2, ...


def _events(flavour: str, who: int, outcome: str, count: int, **timings: Any) -> list[Any]:
    """`count` events on NODE from contributor `who` as the flavour's client sends them."""
    if flavour == "atlas_account":
        kind = "distributor-response-time" if outcome == "ok" else "distributor-response-timeout"
        event = {
            "type": kind,
            "distributorId": NODE,
            "distributorUrl": "https://distributor-7.example/distributor/",
            "user": {"accountId": f"account-{who}"},
        }
        if "ttfb_ms" in timings:
            event["initialResponseTime"] = timings["ttfb_ms"]
        if "duration_ms" in timings:
            event["fullResponseTime"] = timings["duration_ms"]
        return [event] * count
    client = None if flavour == "ua_family" else f"client-{who}"
    return [request_event(NODE, outcome, client=client, **timings)] * count


def _path(flavour: str) -> str:
    return "/v1/atlas/events" if flavour == "atlas_account" else "/v1/events"


async def _send(
    running: RunningRelay, flavour: str, network: int, events: list[Any], ua: str = CHROME
) -> None:
    headers = {"X-Forwarded-For": network_ip(network), "User-Agent": ua}
    status, body = await running.post(_path(flavour), {"events": events}, headers=headers)
    assert status == 202 and body["accepted"] == len(events), body


async def _invent(
    running: RunningRelay,
    flavour: str,
    contributors: int,
    outcome: str,
    each: int,
    *,
    spread: bool = False,
) -> None:
    """`contributors` invented contributors, `each` events apiece, all from the attacker's
    network (or, with `spread`, each from a network of its own: the control)."""
    for who in range(contributors):
        network = 100 + who if spread else ATTACKER
        ua = FAMILIES[who % len(FAMILIES)] if flavour == "ua_family" else CHROME
        await _send(running, flavour, network, _events(flavour, 1000 + who, outcome, each), ua)


@pytest.mark.parametrize("spread", [False, True], ids=["one_network", "control_many_networks"])
@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_invented_contributors_do_not_publish_a_victims_cell(
    start_relay: StartRelay, flavour: str, spread: bool
) -> None:
    running: RunningRelay = await start_relay(privacy={"k": 10})
    # The victim: one real event with telling values, from its own network.
    victim = _events(flavour, 0, "ok", 1, ttfb_ms=1234.5, duration_ms=2222, **_bytes(flavour))
    await _send(running, flavour, 0, victim)
    # k − 1 = 9 invented contributors. With the UA flavour: 9 families without ids.
    await _invent(running, flavour, 9, "ok", 1, spread=spread)

    assert await running.seal_after(70) == 1
    docs = await ship(running)
    (batch,) = batches(docs)
    published = summaries(docs, batch["seq"])
    assert batch["stats"]["accepted"] == 10
    balance(batch, published)
    if spread:
        # Ten contributors on ten networks: the setup does publish a real cell.
        (cell,) = published
        assert cell["requests"] == 10
    else:
        # One network stands behind nine of the ten: nothing of the victim is readable.
        assert published == []
        assert batch["n"] == 0
        assert batch["stats"]["suppressed_events"] == 10


def _bytes(flavour: str) -> dict[str, Any]:
    return {} if flavour == "atlas_account" else {"bytes": 987_654}


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_one_network_moves_a_busy_cell_by_its_bound_at_most(
    start_relay: StartRelay, flavour: str
) -> None:
    running: RunningRelay = await start_relay(privacy={"k": 10})
    bound = running.relay.settings.privacy.network_cap
    assert bound == 50  # max_events_per_network defaults to max_events_per_contributor
    # A busy, healthy node: 20 users on 20 networks, 5 successful requests each.
    for user in range(20):
        await _send(running, flavour, user, _events(flavour, user, "ok", 5, ttfb_ms=80))
    # One network: 1000 timeouts over 100 invented ids (10 families × 100 without ids).
    contributors = 10 if flavour == "ua_family" else 100
    await _invent(running, flavour, contributors, "timeout", 1000 // contributors)

    assert await running.seal_after(70) == 1
    docs = await ship(running)
    (batch,) = batches(docs)
    (cell,) = summaries(docs, batch["seq"])
    assert cell["outcomes"] == {"ok": 100, "timeout": bound}
    # The signed header states both network parameters (aggregate mode).
    privacy = batch["privacy"]
    assert (privacy["k_networks"], privacy["max_events_per_network"]) == (10, bound)
    assert batch["stats"]["accepted"] == 1100
    assert batch["stats"]["over_cap"] == 1000 - bound
    balance(batch, [cell])


async def test_a_token_does_not_let_a_client_claim_networks(start_relay: StartRelay) -> None:
    # A server-side app or gateway with a bearer token, not behind a trusted proxy: its
    # X-Forwarded-For is not believed, so all its users are one network (its own address).
    running: RunningRelay = await start_relay(
        privacy={"k": 10},
        ingest={"trusted_proxies": [], "auth": {"bearer_tokens": {"gw": "gateway-secret"}}},
    )
    for user in range(12):
        headers = {"X-Forwarded-For": network_ip(user), "Authorization": "Bearer gateway-secret"}
        events = [request_event(NODE, client=f"user-{user}")]
        status, body = await running.post("/v1/events", {"events": events}, headers=headers)
        assert status == 202, body
    assert await running.seal_after(70) == 1
    docs = await ship(running)
    (batch,) = batches(docs)
    assert batch["n"] == 0
    assert batch["stats"]["suppressed_events"] == 12
