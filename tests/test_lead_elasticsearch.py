"""The Elasticsearch-backed lead answers exactly what the store-backed one does, for the same data.

The fixture's documents are shipped by relay's own Elasticsearch sink into the fake
(tests/fake_elasticsearch_search.py, which evaluates the lead's queries and aggregations), after
`relay es-setup`'s templates were installed. Then every lead endpoint is asked the same questions
through both sources, and the answers must be equal, number for number.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import groupby
from pathlib import Path
from typing import Any

import pytest

from relay.attest.keys import OperatorKey
from relay.core.indices import origin_slug
from relay.lead.es_source import ElasticsearchSource
from relay.lead.server import build_service
from relay.lead.service import LeadService
from relay.lead.timerange import TimeRange
from relay.metrics import RelayMetrics
from relay.registry import OperatorEntry, Registry, RegistryKey
from relay.sinks.dead_letter import DeadLetterFile
from relay.sinks.elasticsearch import ElasticsearchSink, make_client
from relay.sinks.es_setup import SetupPlan, run_setup
from relay.sinks.store import EmbeddedStore
from tests.conftest import T0_MS
from tests.fake_elasticsearch_search import SearchingElasticsearch
from tests.test_lead_api import tamper
from tests.test_lead_data import (
    NOW_MS,
    ORIGIN_A,
    ORIGIN_B,
    WINDOW_MS,
    build_store,
    lead_service,
    lead_settings,
)

RANGE = TimeRange(T0_MS, T0_MS + 2 * WINDOW_MS)


async def ship_store(store_path: Path, es: SearchingElasticsearch, tmp_path: Path) -> None:
    client = make_client(es.url)
    try:
        await run_setup(client, SetupPlan(), lambda line: None)
        sink = ElasticsearchSink(client, DeadLetterFile(tmp_path / "dead.ndjson"), RelayMetrics())
        store = EmbeddedStore(store_path, readonly=True)
        try:
            for _, batch in groupby(store.documents(), key=lambda d: d.id.split("|")[::2]):
                await sink.ship(list(batch))
        finally:
            store.close()
    finally:
        await client.close()


@pytest.fixture
async def both(tmp_path: Path) -> AsyncIterator[tuple[LeadService, LeadService, Any]]:
    settings = await build_store(tmp_path)
    es = SearchingElasticsearch()
    await es.start()
    await ship_store(settings.data_dir / "store.sqlite", es, tmp_path)
    assert len(es.documents()) == 4 + 10
    store = await lead_service(settings)
    source = ElasticsearchSource(es.url, api_key=None, index_prefix="relay-", ca_certs=None)
    elastic = await build_service(settings, source, lambda: NOW_MS)
    yield store, elastic, (settings, es)
    await store.source.close()
    await elastic.source.close()
    await es.close()


async def answers(service: LeadService, include_unverified: bool) -> list[Any]:
    flags = {"include_unverified": include_unverified}
    return [
        await service.nodes(RANGE, role=None, region=None, **flags),
        await service.nodes(RANGE, role="distributor", region="EU", **flags),
        await service.series("distributor", "d1", RANGE, step_ms=None, region=None, **flags),
        await service.series("distributor", "d1", RANGE, step_ms=120_000, region=None, **flags),
        await service.series("storage", "s1", RANGE, step_ms=60_000, region="NA", **flags),
        await service.operators(),
        await service.batches(origin=None, time_range=RANGE, limit=3, offset=1, **flags),
        await service.batches(origin=ORIGIN_B, time_range=RANGE, limit=10, offset=0, **flags),
        await service.batch(ORIGIN_A, 0, **flags),
        await service.summary(ORIGIN_A, 0, 1, **flags),
        await service.checkpoints(ORIGIN_A, limit=10, **flags),
    ]


async def test_store_and_elasticsearch_give_identical_answers(
    both: tuple[LeadService, LeadService, Any],
) -> None:
    store, elastic, _ = both
    assert (
        elastic.verification.current.report.verified == store.verification.current.report.verified
    )
    by_store = await answers(store, include_unverified=False)
    assert await answers(elastic, include_unverified=False) == by_store
    # Not vacuous: the answers hold the fixture's numbers.
    assert by_store[0]["nodes"][0]["requests"] == 41
    assert len(by_store[2]["points"]) == 2


async def test_identical_when_a_batch_does_not_verify(
    both: tuple[LeadService, LeadService, Any],
) -> None:
    store, elastic, (settings, es) = both
    changes = {"requests": 900, "outcomes": {"ok": 900}}
    tamper(settings, f"{ORIGIN_B}|s|0|0", **changes)
    (index,) = [name for name, docs in es.indices.items() if f"{ORIGIN_B}|s|0|0" in docs]
    es.indices[index][f"{ORIGIN_B}|s|0|0"].update(changes)
    await store.verification.refresh()
    await elastic.verification.refresh(force=True)  # an edit in place: the periodic full check
    assert (ORIGIN_B, 0) not in elastic.verification.current.report.verified
    for include in (False, True):
        by_store = await answers(store, include_unverified=include)
        assert await answers(elastic, include_unverified=include) == by_store
    assert by_store[0]["nodes"][0]["unverified"] == {"summaries": 1, "requests": 900}


async def test_documents_under_the_index_names_before_per_origin_indices_are_read(
    both: tuple[LeadService, LeadService, Any],
) -> None:
    store, elastic, (_, es) = both
    # Origin A's documents as a relay shipped them before indices were per origin:
    # relay-batches-YYYY.MM and relay-summaries-YYYY.MM, shared by every origin.
    slug = f"-{origin_slug(ORIGIN_A)}-"
    moved = [index for index in es.indices if slug in index]
    assert moved
    for index in moved:
        es.indices.setdefault(index.replace(slug, "-"), {}).update(es.indices.pop(index))
    await elastic.verification.refresh(force=True)
    assert (
        elastic.verification.current.report.verified == store.verification.current.report.verified
    )
    assert {origin for origin, _ in elastic.verification.current.report.verified} == {
        ORIGIN_A,
        ORIGIN_B,
    }
    by_elastic = await answers(elastic, include_unverified=False)
    # The batch and summary answers name the index the document was read from.
    renamed = {index.replace(slug, "-"): index for index in moved}
    for answer in by_elastic[8:10]:
        answer["document"]["_index"] = renamed[answer["document"]["_index"]]
    assert by_elastic == await answers(store, include_unverified=False)


async def test_an_empty_cluster(tmp_path: Path) -> None:
    key = OperatorKey.generate(ORIGIN_A)
    entry = OperatorEntry(origin=ORIGIN_A, keys=[RegistryKey(vkey=key.verifier.encode())])
    Registry(operators=[entry]).save(tmp_path / "registry.yaml")
    es = SearchingElasticsearch()
    await es.start()
    source = ElasticsearchSource(es.url, api_key=None, index_prefix="relay-", ca_certs=None)
    service = await build_service(lead_settings(tmp_path), source, lambda: NOW_MS)
    try:
        nodes = await service.nodes(RANGE, role=None, region=None, include_unverified=True)
        assert nodes["nodes"] == []
        (operator,) = (await service.operators())["operators"]
        assert (operator["origin"], operator["state"], operator["head"]) == (
            ORIGIN_A,
            "no_data",
            None,
        )
    finally:
        await source.close()
        await es.close()
