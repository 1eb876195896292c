"""The aggregation and publication guarantees, end to end over real HTTP and real SQLite."""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import Callable
from typing import Any

import nacl.signing
import orjson
import pytest

from relay.attest.canonical import canonical_json
from relay.attest.merkle import leaf_hash, verify_inclusion
from relay.core.document import Document
from relay.serve import OperatorRelay
from tests.conftest import (
    T0_MS,
    RunningRelay,
    from_network,
    request_event,
    signal_event,
    stored_documents,
)


def eu_ip(n: int) -> str:
    """An address in GB in the n-th of distinct /24 source networks."""
    return f"81.2.{69 + n}.160"


def na_ip(n: int) -> str:
    """An address in the US in the n-th of distinct /24 source networks."""
    return f"8.8.{8 + n}.8"


StartRelay = Callable[..., Any]


def shipped(relay: OperatorRelay) -> list[Document]:
    """Every document in the relay's embedded store, in export order."""
    return stored_documents(relay.settings.data_dir)


async def ship(running: RunningRelay) -> list[Document]:
    assert await running.relay.shipper.ship_pending()
    return shipped(running.relay)


def batches(docs: list[Document]) -> list[dict[str, Any]]:
    return [d.source for d in docs if "att" not in d.source]


def summaries(docs: list[Document], seq: int) -> list[dict[str, Any]]:
    return [d.source for d in docs if "att" in d.source and d.source["seq"] == seq]


def balance(batch: dict[str, Any], sums: list[dict[str, Any]]) -> None:
    published = sum(s["requests"] + sum(s["signals"].values()) for s in sums)
    stats = batch["stats"]
    assert published == stats["accepted"] - stats["over_cap"] - stats["suppressed_events"]


async def post_from(running: RunningRelay, ip: str, events: list[dict[str, Any]]) -> None:
    status, body = await running.post(
        "/v1/events", {"events": events}, headers={"X-Forwarded-For": ip}
    )
    assert status == 202, body
    assert body["accepted"] == len(events), body


@pytest.fixture
async def geo_relay(start_relay: StartRelay) -> RunningRelay:
    running: RunningRelay = await start_relay(ingest={"trusted_proxies": ["127.0.0.0/8"]})
    return running


async def test_k_threshold_rolls_up_then_suppresses(geo_relay: RunningRelay) -> None:
    # Every contributor sends from its own network, so k_networks = k = 3 follows k here.
    # d1: 3 EU contributors (published), 2 NA contributors (fail, roll up to ZZ, still fail).
    for n, c in enumerate(("e1", "e2", "e3")):
        await post_from(geo_relay, eu_ip(n), [request_event("d1", client=c, ttfb_ms=20)])
    for n, c in enumerate(("n1", "n2")):
        await post_from(geo_relay, na_ip(n), [request_event("d1", "timeout", client=c)] * 2)
    # d2: 2 NA contributors + 1 unknown-region contributor: rolled up together they reach k=3.
    for n, c in enumerate(("n1", "n2")):
        await post_from(geo_relay, na_ip(n), [request_event("d2", client=c)])
    await post_from(geo_relay, "10.1.2.3", [signal_event("d2", client="z1")])

    assert await geo_relay.seal_after(70) == 1
    docs = await ship(geo_relay)
    (batch,) = batches(docs)
    sums = summaries(docs, batch["seq"])
    cells = {(s["node"]["id"], s["region"]): s for s in sums}
    assert set(cells) == {("d1", "EU"), ("d2", "ZZ")}
    assert cells[("d1", "EU")]["requests"] == 3
    assert cells[("d1", "EU")]["outcomes"] == {"ok": 3}
    assert cells[("d2", "ZZ")]["requests"] == 2
    assert cells[("d2", "ZZ")]["signals"] == {"playback_slow": 1}
    stats = batch["stats"]
    assert stats["accepted"] == 3 + 4 + 2 + 1
    assert stats["suppressed_cells"] == 1
    assert stats["suppressed_events"] == 4
    balance(batch, sums)
    # No subtraction reveals the suppressed cell: nothing published mentions NA for d1.
    assert all(s["outcomes"].get("timeout", 0) == 0 for s in sums if s["node"]["id"] == "d1")


async def test_contribution_bound_drops_and_counts_excess(relay_server: RunningRelay) -> None:
    flood = [request_event("d1", client="flooder")] * 60
    status, body = await relay_server.post("/v1/events", {"events": flood})
    assert (status, body["accepted"]) == (202, 60)
    for n, c in enumerate(("a", "b"), start=1):
        others = [request_event("d1", client=c)]
        await relay_server.post("/v1/events", {"events": others}, headers=from_network(n))
    await relay_server.seal_after(70)
    docs = await ship(relay_server)
    (batch,) = batches(docs)
    (cell,) = summaries(docs, batch["seq"])
    assert batch["stats"]["over_cap"] == 10
    assert cell["requests"] == 50 + 2
    balance(batch, [cell])


async def test_late_and_out_of_bounds_are_rejected(relay_server: RunningRelay) -> None:
    now = relay_server.clock()
    events = [
        request_event(ts=now - 86_400_000 - 1_000),  # older than max_past
        request_event(ts=now + 61_000),  # further than max_future
        request_event(ts=now),
    ]
    status, body = await relay_server.post("/v1/events", {"events": events})
    assert status == 202
    assert (body["accepted"], body["rejected"]) == (1, 2)
    assert [e["index"] for e in body["errors"]] == [0, 1]
    await relay_server.seal_after(70)
    # The first window is sealed now: an event stamped inside it is late.
    status, body = await relay_server.post("/v1/events", {"events": [request_event(ts=now)]})
    assert (status, body["accepted"], body["rejected"]) == (202, 0, 1)
    assert "sealed" in body["errors"][0]["reason"]
    await relay_server.seal_after(60)
    docs = await ship(relay_server)
    first, second = batches(docs)
    assert (first["stats"]["too_old"], first["stats"]["too_new"], first["stats"]["rejected"]) == (
        1,
        1,
        2,
    )
    assert (second["stats"]["late"], second["stats"]["rejected"]) == (1, 1)


async def test_every_window_yields_a_batch_and_the_chain_links(relay_server: RunningRelay) -> None:
    assert await relay_server.seal_after(70) == 1
    for _ in range(3):
        assert await relay_server.seal_after(60) == 1
    docs = await ship(relay_server)
    chain = batches(docs)
    assert [b["seq"] for b in chain] == [0, 1, 2, 3]
    assert all(b["n"] == 0 and "gap" not in b for b in chain)
    assert chain[0]["prev"] == base64.b64encode(bytes(32)).decode()
    for before, after in itertools.pairwise(chain):
        assert after["prev"] == before["batch_hash"]
        assert after["window_start_ms"] == before["window_end_ms"]
        digest = hashlib.sha256(before["signed"].encode()).digest()
        assert base64.b64decode(before["batch_hash"]) == digest
    assert chain[0]["window_start_ms"] == T0_MS


async def test_signature_verifies_from_the_verifier_key_string_alone(
    relay_server: RunningRelay,
) -> None:
    for n, c in enumerate("abc"):
        await relay_server.post(
            "/v1/events", {"events": [request_event(client=c)]}, headers=from_network(n)
        )
    await relay_server.seal_after(70)
    docs = await ship(relay_server)
    async with relay_server.http.get(relay_server.url("/v1/operator")) as resp:
        operator = await resp.json()
    origin, kid, key_b64 = operator["vkey"].split("+", 2)
    raw = base64.b64decode(key_b64)
    assert (origin, raw[0], len(raw)) == ("test.relay/one", 1, 33)
    verify_key = nacl.signing.VerifyKey(raw[1:])
    (batch,) = batches(docs)
    msg = batch["signed"].encode()
    verify_key.verify(msg, base64.b64decode(batch["sig"]))  # raises if bad
    header = orjson.loads(msg.removeprefix(b"telemetry-batch/v1\n"))
    assert header["kid"] == kid == operator["kid"]
    assert operator["head"] == {"seq": 0, "batch_hash": batch["batch_hash"]}
    # Each summary's signed leaf is its searchable fields in RFC 8785 form (document format 2
    # stores only its hash), and the proof leads from that hash to the signed root.
    assert header["schema"] == 2
    root = base64.b64decode(header["root"])
    for summary in summaries(docs, 0):
        att = summary["att"]
        assert set(att) == {"leaf_hash", "n", "proof"}
        leaf = canonical_json({k: v for k, v in summary.items() if k != "att"})
        assert base64.b64decode(att["leaf_hash"]) == leaf_hash(leaf)
        proof = [base64.b64decode(p) for p in att["proof"]]
        assert verify_inclusion(leaf_hash(leaf), summary["i"], att["n"], proof, root)
    with pytest.raises(nacl.exceptions.BadSignatureError):
        verify_key.verify(msg.replace(b'"n":1', b'"n":2'), base64.b64decode(batch["sig"]))


async def crash(running: RunningRelay) -> None:
    """Abandon a relay without stop(): nothing is sealed or flushed, only the WAL remains."""
    await running.http.close()
    await running.server.close()
    running.relay.shutting_down = True
    for task in running.relay._tasks:
        task.cancel()
    await running.relay.wal.close()
    running.relay.outbox.close()


async def test_restart_recovers_open_windows_and_spans_downtime(
    start_relay: StartRelay, make_settings: Callable[..., Any]
) -> None:
    first: RunningRelay = await start_relay()
    for n, c in enumerate(("a", "b")):
        await first.post(
            "/v1/events", {"events": [request_event(client=c)]}, headers=from_network(n)
        )
    await crash(first)

    first.clock.advance(30)  # restart within the same window
    second: RunningRelay = await start_relay(make_settings())
    # The same client from the same network in the same window after the restart stays one
    # contributor and one network thanks to the persisted salt: the cell has 2 of each (< k = 3)
    # and is suppressed. With a fresh salt "a" and its network would count twice and the cell
    # would be published.
    await second.post(
        "/v1/events", {"events": [request_event(client="a")]}, headers=from_network(0)
    )
    await crash(second)

    second.clock.advance(600)  # ten windows of downtime
    third: RunningRelay = await start_relay(make_settings())
    docs = await ship(third)
    chain = batches(docs)
    assert [b["seq"] for b in chain] == [0, 1]
    assert chain[0]["stats"]["accepted"] == 3
    assert chain[0]["stats"]["suppressed_events"] == 3
    assert chain[0]["n"] == 0
    gap = chain[1]
    assert gap["gap"] is True and gap["n"] == 0
    assert gap["window_start_ms"] == chain[0]["window_end_ms"]
    assert gap["window_end_ms"] - gap["window_start_ms"] > 60_000
    assert gap["prev"] == chain[0]["batch_hash"]
    # P8: the sealed window's WAL segments and salt are gone.
    wal_dir = third.relay.settings.data_dir / "wal"
    assert not list(wal_dir.glob("salt-*.bin"))
    assert all(p.stat().st_size == 0 for p in wal_dir.glob("segment-*.wal"))
