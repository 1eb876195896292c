"""The Elasticsearch sink against a live cluster: set RELAY_TEST_ES_URL (and RELAY_TEST_ES_API_KEY
if it needs one; the credential must be allowed to manage index templates, ILM policies, indices
and API keys). Without it the test is skipped; `tests/test_elasticsearch_sink.py` runs the same
scenario against the fake.

With a credential, the relay ships with the operator key `relay es-setup` creates for its origin:
it must write and read back its own per-origin indices, and be refused another origin's, even
one whose slug starts with its own. An id of the relay taken by another document must keep the
batch until that document is removed.

Everything lives under a random index prefix and is deleted afterwards (the key invalidated).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, AuthorizationException

from relay.attest.batch import ZERO_HASH
from relay.core.document import Document
from relay.core.indices import index_name
from relay.serve import OperatorRelay
from relay.sinks.elasticsearch import make_client
from relay.sinks.es_setup import SetupPlan, run_setup
from tests.conftest import RunningRelay, from_network, request_event, signal_event

StartRelay = Callable[..., Any]


def record_commits(relay: OperatorRelay, into: dict[str, Document]) -> None:
    """Keep every document the outbox commits: a spy, the real commit still runs."""
    commit = relay.outbox.commit

    def recording(head: Any, documents: Any, *, log_leaf: bytes, sealed_at_ms: int) -> None:
        commit(head, documents, log_leaf=log_leaf, sealed_at_ms=sealed_at_ms)
        into.update((doc.id, doc) for doc in documents)

    relay.outbox.commit = recording  # type: ignore[method-assign]


def window_events(tag: str) -> list[dict[str, Any]]:
    """Three contributors (k = 3 in the tests) on two nodes, with every distribution filled."""
    events = []
    for n, client in enumerate(("a", "b", "c")):
        for node in ("d1", "d2"):
            events.append(
                request_event(
                    node,
                    client=f"{tag}-{client}",
                    ttfb_ms=20 + n,
                    duration_ms=400 + 10 * n,
                    bytes=1_000_000,
                )
            )
        events.append(signal_event("d1", client=f"{tag}-{client}"))
    return events


async def post_window(running: RunningRelay, tag: str) -> int:
    """POST one window's events, each contributor from its own network (k_networks = k = 3);
    every request must be accepted whatever the sink is doing."""
    events = window_events(tag)
    by_client: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_client.setdefault(event["client"], []).append(event)
    for network, mine in enumerate(by_client.values()):
        status, body = await running.post(
            "/v1/events", {"events": mine}, headers=from_network(network)
        )
        assert status == 202, body
        assert body["accepted"] == len(mine), body
    return len(events)


def assert_stored_exactly(expected: dict[str, Document], stored: dict[str, Document]) -> None:
    """The sink holds exactly the outbox's documents, and their chain is complete and linked."""
    assert sorted(stored) == sorted(expected)
    for doc_id, document in expected.items():
        assert stored[doc_id] == document, doc_id
    batches = sorted(
        (d.source for d in stored.values() if "att" not in d.source), key=lambda s: s["seq"]
    )
    assert [b["seq"] for b in batches] == list(range(len(batches)))
    prev = base64.b64encode(ZERO_HASH).decode()
    for batch in batches:
        assert batch["prev"] == prev, batch["seq"]
        msg = batch["signed"].encode("utf-8")
        assert base64.b64encode(hashlib.sha256(msg).digest()).decode() == batch["batch_hash"]
        summaries = [
            d for d in stored.values() if "att" in d.source and d.source["seq"] == batch["seq"]
        ]
        assert len(summaries) == batch["n"], batch["seq"]
        prev = batch["batch_hash"]


async def read_back(client: AsyncElasticsearch, prefix: str) -> dict[str, Document]:
    await client.indices.refresh(index=f"{prefix}*")
    found = await client.search(index=f"{prefix}*", query={"match_all": {}}, size=10_000)
    return {
        hit["_id"]: Document(hit["_index"], hit["_id"], hit["_source"])
        for hit in found["hits"]["hits"]
    }


async def live_scenario(
    start_relay: StartRelay, make_settings: Callable[..., Any], url: str, api_key: str | None
) -> None:
    """Set up, ship three windows, restart, ship one more (its id taken first, then freed),
    read everything back, clean up."""
    prefix = f"relaytest-{secrets.token_hex(4)}-"
    client = make_client(url, api_key=api_key)
    origin = make_settings().origin
    # Without a credential the cluster has no security, hence no API keys to scope.
    origins = (origin,) if api_key is not None else ()
    plan = SetupPlan(index_prefix=prefix, retention_days=1, operator_origins=origins)
    committed: dict[str, Document] = {}
    try:
        lines: list[str] = []
        await run_setup(client, plan, lines.append)
        operator_key = api_key
        if origins:
            [shown] = [n for n, line in enumerate(lines) if "shown only this once" in line]
            operator_key = lines[shown + 1].strip()
            await assert_scoped(url, operator_key, prefix)
        sink = {
            "type": "elasticsearch",
            "url": url,
            "api_key": operator_key,
            "index_prefix": prefix,
        }
        first: RunningRelay = await start_relay(sink=sink)
        record_commits(first.relay, committed)
        accepted = 0
        for window in range(3):
            accepted += await post_window(first, f"w{window}")
            assert await first.seal_after(70 if window == 0 else 60) == 1
            assert await first.relay.shipper.ship_pending()
        await first.relay.stop()

        # Another document at the id of the next batch: kept out until it is removed.
        last = committed[f"{origin}|b|2"]
        taken = index_name(prefix, "batches", origin, last.source["window_end_ms"])
        forged = {**last.source, "seq": 3}
        await client.create(index=taken, id=f"{origin}|b|3", document=forged)
        second: RunningRelay = await start_relay(make_settings(sink=sink))
        record_commits(second.relay, committed)
        accepted += await post_window(second, "after-restart")
        assert await second.seal_after(60) == 1
        assert not await second.relay.shipper.ship_pending()
        assert second.relay.shipper.conflicted
        await client.delete(index=taken, id=f"{origin}|b|3")
        assert await second.relay.shipper.ship_pending()

        stored = await read_back(client, prefix)
        assert_stored_exactly(committed, stored)
        assert (
            sum(d.source["stats"]["accepted"] for d in stored.values() if "att" not in d.source)
            == accepted
        )
    finally:
        # By name: ES 8 refuses wildcard deletes (action.destructive_requires_name).
        indices = sorted({doc.index for doc in committed.values()})
        if indices:
            await client.indices.delete(index=",".join(indices), ignore_unavailable=True)
        for name in plan.templates():
            await client.options(ignore_status=404).indices.delete_index_template(name=name)
        await client.options(ignore_status=404).ilm.delete_lifecycle(name=plan.policy)
        for origin in origins:
            name = f"{prefix}operator:{origin}"
            await client.options(ignore_status=404).security.invalidate_api_key(name=name)
        await client.close()


async def assert_scoped(url: str, operator_key: str, prefix: str) -> None:
    """The operator key of origin `test.relay/one` writes its own indices, no one else's."""
    client = make_client(url, api_key=operator_key)
    document = {"origin": "test.relay/one", "seq": 0}
    try:
        for other in (
            f"{prefix}batches-test-relay-other-2026.01",
            f"{prefix}batches-test-relay-one-x-2026.01",  # origin test.relay/one/x
            f"{prefix}batches-2026.01",  # the shared index before per-origin indices
        ):
            with pytest.raises(AuthorizationException):
                await client.create(index=other, id="scope-check", document=document)
    finally:
        await client.close()


async def test_live_elasticsearch(
    start_relay: StartRelay, make_settings: Callable[..., Any]
) -> None:
    url = os.environ.get("RELAY_TEST_ES_URL")
    if not url:
        pytest.skip(
            "RELAY_TEST_ES_URL is not set, so there is no live Elasticsearch to test against "
            "(the same scenario runs against the fake in test_elasticsearch_sink.py)"
        )
    await live_scenario(start_relay, make_settings, url, os.environ.get("RELAY_TEST_ES_API_KEY"))
