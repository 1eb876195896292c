"""The embedded store sink when one of the relay's ids is taken (DESIGN §7): create-only, and an
id already present counts as stored only if it holds the relay's own document."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from relay.core.document import Document
from relay.sinks.store import EmbeddedStore
from tests.conftest import RunningRelay, stored_documents
from tests.test_elasticsearch_live import post_window

StartRelay = Callable[..., Any]


async def test_a_taken_id_in_the_store_keeps_the_batch_until_it_is_removed(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    running: RunningRelay = await start_relay()
    relay = running.relay
    path = relay.settings.data_dir / "store.sqlite"
    await post_window(running, "w0")
    assert await running.seal_after(70) == 1
    assert await relay.shipper.ship_pending()
    [batch0] = [d for d in stored_documents(relay.settings.data_dir) if d.id.endswith("|b|0")]

    # Another writer of the store file puts a document at the id of the next batch.
    taken = Document(batch0.index, "test.relay/one|b|1", {**batch0.source, "seq": 1})
    other = EmbeddedStore(path)
    try:
        other.write([taken])
    finally:
        other.close()

    await post_window(running, "w1")
    assert await running.seal_after(60) == 1
    assert not await relay.shipper.ship_pending()
    assert not await relay.shipper.ship_pending()
    assert relay.outbox.depth()[0] == 1
    stored = {d.id: d for d in stored_documents(relay.settings.data_dir)}
    assert stored[taken.id] == taken  # left as it was
    sample = relay.metrics.registry.get_sample_value
    assert sample("relay_sink_conflict") == 1
    assert sample("relay_ship_attempts_total", {"sink": "store", "outcome": "conflict"}) >= 2
    assert relay.backpressure.checks()["sink_content_matches"] is False
    assert relay.backpressure.ready
    assert "cannot be shipped to store" in caplog.text

    # A person removes the other document: our batch is stored, and counts once.
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM documents WHERE doc_id = ?", (taken.id,))
    assert await relay.shipper.ship_pending()
    assert sample("relay_sink_conflict") == 0
    assert relay.backpressure.checks()["sink_content_matches"] is True
    stored = {d.id: d for d in stored_documents(relay.settings.data_dir)}
    assert stored[taken.id].source["signed"] != batch0.source["signed"]
    batches = [d.source for d in stored.values() if "att" not in d.source]
    assert [b["seq"] for b in batches] == [0, 1]


async def test_shipping_a_stored_batch_again_is_success(start_relay: StartRelay) -> None:
    running: RunningRelay = await start_relay()
    await post_window(running, "w0")
    assert await running.seal_after(70) == 1
    documents = list(stored_documents(running.relay.settings.data_dir))
    assert documents == []  # not shipped yet
    oldest = running.relay.outbox.oldest()
    assert oldest is not None
    _, batch = oldest
    await running.relay.sink.ship(batch)
    await running.relay.sink.ship(batch)  # a crash between storing and the outbox delete
    assert stored_documents(running.relay.settings.data_dir) == batch
