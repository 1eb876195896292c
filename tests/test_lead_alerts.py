"""Leads find out without looking: /metrics and webhook notifications over a node going down.

A real relay publishes, window by window, a story into its embedded store: node d1 healthy, then
down (two of three requests time out), then healthy again; node d2 healthy, then silent. The lead
reads the same store while the relay writes it, re-verifies after each phase, and is scraped over
HTTP; the answer is read with prometheus_client's text parser. The webhook tests post to a local
HTTP receiver started here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from relay.config import LeadMetricsConfig, LeadNotifyConfig, Settings
from relay.ingest.http import create_app, runner_options
from relay.lead.api import create_lead_app
from relay.lead.es_source import ElasticsearchSource
from relay.lead.exposition import render
from relay.lead.notify import Notifier
from relay.lead.server import build_service, open_source
from relay.lead.service import LeadService
from relay.lead.verification import VerificationCache
from relay.lead.watch import NodeWatch
from relay.serve import OperatorRelay
from tests.conftest import T0_MS, FakeClock
from tests.fake_elasticsearch_search import SearchingElasticsearch
from tests.test_lead_api import tamper
from tests.test_lead_data import (
    EU_IP,
    NOW_MS,
    ORIGIN_A,
    WINDOW_MS,
    build_store,
    client_network_ip,
    lead_service,
    lead_settings,
    relay_settings,
)
from tests.test_lead_elasticsearch import ship_store

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
CLIENTS = [f"c{i}" for i in range(4)]
#: Two windows and a bit: the lead judges nodes on the last two sealed windows.
RANGE_SECONDS = 150


def _requests(node: str, outcomes: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "kind": "request",
            "node": {"role": "distributor", "id": node},
            "client": client,
            "outcome": outcome,
            **({"ttfb_ms": 80, "duration_ms": 400} if outcome == "ok" else {}),
        }
        for client in CLIENTS
        for outcome in outcomes
    ]


# Per client and window. Healthy has a failure too (20 of 21 ok, 95.2 %): a node is judged on
# both kinds of report.
HEALTHY = ["ok"] * 20 + ["timeout"]
DOWN = ["ok", "timeout", "timeout"]


class Story:
    """One relay on a fake clock that the lead shares; `publish` seals one window per entry."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock = FakeClock(T0_MS + 15_000)  # 15 s into each window: past the lateness
        self.relay = OperatorRelay(relay_settings(root, ORIGIN_A), clock=self.clock)
        self.server: TestServer | None = None
        self.windows = 0

    async def start(self) -> None:
        await self.relay.start()
        self.server = TestServer(create_app(self.relay))
        await self.server.start_server(**runner_options(self.relay))

    async def publish(self, windows: list[dict[str, list[str]]]) -> None:
        """Per window, node -> outcomes each client reports; then seal and ship."""
        assert self.server is not None
        async with ClientSession() as http:
            for nodes in windows:
                events = [e for node, outcomes in nodes.items() for e in _requests(node, outcomes)]
                # Each client from its own network, as real users are (P5).
                for client in CLIENTS:
                    async with http.post(
                        self.server.make_url("/v1/events"),
                        json={"events": [e for e in events if e["client"] == client]},
                        headers={"X-Forwarded-For": client_network_ip(EU_IP, client)},
                    ) as resp:
                        assert resp.status == 202 and (await resp.json())["rejected"] == 0
                self.clock.advance(WINDOW_MS / 1000)
                assert await self.relay.seal_due() == 1
                self.windows += 1
        assert await self.relay.shipper.ship_pending()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
        await self.relay.stop()

    def lead_settings(self, **lead: Any) -> Settings:
        return lead_settings(self.root, **lead)

    async def lead(self, settings: Settings) -> LeadService:
        return await build_service(settings, open_source(settings), self.clock)


@pytest.fixture
async def story(tmp_path: Path) -> AsyncIterator[Story]:
    running = Story(tmp_path)
    await running.start()
    # Phase 1: five healthy windows of both nodes.
    await running.publish([{"d1": HEALTHY, "d2": HEALTHY}] * 5)
    yield running
    await running.stop()


async def phase_down(story: Story, service: LeadService) -> None:
    """d1 goes down for three windows; d2 falls silent."""
    await story.publish([{"d1": DOWN}] * 3)
    await service.verification.refresh()


async def phase_back(story: Story, service: LeadService) -> None:
    await story.publish([{"d1": HEALTHY}] * 3)
    await service.verification.refresh()


# -- /metrics ------------------------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def status(samples: Samples, node: str) -> str:
    on = [
        dict(labels)["status"]
        for (name, labels), v in samples.items()
        if name == "relay_lead_node_status" and dict(labels)["id"] == node and v == 1
    ]
    assert len(on) == 1, on
    return on[0]


class Scraper:
    def __init__(self, server: TestServer, http: ClientSession) -> None:
        self.server, self.http = server, http

    async def get(self, path: str, status: int = 200) -> tuple[str, str]:
        async with self.http.get(self.server.make_url(path)) as resp:
            assert resp.status == status
            return await resp.text(), resp.headers["Content-Type"]

    async def metrics(self) -> Samples:
        text, content_type = await self.get("/metrics")
        assert content_type.startswith("text/plain; version=0.0.4")
        return parse(text)


async def serve(app: web.Application) -> Scraper:
    server = TestServer(app)
    await server.start_server()
    return Scraper(server, ClientSession())


async def test_metrics_follow_a_node_going_down_and_coming_back(story: Story) -> None:
    settings = story.lead_settings()
    service = await story.lead(settings)
    watch = NodeWatch(service, LeadMetricsConfig(range_seconds=RANGE_SECONDS))
    scraper = await serve(create_lead_app(service, {}, watch))
    d1 = {"role": "distributor", "id": "d1"}
    d2 = {"role": "distributor", "id": "d2"}
    try:
        healthy = await scraper.metrics()
        assert status(healthy, "d1") == status(healthy, "d2") == "healthy"
        assert value(healthy, "relay_lead_node_requests", **d1) == 2 * 84  # two windows in range
        assert value(healthy, "relay_lead_node_success_ratio", **d1) == pytest.approx(20 / 21)
        assert value(healthy, "relay_lead_node_failures", outcome="timeout", **d1) == 8
        assert value(healthy, "relay_lead_node_failures", outcome="dns", **d1) == 0
        assert value(healthy, "relay_lead_node_operators", **d1) == 1
        assert value(healthy, "relay_lead_node_region_requests", region="EU", **d1) == 168
        # The last window ended 15 s before the lead's now.
        assert value(healthy, "relay_lead_node_last_window_age_seconds", **d1) == 15
        ttfb = value(healthy, "relay_lead_node_ttfb_seconds", quantile="0.9", **d1)
        assert ttfb == pytest.approx(0.08, rel=0.05)
        origin = {"origin": ORIGIN_A}
        assert value(healthy, "relay_lead_operator_head_seq", **origin) == 4
        assert value(healthy, "relay_lead_operator_batches", state="verified", **origin) == 5
        assert value(healthy, "relay_lead_operator_batches", state="failed", **origin) == 0
        assert value(healthy, "relay_lead_findings") == 0

        await phase_down(story, service)
        down = await scraper.metrics()
        assert status(down, "d1") == "down"
        assert value(down, "relay_lead_node_failures", outcome="timeout", **d1) == 16
        assert value(down, "relay_lead_node_success_ratio", **d1) == pytest.approx(1 / 3)
        assert value(down, "relay_lead_node_region_status", region="EU", status="down", **d1) == 1
        # d2 is silent: still listed, with no requests, no judgement and a growing age.
        assert value(down, "relay_lead_node_requests", **d2) == 0
        assert status(down, "d2") == "unknown"
        assert value(down, "relay_lead_node_success_ratio", **d2) is None
        assert value(down, "relay_lead_node_last_window_age_seconds", **d2) == 3 * 60 + 15
        assert value(down, "relay_lead_operator_head_seq", **origin) == 7

        await phase_back(story, service)
        back = await scraper.metrics()
        assert status(back, "d1") == "healthy"
        assert value(back, "relay_lead_metrics_seconds") is not None
    finally:
        await scraper.http.close()
        await scraper.server.close()
        await service.source.close()


async def test_only_verified_data_and_findings_are_exposed(story: Story) -> None:
    settings = story.lead_settings()
    tamper(settings, f"{ORIGIN_A}|s|4|0", requests=900, outcomes={"ok": 900})
    service = await story.lead(settings)
    watch = NodeWatch(service, LeadMetricsConfig(range_seconds=RANGE_SECONDS))
    scraper = await serve(create_lead_app(service, {"prometheus": "t0ken"}, watch))
    try:
        await scraper.get("/metrics", status=401)  # the same tokens as /v1
        scraper.http.headers["Authorization"] = "Bearer t0ken"
        samples = await scraper.metrics()
        d1 = {"role": "distributor", "id": "d1"}
        # Batch 4 (the last window) no longer counts: only window 3 is left in the range.
        assert value(samples, "relay_lead_node_requests", **d1) == 84
        origin = {"origin": ORIGIN_A}
        assert value(samples, "relay_lead_operator_batches", state="failed", **origin) == 1
        assert value(samples, "relay_lead_operator_findings", code="leaf_mismatch", **origin) == 1
        assert value(samples, "relay_lead_findings") == 1
        assert value(samples, "relay_lead_operator_head_seq", **origin) == 4
        # The shipped alert rules ask only for names this scrape has.
        rules = (RULES / "relay-lead.rules.yml").read_text(encoding="utf-8")
        asked = set(re.findall(r"relay_lead_[a-z_]+", rules))
        assert asked and asked <= {name for name, _ in samples}
    finally:
        await scraper.http.close()
        await scraper.server.close()
        await service.source.close()


async def test_max_nodes_keeps_the_busiest(story: Story) -> None:
    await story.publish([{"d1": HEALTHY * 2, "d2": HEALTHY}])
    service = await story.lead(story.lead_settings())
    watch = NodeWatch(service, LeadMetricsConfig(range_seconds=RANGE_SECONDS, max_nodes=1))
    try:
        snapshot = await watch.snapshot()
        assert [(n.id, n.figures["requests"]) for n in snapshot.nodes] == [("d1", 252)]
        assert snapshot.omitted == 1
    finally:
        await service.source.close()


async def test_a_restarted_lead_finds_silent_nodes_by_seeding(story: Story) -> None:
    service = await story.lead(story.lead_settings())
    await phase_down(story, service)  # d2 silent since before this lead started
    watch = NodeWatch(service, LeadMetricsConfig(range_seconds=RANGE_SECONDS))
    try:
        assert [n.id for n in (await watch.snapshot()).nodes] == ["d1"]
        await watch.seed()
        d2 = {n.id: n for n in (await watch.snapshot()).nodes}["d2"]
        assert d2.figures["requests"] == 0 and d2.figures["status"] == "unknown"
        assert d2.last_window_end_ms == T0_MS + 5 * WINDOW_MS
        # Forgotten once older than remember_seconds.
        story.clock.advance(3600)
        forgetful = NodeWatch(service, LeadMetricsConfig(range_seconds=60, remember_seconds=3000))
        await forgetful.seed()
        assert (await forgetful.snapshot()).nodes == []
    finally:
        await service.source.close()


async def test_healthz_and_readyz(story: Story) -> None:
    settings = story.lead_settings()
    service = await story.lead(settings)
    scraper = await serve(create_lead_app(service, {"dashboard": "s3cret"}))
    # A lead whose first verification has not run yet is live but not ready.
    cache = VerificationCache(
        service.source, settings.registry_path, clock=story.clock, interval_seconds=60
    )
    unready = LeadService(service.source, cache, settings.lead.thresholds, story.clock)
    not_yet = await serve(create_lead_app(unready, {}))
    try:
        await scraper.get("/healthz")  # no token needed
        ready, _ = await scraper.get("/readyz")
        assert orjson.loads(ready) == {
            "ready": True,
            "checks": {"verified": True, "source_answers": True},
        }
        await not_yet.get("/healthz")
        answer, content_type = await not_yet.get("/readyz", status=503)
        assert content_type == "application/json; charset=utf-8"
        assert orjson.loads(answer)["checks"] == {"verified": False, "source_answers": True}
    finally:
        for running in (scraper, not_yet):
            await running.http.close()
            await running.server.close()
        await service.source.close()


# -- webhooks ------------------------------------------------------------------------------------


class Receiver:
    """A local webhook endpoint: records every body; answers `fail_first` posts with 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: dict[str, list[dict[str, Any]]] = {}
        self.posts = 0
        self.fail_first = fail_first
        app = web.Application()
        app.router.add_post("/{hook}", self.handle)
        self.server = TestServer(app)

    async def handle(self, request: web.Request) -> web.Response:
        self.posts += 1
        if self.posts <= self.fail_first:
            return web.Response(status=503)
        self.bodies.setdefault(request.match_info["hook"], []).append(await request.json())
        return web.Response(status=204)

    def url(self, hook: str) -> str:
        return str(self.server.make_url(f"/{hook}"))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = Receiver()
    await running.server.start_server()
    yield running
    await running.server.close()


def notifier_for(
    service: LeadService, receiver: Receiver, registry: CollectorRegistry, **notify: Any
) -> Notifier:
    config = LeadNotifyConfig(
        webhooks=[
            {"url": receiver.url("generic"), "format": "json"},
            {"url": receiver.url("discord"), "format": "discord"},
            {"url": receiver.url("slack"), "format": "slack"},
        ],
        retry_initial_seconds=0.01,
        **notify,
    )
    watch = NodeWatch(service, LeadMetricsConfig(range_seconds=RANGE_SECONDS))
    return Notifier(config, watch, registry)


async def evaluate_twice(notifier: Notifier) -> None:
    """Two refreshes in a row: a change is told once, not per refresh."""
    await notifier.evaluate()
    await notifier.evaluate()
    await notifier.drain()


async def test_one_message_per_status_change(story: Story, receiver: Receiver) -> None:
    settings = story.lead_settings()
    service = await story.lead(settings)
    registry = CollectorRegistry()
    notifier = notifier_for(service, receiver, registry)
    await notifier.start()
    try:
        await evaluate_twice(notifier)
        assert receiver.bodies == {}  # all healthy: nothing to tell

        await phase_down(story, service)
        await evaluate_twice(notifier)
        generic = receiver.bodies["generic"]
        assert [(m["event"], m["node"]["id"], m["from"], m["to"]) for m in generic] == [
            ("node_status", "d1", "healthy", "down")
        ]
        assert generic[0]["reasons"] == ["66.7 % of requests failed"]
        assert generic[0]["success_ratio"] == pytest.approx(1 / 3)
        text = "distributor d1 is down (last 2 min): 66.7 % of requests failed"
        assert generic[0]["text"] == text
        assert receiver.bodies["discord"] == [{"content": text}]
        assert receiver.bodies["slack"] == [{"text": text}]

        await phase_back(story, service)
        await evaluate_twice(notifier)
        assert [(m["from"], m["to"]) for m in receiver.bodies["generic"][1:]] == [
            ("down", "healthy")
        ]
        assert receiver.bodies["slack"][1] == {
            "text": "distributor d1 is no longer down: now healthy (last 2 min)"
        }

        tamper(settings, f"{ORIGIN_A}|s|0|0", requests=900)
        await service.verification.refresh()
        await evaluate_twice(notifier)
        findings = receiver.bodies["generic"][2:]
        assert [(m["event"], m["origin"], m["new_codes"]) for m in findings] == [
            ("findings", ORIGIN_A, ["leaf_mismatch"])
        ]
        assert all(len(bodies) == 3 for bodies in receiver.bodies.values())
        assert (
            registry.get_sample_value(
                "relay_lead_notifications_total", {"webhook": "0", "result": "sent"}
            )
            == 3
        )
    finally:
        await notifier.close()
        await service.source.close()


async def test_retries_with_backoff_and_a_cap_per_hour(story: Story) -> None:
    receiver = Receiver(fail_first=2)
    await receiver.server.start_server()
    service = await story.lead(story.lead_settings())
    registry = CollectorRegistry()
    hour = [0.0]
    notifier = Notifier(
        LeadNotifyConfig(
            webhooks=[{"url": receiver.url("generic")}],
            retry_initial_seconds=0.01,
            max_per_hour=1,
        ),
        NodeWatch(service, LeadMetricsConfig(range_seconds=RANGE_SECONDS)),
        registry,
        monotonic=lambda: hour[0],
    )
    count: Callable[[str], float | None] = lambda result: registry.get_sample_value(  # noqa: E731
        "relay_lead_notifications_total", {"webhook": "0", "result": result}
    )
    await notifier.start()
    try:
        await evaluate_twice(notifier)
        await phase_down(story, service)
        await evaluate_twice(notifier)
        # Two 503s, then delivered: one message, two retries.
        assert [m["to"] for m in receiver.bodies["generic"]] == ["down"]
        assert receiver.posts == 3
        assert (
            registry.get_sample_value("relay_lead_notification_retries_total", {"webhook": "0"})
            == 2
        )
        # The recovery within the same hour is over the cap of one: dropped and counted.
        await phase_back(story, service)
        await evaluate_twice(notifier)
        assert len(receiver.bodies["generic"]) == 1
        assert (count("sent"), count("capped")) == (1, 1)
        # An hour later the webhook gets messages again.
        hour[0] += 3600
        await phase_down(story, service)
        await evaluate_twice(notifier)
        assert [m["to"] for m in receiver.bodies["generic"]] == ["down", "down"]
    finally:
        await notifier.close()
        await service.source.close()
        await receiver.server.close()


async def test_a_webhook_that_never_answers_gives_up(story: Story) -> None:
    receiver = Receiver(fail_first=100)
    await receiver.server.start_server()
    service = await story.lead(story.lead_settings())
    registry = CollectorRegistry()
    notifier = notifier_for(service, receiver, registry, attempts=3)
    await notifier.start()
    try:
        await phase_down(story, service)
        # The first comparison of a lead tells what is already wrong; it had not seen d1 before.
        first = await notifier.evaluate()
        assert [(m["node"]["id"], m["from"], m["to"]) for m in first] == [("d1", None, "down")]
        assert await notifier.evaluate() == []
        await asyncio.wait_for(notifier.drain(), 10)
        assert receiver.posts == 3 * 3  # three webhooks, three tries each
        assert (
            registry.get_sample_value(
                "relay_lead_notifications_total", {"webhook": "2", "result": "failed"}
            )
            == 1
        )
    finally:
        await notifier.close()
        await service.source.close()
        await receiver.server.close()


async def test_elasticsearch_and_the_store_expose_the_same_metrics(tmp_path: Path) -> None:
    """The same documents through both sources: the same samples, number for number."""
    settings = await build_store(tmp_path)
    es = SearchingElasticsearch()
    await es.start()
    await ship_store(settings.data_dir / "store.sqlite", es, tmp_path)
    store = await lead_service(settings)
    source = ElasticsearchSource(es.url, api_key=None, index_prefix="relay-", ca_certs=None)
    elastic = await build_service(settings, source, lambda: NOW_MS)
    # Only how long each source took to verify may differ.
    timing = "relay_lead_verification_seconds"
    try:
        by_source = []
        for service in (store, elastic):
            snapshot = await NodeWatch(service, LeadMetricsConfig()).snapshot()
            samples = parse(render(snapshot).decode())
            by_source.append({key: v for key, v in samples.items() if key[0] != timing})
        assert by_source[0] == by_source[1]
        assert value(by_source[0], "relay_lead_node_requests", role="distributor", id="d1") == 41
    finally:
        await store.source.close()
        await elastic.source.close()
        await es.close()
