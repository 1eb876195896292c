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
from elasticsearch import AuthorizationException

from relay.config import Settings
from relay.core.document import Document
from relay.metrics import RelayMetrics
from relay.sinks.base import SinkConflictError, SinkError, SinkUnauthorizedError
from relay.sinks.dead_letter import DeadLetterFile
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
    # Indices are named after the origin: one that makes them too long for ES is refused.
    with pytest.raises(ValueError, match="exceed Elasticsearch's 255 bytes"):
        Settings(origin="o" * 240, sink={"type": ES, "url": "http://es:9200"})


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
        if name.startswith("relay-operator:"):
            # Only the origin's own indices, written and read back, never another origin's.
            slug = "relay-example-org-" + name[-4:]
            assert grant["names"] == [
                f"relay-batches-{slug}-????.??",
                f"relay-summaries-{slug}-????.??",
            ]
            assert grant["privileges"] == ["create_doc", "auto_configure", "read"]
        else:
            assert grant["names"] == ["relay-*"]
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


# -- ids taken by someone else (DESIGN §7: a 409 is success only if the stored document is ours) --


async def operator_key(fake: FakeElasticsearch, origin: str) -> str:
    """The encoded API key `relay es-setup --create-operator-key ORIGIN` creates and shows."""
    lines: list[str] = []
    client = make_client(fake.url)
    try:
        await run_setup(client, SetupPlan(operator_origins=(origin,)), lines.append)
    finally:
        await client.close()
    [shown] = [n for n, line in enumerate(lines) if "shown only this once" in line]
    return lines[shown + 1].strip()


def forged_batch(ours: dict[str, Any], seq: int) -> dict[str, Any]:
    """A batch document for ``seq`` that is not the relay's: another window's signed content."""
    return {**ours, "seq": seq, "stats": {**ours["stats"], "accepted": 999_999}}


async def test_a_taken_id_keeps_the_batch_and_alerts_until_the_document_is_removed(
    start_relay: StartRelay, fake_es: FakeElasticsearch, caplog: pytest.LogCaptureFixture
) -> None:
    await install_templates(fake_es)
    running: RunningRelay = await start_relay(sink=es_sink(fake_es))
    committed: dict[str, Document] = {}
    record_commits(running.relay, committed)
    windows = Windows(running)
    await windows.next("w0")
    await ship_until_empty(running)
    [batch0] = [d for d in fake_es.documents().values() if d.id == "test.relay/one|b|0"]
    assert batch0.index == "relay-batches-test-relay-one-" + batch0.index[-7:]

    # A key for origin "test-relay-one", made while no key for ours existed (es-setup refuses
    # a second origin of one slug), may write our indices: its holder takes the id of our next
    # batch before we ship it.
    other = make_client(fake_es.url, api_key=await operator_key(fake_es, "test-relay-one"))
    taken_id = "test.relay/one|b|1"
    try:
        await other.create(index=batch0.index, id=taken_id, document=forged_batch(batch0.source, 1))
    finally:
        await other.close()
    forged = fake_es.indices[batch0.index][taken_id]

    await windows.next("w1")
    await windows.next("w2")
    for _ in range(3):
        assert not await running.relay.shipper.ship_pending()
    assert running.relay.outbox.depth()[0] == 2  # kept, and seq 2 waits behind it
    assert fake_es.indices[batch0.index][taken_id] == forged  # create-only: never overwritten
    assert "relay_sink_conflict 1.0" in await metrics_text(running)
    assert metric(running, "relay_sink_retries_total", sink=ES, reason="conflict") >= 3
    assert metric(running, "relay_ship_attempts_total", sink=ES, outcome="conflict") >= 3
    status, body = await readyz(running)
    assert status == 200 and body["ready"] is True  # informational, like sink_authorized
    assert body["checks"]["sink_content_matches"] is False
    assert caplog.text.count("cannot be shipped to elasticsearch") == 1  # once, not per retry
    assert taken_id in caplog.text

    # The lead removes the other document: the batch ships, and the rest after it.
    lead = make_client(fake_es.url)
    try:
        await lead.delete(index=batch0.index, id=taken_id)
    finally:
        await lead.close()
    await ship_until_empty(running)
    assert "relay_sink_conflict 0.0" in await metrics_text(running)
    assert (await readyz(running))[1]["checks"]["sink_content_matches"] is True
    await running.relay.stop()
    assert_stored_exactly(committed, fake_es.documents())
    batches = [d.source for d in fake_es.documents().values() if "att" not in d.source]
    assert sum(b["stats"]["accepted"] for b in batches) == windows.accepted


async def test_a_resent_batch_found_stored_counts_as_shipped(
    tmp_path: Path, fake_es: FakeElasticsearch
) -> None:
    metrics = RelayMetrics()
    dead = DeadLetterFile(tmp_path / "dead-letter.ndjson")
    documents = [
        Document("relay-batches-o-2026.01", "o|b|0", {"origin": "o", "seq": 0, "flag": True}),
        Document("relay-summaries-o-2026.01", "o|s|0|0", {"origin": "o", "seq": 0, "i": 0}),
    ]
    # One sink per attempt: a new one knows nothing settled, as after a restart.
    sinks = [ElasticsearchSink(make_client(fake_es.url), dead, metrics) for _ in range(3)]
    try:
        await sinks[0].ship(documents)
        await sinks[1].ship(documents)
        assert fake_es.bulk_requests[-1] == [("o|b|0", 409), ("o|s|0|0", 409)]
        [mget] = fake_es.recorded("POST", "/_mget")
        assert [d["_id"] for d in mget.body["docs"]] == ["o|b|0", "o|s|0|0"]
        # Equal as JSON, not as Python: `1` where ours has `true` is another document.
        fake_es.indices["relay-batches-o-2026.01"]["o|b|0"]["flag"] = 1
        with pytest.raises(SinkConflictError, match=r"1 of our document ids .*o\|b\|0"):
            await sinks[2].ship(documents)
    finally:
        for sink in sinks:
            await sink.close()
    exists = {"sink": ES, "result": "exists"}
    assert metrics.registry.get_sample_value("relay_sink_documents_total", exists) == 3


async def test_a_key_that_cannot_read_back_pauses_shipping_on_a_409(
    tmp_path: Path, fake_es: FakeElasticsearch
) -> None:
    # An operator key made before keys could read back their own documents: create_doc only.
    admin = make_client(fake_es.url)
    try:
        role = {"cluster": [], "indices": [{"names": ["relay-*"], "privileges": ["create_doc"]}]}
        created = await admin.security.create_api_key(name="old", role_descriptors={"r": role})
    finally:
        await admin.close()
    documents = [Document("relay-batches-o-2026.01", "o|b|0", {"origin": "o", "seq": 0})]
    dead = DeadLetterFile(tmp_path / "dead-letter.ndjson")
    sinks = [
        ElasticsearchSink(make_client(fake_es.url, api_key=created["encoded"]), dead, metrics)
        for metrics in (RelayMetrics(), RelayMetrics())
    ]
    try:
        await sinks[0].ship(documents)  # created: no read needed
        with pytest.raises(SinkUnauthorizedError, match="reading back documents"):
            await sinks[1].ship(documents)  # after a restart: 409, and the key cannot look
    finally:
        for sink in sinks:
            await sink.close()


async def test_an_operator_key_writes_and_reads_only_its_own_origins_indices(
    fake_es: FakeElasticsearch,
) -> None:
    client = make_client(fake_es.url, api_key=await operator_key(fake_es, "relay.example.org/eu-1"))
    document = {"origin": "relay.example.org/eu-1", "seq": 0}
    own = "relay-summaries-relay-example-org-eu-1-2026.01"
    try:
        await client.create(index=own, id="x", document=document)
        found = await client.mget(docs=[{"_index": own, "_id": "x"}])
        assert found["docs"][0]["_source"] == document
        for other in (
            "relay-summaries-relay-example-org-us-1-2026.01",  # another origin
            "relay-summaries-relay-example-org-eu-1-b-2026.01",  # origin relay.example.org/eu-1/b
            "relay-summaries-2026.01",  # the shared index of relay before per-origin indices
            "relay-other",
        ):
            with pytest.raises(AuthorizationException):
                await client.create(index=other, id="x", document=document)
    finally:
        await client.close()


async def test_es_setup_refuses_operator_keys_for_origins_sharing_a_slug(
    fake_es: FakeElasticsearch,
) -> None:
    # Two origins of one slug would share indices: each key could write the other's.
    code, out = await es_setup(
        fake_es, "--create-operator-key", "relay.example.org/eu-1", "relay-example-org-eu-1"
    )
    assert code == 2
    assert "share the index slug 'relay-example-org-eu-1'" in out
    assert fake_es.api_keys == [] and fake_es.templates == {}  # nothing was changed

    code, out = await es_setup(fake_es, "--create-operator-key", "relay.example.org/eu-1")
    assert code == 0, out
    code, out = await es_setup(fake_es, "--create-operator-key", "Relay.Example.org/EU-1")
    assert code == 2 and "share the index slug" in out
    code, out = await es_setup(fake_es, "--create-operator-key", "relay.example.org/eu-1")
    assert code == 0 and "exists" in out  # the same origin again is no conflict


def test_privacy_and_stats_are_mapped_explicitly() -> None:
    """Strings under privacy.* are keywords (a `term` query on privacy.mode matches), numbers
    longs; a parameter added later is a keyword too, never `text` (issue 19)."""
    properties = batch_mappings()["properties"]
    privacy, stats = properties["privacy"]["properties"], properties["stats"]["properties"]
    keyword, long = {"type": "keyword"}, {"type": "long"}
    assert privacy["mode"] == privacy["geo"] == privacy["epsilon"] == keyword
    assert privacy["k"] == privacy["scale"] == privacy["delta"] == long
    assert all(mapping == long for mapping in stats.values())
    assert {"accepted", "rejected", "over_cap", "too_many"} <= set(stats)
    dynamic = {
        name: template
        for entry in batch_mappings()["dynamic_templates"]
        for name, template in entry.items()
    }
    assert {t["path_match"]: t["mapping"] for t in dynamic.values()} == {
        "privacy.*": keyword,
        "stats.*": keyword,
    }
    assert all(t["match_mapping_type"] == "string" for t in dynamic.values())


def test_templates_allow_auto_create() -> None:
    """A cluster whose action.auto_create_index refuses other names still creates relay's
    monthly indices on the first write."""
    templates = SetupPlan().templates()
    assert set(templates) == {"relay-batches", "relay-summaries"}
    assert all(template["allow_auto_create"] is True for template in templates.values())
