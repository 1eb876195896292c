"""Prometheus metrics (DESIGN §9). Label values come from fixed sets, never from user input."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay import __version__

__all__ = ["BuildInfo", "RelayMetrics"]


class BuildInfo(Collector):
    """`relay_build_info{version} 1`, on the operator listener and on the lead's /metrics: which
    release is running, for dashboards and for alerts during a rollout."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "relay_build_info",
            "Always 1; version is the relay release serving.",
            labels=["version"],
        )
        family.add_metric([__version__], 1)
        yield family


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(BuildInfo())
        # In groups, registered in the order the exposition lists them.
        self._ingest_metrics(self.registry)
        self._stored_metrics(self.registry)
        self._shipping_metrics(self.registry)
        self._window_metrics(self.registry)

    def _ingest_metrics(self, r: CollectorRegistry) -> None:
        self.received = Counter(
            "relay_events_received", "Events received, by endpoint.", ["endpoint"], registry=r
        )
        self.accepted = Counter(
            "relay_events_accepted", "Events acknowledged into the WAL.", ["endpoint"], registry=r
        )
        self.rejected = Counter(
            "relay_events_rejected", "Events rejected at ingest, by reason.", ["reason"], registry=r
        )
        self.dropped = Counter(
            "relay_events_dropped",
            "Accepted events not published, by reason (over_cap, over_budget: past the node "
            "budgets, suppressed, unsupported_type).",
            ["reason"],
            registry=r,
        )
        self.requests = Counter(
            "relay_ingest_requests",
            "Ingest requests by endpoint and status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "relay_ingest_request_seconds",
            "Ingest request latency.",
            ["endpoint"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )

    def _stored_metrics(self, r: CollectorRegistry) -> None:
        self.wal_bytes = Gauge("relay_wal_bytes", "Bytes in WAL segments.", registry=r)
        self.outbox_batches = Gauge("relay_outbox_batches", "Batches waiting to ship.", registry=r)
        self.outbox_bytes = Gauge("relay_outbox_bytes", "Bytes waiting to ship.", registry=r)
        self.outbox_oldest_age = Gauge(
            "relay_outbox_oldest_age_seconds", "Age of the oldest batch waiting.", registry=r
        )
        self.batches_signed = Counter("relay_batches_signed", "Batches sealed.", registry=r)
        self.suppressed_cells = Counter(
            "relay_cells_suppressed", "Cells under k after roll-up.", registry=r
        )

    def _shipping_metrics(self, r: CollectorRegistry) -> None:
        self.ship_attempts = Counter(
            "relay_ship_attempts",
            "Ship attempts by sink and outcome.",
            ["sink", "outcome"],
            registry=r,
        )
        self.ship_latency = Histogram("relay_ship_seconds", "Time to ship one batch.", registry=r)
        self.sink_documents = Counter(
            "relay_sink_documents",
            "Documents settled by a sink: created, exists (409, our own document found there), "
            "dead_letter (400).",
            ["sink", "result"],
            registry=r,
        )
        self.sink_retries = Counter(
            "relay_sink_retries",
            "Documents set aside for a later attempt, by reason (throttled, server_error, "
            "timeout, connection, unauthorized, conflict, other).",
            ["sink", "reason"],
            registry=r,
        )
        self.sink_paused = Gauge(
            "relay_sink_paused",
            "1 while the sink refuses the relay's credentials (401/403): shipping is paused.",
            registry=r,
        )
        self.sink_conflict = Gauge(
            "relay_sink_conflict",
            "1 while the sink holds another document at one of our ids (taken before we shipped "
            "it): the batch stays in the outbox and shipping waits for a person.",
            registry=r,
        )

    def _window_metrics(self, r: CollectorRegistry) -> None:
        self.seal_duration = Histogram(
            "relay_window_seal_seconds",
            "Time to seal, sign and store one window.",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.seal_failures = Counter(
            "relay_seal_failures",
            "Seal attempts that failed (outbox, disk, key rotation); the windows stay in memory "
            "and the WAL and the seal is retried.",
            registry=r,
        )
        self.open_windows = Gauge("relay_open_windows", "Windows not yet sealed.", registry=r)
        self.open_windows_bytes = Gauge(
            "relay_open_windows_bytes", "Estimated memory of open windows' state.", registry=r
        )

    def update_outbox(self, batches: int, oldest_ms: int | None, size_bytes: int) -> None:
        """The outbox gauges, from Outbox.depth() and Outbox.size_bytes."""
        self.outbox_batches.set(batches)
        self.outbox_bytes.set(size_bytes)
        self.outbox_oldest_age.set(0 if oldest_ms is None else time.time() - oldest_ms / 1000)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
