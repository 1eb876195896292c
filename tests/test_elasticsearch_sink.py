"""The Elasticsearch sink through every fault: the real client and relay against a fake server.

Events are posted over HTTP all along and every answer must be a 2xx: shipping faults never reach
apps. At the end the fake must hold exactly the documents the outbox committed, once each, with
the chain complete and linked. `relay es-setup` is checked here too, for what it sends.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.config import Settings
from relay.metrics import RelayMetrics
from relay.sinks.base import SinkError
from relay.sinks.dead_letter import DeadLetterFile
from relay.sinks.documents import Document
from relay.sinks.elasticsearch import ElasticsearchSink, make_client
from relay.sinks.es_setup import SetupPlan, batch_mappings, run_setup, summary_mappings
from tests.conftest import RunningRelay
from tests.fake_elasticsearch import FakeElasticsearch
from tests.test_elasticsearch_live import (
    assert_stored_exactly,
    live_scenario,
    post_window,
    record_commits,
)
from tests.test_pipeline import crash

StartRelay = Callable[..., Any]

# Retries every 10-50 ms and a 0.5 s request timeout keep the fault phases to seconds.
FAST = {"retry_base_seconds": 0.01, "retry_max_seconds": 0.05, "request_timeout_seconds": 0.5}
ES = "elasticsearch"


@pytest.fixture
async def fake_es() -> AsyncIterator[FakeElasticsearch]:
    fake = FakeElasticsearch()
    await fake.start()
    yield fake
    await fake.close()


def es_sink(fake: FakeElasticsearch, **overrides: Any) -> dict[str, Any]:
    return {"type": ES, "url": fake.url, **FAST, **overrides}


async def install_templates(fake: FakeElasticsearch) -> None:
    client = make_client(fake.url)
    try:
        await run_setup(client, SetupPlan(), lambda line: None)
    finally:
        await client.close()


def metric(running: RunningRelay, name: str, **labels: str) -> float:
    return running.relay.metrics.registry.get_sample_value(name, labels) or 0.0


async def ship_until_empty(running: RunningRelay) -> None:
    for _ in range(100):
        if await running.relay.shipper.ship_pending():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the outbox did not drain")


async def readyz(running: RunningRelay) -> tuple[int, Any]:
    async with running.http.get(running.operator_url("/readyz")) as resp:
        return resp.status, await resp.json()


async def metrics_text(running: RunningRelay) -> str:
    async with running.http.get(running.operator_url("/metrics")) as resp:
        return await resp.text()


def unmapped(source: dict[str, Any], mappings: dict[str, Any], path: str = "") -> list[str]:
    """Fields of `source` the mapping does not name (objects with `enabled: false` count)."""
    missing = []
    properties = mappings.get("properties", {})
    for name, value in source.items():
        mapping = properties.get(name)
        if mapping is None:
            missing.append(path + name)
        elif isinstance(value, dict) and mapping.get("type") not in ("histogram", "object"):
            missing += unmapped(value, mapping, f"{path}{name}.")
    return missing


class Windows:
    """Post one window of events, then seal it: one batch per call."""

    def __init__(self, running: RunningRelay) -> None:
        self.running = running
        self.accepted = 0
        self._first = True

    async def next(self, tag: str) -> None:
        self.accepted += await post_window(self.running, tag)
        assert await self.running.seal_after(70 if self._first else 60) == 1
        self._first = False


async def test_every_fault_then_every_document_stored_once(
    start_relay: StartRelay, fake_es: FakeElasticsearch
) -> None:
    await install_templates(fake_es)  # the fake then checks histograms as ES would
    running: RunningRelay = await start_relay(sink=es_sink(fake_es))
    committed: dict[str, Document] = {}
    record_commits(running.relay, committed)
    windows = Windows(running)
    faults = fake_es.faults

    # ok
    await windows.next("ok")
    assert await running.relay.shipper.ship_pending()
    assert set(fake_es.item_statuses) == {201}

    # partial 429s inside 200 answers: only the throttled items are sent again
    faults.throttle_every, faults.throttle_budget = 2, 2
    first_throttled = len(fake_es.bulk_requests)
    await windows.next("throttled")
    await ship_until_empty(running)
    assert fake_es.item_statuses[429] == 2
    requests = fake_es.bulk_requests[first_throttled:]
    for before, after in itertools.pairwise(requests):
        throttled = [doc_id for doc_id, status in before if status == 429]
        if throttled:
            assert [doc_id for doc_id, _ in after] == throttled
    assert metric(running, "relay_sink_retries_total", sink=ES, reason="throttled") == 2

    # outage: 503 for every request, then timeouts (ES applies the bulk, the answer is lost)
    faults.status = 503
    await windows.next("outage-1")
    await windows.next("outage-2")
    assert not await running.relay.shipper.ship_pending()
    assert running.relay.outbox.depth()[0] == 2  # kept, in order, while ES is away
    faults.status, faults.delay = None, 1.0
    assert not await running.relay.shipper.ship_pending()
    faults.delay = 0.0
    await ship_until_empty(running)
    assert metric(running, "relay_sink_retries_total", sink=ES, reason="server_error") > 0
    assert metric(running, "relay_sink_retries_total", sink=ES, reason="timeout") > 0
    # The timed-out bulk was stored all the same: its re-send answers 409, which counts as stored.
    assert metric(running, "relay_sink_documents_total", sink=ES, result="exists") > 0

    # 401, then 403: shipping pauses, ingest and readiness carry on
    faults.status = 401
    await windows.next("unauthorized")
    assert not await running.relay.shipper.ship_pending()
    assert "relay_sink_paused 1.0" in await metrics_text(running)
    status, body = await readyz(running)
    assert status == 200 and body["ready"] is True
    assert body["checks"]["sink_authorized"] is False
    faults.status = 403
    assert not await running.relay.shipper.ship_pending()
    assert running.relay.outbox.depth()[0] == 1  # nothing dropped while paused
    assert metric(running, "relay_ship_attempts_total", sink=ES, outcome="unauthorized") >= 2
    faults.status = None
    await ship_until_empty(running)
    assert "relay_sink_paused 0.0" in await metrics_text(running)
    assert (await readyz(running))[1]["checks"]["sink_authorized"] is True

    # ok again
    await windows.next("ok-again")
    await ship_until_empty(running)
    await running.relay.stop()

    stored = fake_es.documents()
    assert_stored_exactly(committed, stored)
    assert len(fake_es.created_order) == len(set(fake_es.created_order)) == len(committed)
    seqs = [stored[doc_id].source["seq"] for doc_id in fake_es.created_order]
    assert seqs == sorted(seqs)  # drained in seq order, after every fault
    batches = [d.source for d in stored.values() if "att" not in d.source]
    assert len(batches) == 6
    assert sum(b["stats"]["accepted"] for b in batches) == windows.accepted
    assert not (running.relay.settings.data_dir / "dead-letter.ndjson").exists()
    for document in stored.values():
        kind = summary_mappings() if "att" in document.source else batch_mappings()
        assert unmapped(document.source, kind) == [], document.id


async def test_malformed_document_is_dead_lettered_and_the_rest_ships(
    start_relay: StartRelay, fake_es: FakeElasticsearch, caplog: pytest.LogCaptureFixture
) -> None:
    running: RunningRelay = await start_relay(sink=es_sink(fake_es))
    committed: dict[str, Document] = {}
    record_commits(running.relay, committed)
    rejected = "test.relay/one|s|0|1"
    fake_es.faults.reject_ids.add(rejected)
    await Windows(running).next("w0")
    await ship_until_empty(running)

    assert running.relay.outbox.depth()[0] == 0
    dead = running.relay.settings.data_dir / "dead-letter.ndjson"
    [line] = dead.read_bytes().splitlines()
    letter = orjson.loads(line)
    assert Document.from_line(orjson.dumps(letter["document"])) == committed[rejected]
    assert letter["status"] == 400
    assert letter["error"]["type"] == "mapper_parsing_exception"
    assert metric(running, "relay_sink_documents_total", sink=ES, result="dead_letter") == 1
    assert "rejected document test.relay/one|s|0|1" in caplog.text
    expected = {doc_id: doc for doc_id, doc in committed.items() if doc_id != rejected}
    assert fake_es.documents() == expected


async def test_crash_with_a_bulk_in_flight_loses_and_duplicates_nothing(
    start_relay: StartRelay, make_settings: Callable[..., Settings], fake_es: FakeElasticsearch
) -> None:
    sink = es_sink(fake_es, request_timeout_seconds=30)
    first: RunningRelay = await start_relay(sink=sink)
    committed: dict[str, Document] = {}
    record_commits(first.relay, committed)
    # ES applies the first bulk but holds its answer: the relay crashes before hearing back.
    fake_es.faults.delay = 30
    windows = Windows(first)
    await windows.next("w0")
    await windows.next("w1")
    for _ in range(200):
        if fake_es.bulk_requests:
            break
        await asyncio.sleep(0.01)
    in_flight = fake_es.bulk_requests[0]
    assert in_flight and fake_es.created_order
    windows.accepted += await post_window(first, "w2")  # acknowledged, still only in the WAL
    await crash(first)
    await first.relay.sink.close()
    fake_es.faults.delay = 0.0

    second: RunningRelay = await start_relay(make_settings(sink=sink))
    record_commits(second.relay, committed)
    assert await second.seal_after(60) == 1  # w2, replayed from the WAL
    await ship_until_empty(second)

    assert_stored_exactly(committed, fake_es.documents())
    assert len(fake_es.created_order) == len(set(fake_es.created_order))
    assert fake_es.item_statuses[409] >= len(in_flight)  # re-sent, answered "already stored"
    batches = [d.source for d in fake_es.documents().values() if "att" not in d.source]
    assert sum(b["stats"]["accepted"] for b in batches) == windows.accepted


async def test_large_batches_are_split_and_items_retried_across_requests(
    tmp_path: Path, fake_es: FakeElasticsearch
) -> None:
    metrics = RelayMetrics()
    dead = DeadLetterFile(tmp_path / "dead-letter.ndjson")
    sink = ElasticsearchSink(make_client(fake_es.url), dead, metrics, max_request_bytes=200)
    documents = [
        Document("relay-summaries-2026.01", f"o|s|0|{i}", {"seq": 0, "i": i, "pad": "x" * 100})
        for i in range(5)
    ]
    fake_es.faults.throttle_every, fake_es.faults.throttle_budget = 3, 1
    try:
        with pytest.raises(SinkError, match="1 documents to retry"):
            await sink.ship(documents)
        assert [len(request) for request in fake_es.bulk_requests] == [1, 1, 1, 1, 1]
        await sink.ship(documents)
        assert fake_es.bulk_requests[-1] == [("o|s|0|2", 201)]
    finally:
        await sink.close()
    assert fake_es.documents() == {d.id: d for d in documents}


async def test_live_scenario_runs_against_the_fake(
    start_relay: StartRelay, make_settings: Callable[..., Settings], fake_es: FakeElasticsearch
) -> None:
    """The live suite's scenario, so its code is known to work before a cluster runs it."""
    await live_scenario(start_relay, make_settings, fake_es.url, "bGl2ZTprZXk=")
    assert fake_es.indices == {} and fake_es.templates == {} and fake_es.policies == {}


def test_elasticsearch_sink_settings() -> None:
    settings = Settings(sink={"type": ES, "url": "http://es:9200"})
    assert (settings.sink.retry_base_seconds, settings.sink.retry_max_seconds) == (0.5, 60)
    with pytest.raises(ValueError, match=r"sink\.url is required"):
        Settings(sink={"type": ES})
    with pytest.raises(ValueError, match="retry_max_seconds must be at least"):
        Settings(
            sink={"type": ES, "url": "http://es", "retry_base_seconds": 5, "retry_max_seconds": 1}
        )


# -- relay es-setup ------------------------------------------------------------------------------


async def es_setup(fake: FakeElasticsearch, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "es-setup",
        "--url",
        fake.url,
        "--user",
        "elastic",
        *args,
        env={**os.environ, "ELASTIC_PASSWORD": "changeme"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_es_setup_installs_templates_retention_and_scoped_keys(
    fake_es: FakeElasticsearch,
) -> None:
    code, out = await es_setup(
        fake_es,
        "--retention-days",
        "30",
        "--create-operator-key",
        "relay.example.org/eu-1",
        "relay.example.org/us-1",
        "--create-reader-key",
        "kibana",
    )
    assert code == 0, out
    # Basic auth from --user and ELASTIC_PASSWORD ("elastic:changeme")
    assert {r.headers["Authorization"] for r in fake_es.requests} == {
        "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="
    }

    [put_policy] = fake_es.recorded("PUT", "/_ilm/policy/relay-retention")
    phases = put_policy.body["policy"]["phases"]
    assert phases["delete"] == {"min_age": "30d", "actions": {"delete": {}}}

    [put_summaries] = fake_es.recorded("PUT", "/_index_template/relay-summaries")
    template = put_summaries.body
    assert template["index_patterns"] == ["relay-summaries-*"]
    assert template["template"]["settings"]["index.lifecycle.name"] == "relay-retention"
    fields = template["template"]["mappings"]["properties"]
    for name in ("ttfb_us", "duration_us", "throughput_bps"):
        assert fields[name] == {"type": "histogram"}
    assert fields["window_start_ms"] == {"type": "date", "format": "epoch_millis"}
    assert fields["att"] == {"type": "object", "enabled": False}
    assert fields["node"]["properties"]["id"] == {"type": "keyword"}
    [put_batches] = fake_es.recorded("PUT", "/_index_template/relay-batches")
    batch_fields = put_batches.body["template"]["mappings"]["properties"]
    for name in ("signed", "checkpoint", "sig"):
        assert batch_fields[name]["index"] is False

    created = fake_es.recorded("PUT", "/_security/api_key")
    roles = {r.body["name"]: r.body["role_descriptors"] for r in created}
    assert set(roles) == {
        "relay-operator:relay.example.org/eu-1",
        "relay-operator:relay.example.org/us-1",
        "relay-reader:kibana",
    }
    for name, descriptors in roles.items():
        [role] = descriptors.values()
        assert role["cluster"] == []
        [grant] = role["indices"]
        assert grant["names"] == ["relay-*"]
        if name.startswith("relay-operator:"):
            assert grant["privileges"] == ["create_doc", "auto_configure"]
        else:
            assert grant["privileges"] == ["read", "view_index_metadata"]
    assert out.count("created (id") == 3
    for key in fake_es.api_keys:
        assert key["id"] in out

    # Again: templates and policy are put again, keys are not created twice.
    code, again = await es_setup(fake_es, "--create-operator-key", "relay.example.org/eu-1")
    assert code == 0, again
    assert len(fake_es.recorded("PUT", "/_index_template/relay-summaries")) == 2
    assert "index template relay-summaries: updated" in again
    assert "exists" in again and len(fake_es.api_keys) == 3


async def test_es_setup_reports_an_unreachable_cluster(fake_es: FakeElasticsearch) -> None:
    fake_es.faults.status = 401
    code, out = await es_setup(fake_es)
    assert code == 2
    assert "relay es-setup:" in out and "401" in out
