"""`relay lead`'s /metrics: verified node and operator health in Prometheus text format.

Everything comes from a relay.lead.watch snapshot taken at scrape time, so it is only verified
data, like the API. Values over the trailing range are gauges (they go down as well as up); the
lead's own counters (notifications) follow. Labels and what bounds them (docs/leads.md "Alerts"):

- `role`, `id`: nodes published in verified batches within `lead.metrics.remember_seconds`, at
  most `lead.metrics.max_nodes`; `region`: the coarse regions (P3) those nodes had traffic in;
- `origin`: the registered operators (the registry); findings of anything else under `origin=""`;
- `outcome`, `code`, `status`, `quantile`, `state`: fixed vocabularies.

Also /healthz (the process answers) and /readyz (a verification result is in force and the
source answers), in the operator relay's shapes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Annotated, Final, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import Field, with_config
from typing_extensions import TypedDict

from relay.lead.health import OUTCOMES, SEVERITY, Figures
from relay.lead.watch import NodeWatch, Snapshot
from relay.metrics import BuildInfo

__all__ = [
    "READY_TIMEOUT_SECONDS",
    "LeadReadiness",
    "LeadReadinessChecks",
    "add_routes",
    "families",
    "render",
]

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 5.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NODE = ["role", "id"]
_REGION = ["role", "id", "region"]
_QUANTILES: Final[tuple[tuple[str, Literal["p50", "p90"]], ...]] = (
    ("0.5", "p50"),
    ("0.9", "p90"),
)


@with_config(extra="forbid")
class LeadReadinessChecks(TypedDict):
    verified: Annotated[
        bool, Field(description="A verification result is in force (the first run has finished).")
    ]
    source_answers: Annotated[
        bool, Field(description="The embedded store or Elasticsearch answered within 5 s.")
    ]


@with_config(extra="forbid")
class LeadReadiness(TypedDict):
    """`relay lead`'s /readyz: ready is true exactly when both checks are."""

    ready: bool
    checks: LeadReadinessChecks


def _age(now_ms: int, then_ms: int | None) -> float | None:
    return None if then_ms is None else max(0.0, (now_ms - then_ms) / 1000)


class _NodeFamilies:
    """One set of node gauges, per node or per node and region."""

    def __init__(self, prefix: str, what: str, labels: list[str]) -> None:
        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{prefix}_{name}", f"{doc} {what}", labels=[*labels, *extra])

        self.requests = gauge("requests", "Requests in the trailing range, verified,")
        self.failures = gauge("failures", "Failed requests in the range by outcome,", ("outcome",))
        self.ratio = gauge(
            "success_ratio",
            "ok / requests in the range (absent when the lead gives no ratio),",
        )
        self.ttfb = gauge("ttfb_seconds", "Time to first byte percentile,", ("quantile",))
        self.duration = gauge("duration_seconds", "Download time percentile,", ("quantile",))
        self.status = gauge(
            "status", "1 for the lead's status over the range (README Node status),", ("status",)
        )
        self.operators = gauge("operators", "Operators reporting in the range,")
        self.age = gauge(
            "last_window_age_seconds", "Seconds since the end of the newest verified window,"
        )

    def add(self, labels: list[str], fig: Figures, last_end_ms: int | None, now: int) -> None:
        self.requests.add_metric(labels, fig["requests"])
        for outcome in OUTCOMES:
            if outcome != "ok":
                self.failures.add_metric([*labels, outcome], fig["outcomes"][outcome])
        if fig["success_ratio"] is not None:
            self.ratio.add_metric(labels, fig["success_ratio"])
        for histogram, percentiles in (
            (self.ttfb, fig["ttfb_ms"]),
            (self.duration, fig["duration_ms"]),
        ):
            for quantile, name in _QUANTILES:
                value = percentiles[name]
                if value is not None:
                    histogram.add_metric([*labels, quantile], value / 1000)
        # Every status the lead knows, plus whatever it answered (a status added later shows up).
        for status in dict.fromkeys((*SEVERITY, fig["status"])):
            self.status.add_metric([*labels, status], 1 if status == fig["status"] else 0)
        self.operators.add_metric(labels, len(fig["operators"]))
        age = _age(now, last_end_ms)
        if age is not None:
            self.age.add_metric(labels, age)

    def all(self) -> list[Metric]:
        return [
            self.requests,
            self.failures,
            self.ratio,
            self.ttfb,
            self.duration,
            self.status,
            self.operators,
            self.age,
        ]


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels or [])


def families(snapshot: Snapshot) -> list[Metric]:
    """The snapshot as Prometheus metric families."""
    now = snapshot.at_ms
    nodes = _NodeFamilies("relay_lead_node", "per node.", _NODE)
    regions = _NodeFamilies("relay_lead_node_region", "per node and region.", _REGION)
    for node in snapshot.nodes:
        nodes.add([node.role, node.id], node.figures, node.last_window_end_ms, now)
        for region, fig in node.regions.items():
            end = node.region_last_window_end_ms.get(region)
            regions.add([node.role, node.id, region], fig, end, now)

    range_seconds = _gauge(
        "relay_lead_range_seconds", "The trailing range nodes are judged on (lead.metrics)."
    )
    range_seconds.add_metric([], (snapshot.time_range.to_ms - snapshot.time_range.from_ms) / 1000)
    omitted = _gauge(
        "relay_lead_nodes_omitted", "Nodes left out over lead.metrics.max_nodes (least traffic)."
    )
    omitted.add_metric([], snapshot.omitted)
    return [
        *nodes.all(),
        *regions.all(),
        range_seconds,
        omitted,
        *_operator_families(snapshot, now),
        *_verification_families(snapshot, now),
    ]


def _operator_families(snapshot: Snapshot, now: int) -> list[Metric]:
    batches = _gauge(
        "relay_lead_operator_batches",
        "Stored batches of a registered operator by verification state (verified, failed).",
        ["origin", "state"],
    )
    findings = _gauge(
        "relay_lead_operator_findings",
        'Verification findings by code; origin="" for those of no registered operator.',
        ["origin", "code"],
    )
    head = _gauge(
        "relay_lead_operator_head_seq", "Sequence number of the verified chain head.", ["origin"]
    )
    head_age = _gauge(
        "relay_lead_operator_last_batch_age_seconds",
        "Seconds since the end of the window of the operator's verified chain head.",
        ["origin"],
    )
    for op in snapshot.operators:
        batches.add_metric([op.origin, "verified"], op.batches_verified)
        batches.add_metric([op.origin, "failed"], op.batches_failed)
        for code, count in sorted(op.findings.items()):
            findings.add_metric([op.origin, code], count)
        if op.head_seq is not None:
            head.add_metric([op.origin], op.head_seq)
        age = _age(now, op.head_window_end_ms)
        if age is not None:
            head_age.add_metric([op.origin], age)
    for code, count in sorted(snapshot.other_findings.items()):
        findings.add_metric(["", code], count)
    return [batches, findings, head, head_age]


def _verification_families(snapshot: Snapshot, now: int) -> list[Metric]:
    v = snapshot.verification
    checked = _gauge(
        "relay_lead_verification_age_seconds", "Seconds since the verification result in force."
    )
    checked.add_metric([], _age(now, v.checked_at_ms) or 0.0)
    run = _gauge("relay_lead_verification_seconds", "How long that verification run took.")
    run.add_metric([], v.seconds)
    total = _gauge("relay_lead_findings", "Verification findings in force, all operators.")
    total.add_metric([], len(v.report.findings))
    return [checked, run, total]


class _Fixed(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


def render(snapshot: Snapshot, counters: CollectorRegistry | None = None) -> bytes:
    """Text exposition of the snapshot, then of the lead's own counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BuildInfo())
    registry.register(_Fixed(families(snapshot)))
    body = generate_latest(registry)
    return body if counters is None else body + generate_latest(counters)


def add_routes(app: web.Application, watch: NodeWatch, counters: CollectorRegistry) -> None:
    async def metrics(request: web.Request) -> web.Response:
        started = time.perf_counter()
        snapshot = await watch.snapshot()
        body = render(snapshot, counters)
        seconds = time.perf_counter() - started
        trailer = (
            "# HELP relay_lead_metrics_seconds Time to read, judge and render this scrape.\n"
            "# TYPE relay_lead_metrics_seconds gauge\n"
            f"relay_lead_metrics_seconds {seconds!r}\n"
        )
        return web.Response(body=body + trailer.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        # The operator relay's shape (openapi.yaml, LeadReadiness): ready and its checks.
        service = watch.service
        verified = service.verification.has_run
        try:
            await asyncio.wait_for(service.source.change_token(), READY_TIMEOUT_SECONDS)
            source_answers = True
        except Exception:  # whatever the reason, the answer is "not ready", never a 500
            log.warning("readyz: the source did not answer", exc_info=True)
            source_answers = False
        ready = verified and source_answers
        answer: LeadReadiness = {
            "ready": ready,
            "checks": {"verified": verified, "source_answers": source_answers},
        }
        return web.json_response(answer, status=200 if ready else 503)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
