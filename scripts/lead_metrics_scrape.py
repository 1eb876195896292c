"""Measure a `relay lead` /metrics scrape over a realistic embedded store.

    .venv/bin/python scripts/lead_metrics_scrape.py [--nodes 100] [--hours 48] [--operators 3]

Signs, per operator, one batch per 5-minute window over the last `--hours` hours, each with one
summary per node (the summaries of scripts/verify_throughput.py: every field, three histograms),
into one embedded store with a registry listing every operator. Then starts the lead's service
as `relay lead` does (its first verification is printed), runs the watch's one-off `seed`
(`remember_seconds` back), then times five scrapes as the HTTP handler makes them (snapshot over
the trailing 15 minutes, judged and rendered) and, apart, the store's aggregation in them.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from verify_throughput import WINDOW_MS, signed_chain

from relay.attest.keys import OperatorKey
from relay.config import LeadMetricsConfig, Settings
from relay.core.clock import wall_clock_ms
from relay.lead.exposition import render
from relay.lead.server import build_service
from relay.lead.source import CellQuery
from relay.lead.store_source import StoreSource
from relay.lead.timerange import TimeRange
from relay.lead.watch import NodeWatch
from relay.registry import OperatorEntry, Registry, RegistryKey
from relay.sinks.store import EmbeddedStore


def build(root: Path, nodes: int, hours: float, operators: int) -> int:
    now = wall_clock_ms()
    first = (now - int(hours * 3_600_000)) // WINDOW_MS * WINDOW_MS
    windows = (now - first) // WINDOW_MS - 1  # every window sealed a minute after its end
    entries = []
    store = EmbeddedStore(root / "store.sqlite")
    try:
        for o in range(operators):
            key = OperatorKey.generate(f"bench.relay/op-{o}")
            entries.append(
                OperatorEntry(origin=key.origin, keys=[RegistryKey(vkey=key.verifier.encode())])
            )
            for documents in signed_chain(key, first, windows, nodes, now):
                store.write(documents)
    finally:
        store.close()
    Registry(operators=entries).save(root / "registry.yaml")
    return windows * nodes * operators


async def measure(root: Path) -> None:
    settings = Settings(data_dir=root)
    started = time.perf_counter()
    service = await build_service(settings, StoreSource(root / "store.sqlite"))
    print(f"first verification: {time.perf_counter() - started:.1f} s")
    try:
        watch = NodeWatch(service, LeadMetricsConfig())
        started = time.perf_counter()
        await watch.seed()
        hours = watch.config.remember_seconds // 3600
        print(
            f"seed (reads {hours} h back, in the background): {time.perf_counter() - started:.1f} s"
        )
        timings, reads = [], []
        for _ in range(5):
            started = time.perf_counter()
            body = render(await watch.snapshot())
            timings.append(time.perf_counter() - started)
            # The part of it that is the store's own aggregation over the range.
            started = time.perf_counter()
            now = service.clock()
            await service.source.tallies(
                CellQuery(TimeRange(now - watch.config.range_seconds * 1000, now)),
                service.verification.current.verified,
                "none",
            )
            reads.append(time.perf_counter() - started)
        samples = sum(len(f.samples) for f in text_string_to_metric_families(body.decode()))
        print(
            f"scrape: {min(timings) * 1000:.0f}-{max(timings) * 1000:.0f} ms over 5 "
            f"(the store's aggregation alone: {min(reads) * 1000:.0f}-{max(reads) * 1000:.0f} ms), "
            f"{len(body) / 1024:.0f} KiB, {samples} samples"
        )
    finally:
        await service.source.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--hours", type=float, default=48)
    parser.add_argument("--operators", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        count = build(Path(tmp), args.nodes, args.hours, args.operators)
        print(f"built {count} summaries in {time.perf_counter() - started:.0f} s")
        asyncio.run(measure(Path(tmp)))


if __name__ == "__main__":
    main()
