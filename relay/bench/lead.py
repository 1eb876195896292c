"""`relay bench --lead`: a lead's store of many days, and how fast `relay lead` answers over it.

The store is made as operators make it, minus HTTP: each operator runs a real OperatorRelay
(aggregation under k, sealing, signing, shipping into its embedded store) on a simulated clock,
fed scrubbed observations directly; their stores are then gathered into the lead's, as
Elasticsearch would gather them. Every node is seen by every operator each window, a third of
them from two regions. The lead is then started on it (verification and the first roll-up), started
again (the rollups are kept), and timed on the answers DESIGN §10 sets targets for.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from relay import __version__
from relay.aggregate.histogram import bucket_index
from relay.aggregate.observation import IngestRecord, Observation
from relay.bench.run import machine
from relay.config import Settings
from relay.lead.server import build_service, open_source
from relay.lead.service import LeadService
from relay.lead.store_source import ROLLUP_FILE
from relay.lead.timerange import TimeRange
from relay.lead.verification import CHECKPOINT_FILE
from relay.serve import OperatorRelay, tune_gc

__all__ = ["build_lead_store", "run_lead_bench"]

WINDOW_S = 300
DAY_MS = 86_400_000
REGIONS = ("EU", "NA", "AS")
K = 5
#: Timed calls per figure (the median is reported).
REPEATS = 3


class _Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def _node(n: int) -> tuple[str, str]:
    return ("storage", f"store-{n}") if n % 5 == 4 else ("distributor", f"dist-{n}")


def _observations(window: int, nodes: int, region_of: int, salt: int) -> list[Observation]:
    """K contributors' requests to every node seen from this region; a few fail, timings vary."""
    found: list[Observation] = []
    for n in range(nodes):
        if n % 3 != region_of and not (region_of == (n + 1) % 3 and n % 3 == 0):
            continue
        role, node = _node(n)
        for c in range(K + 1):
            for r in range(3):
                spread = (n * 7 + c * 3 + r + salt) % 23
                failed = spread == 0 or (n % 17 == 0 and spread < 6)
                ttfb = None if failed else bucket_index((40 + n + spread * 15) * 1000)
                duration = None if failed else bucket_index((300 + spread * 40) * 1000)
                found.append(
                    (
                        window, 1 + c + region_of * 100, role, node, "request",
                        "timeout" if failed else "ok", "download", None, ttfb, duration,
                        None if failed else 1_000_000, None,
                    )
                )  # fmt: skip
    return found


async def _operator(
    root: Path, origin: str, registry: Path, nodes: int, window_s: int, span: tuple[int, int]
) -> Path:
    start, end = span
    settings = Settings(
        data_dir=root / origin.replace("/", "_"),
        origin=origin,
        window={
            "seconds": window_s,
            "lateness_seconds": 0,
            "max_nodes": nodes * 2,
            "max_cells_per_network": nodes * 2,
        },
        privacy={"k": K},
        outbox={"ship_interval_seconds": 3600},
        lead={"registry": registry},
    )
    clock = _Clock(start + 1)
    relay = OperatorRelay(settings, clock=clock)
    await relay.start()
    try:
        salt = sum(map(ord, origin))
        step = window_s * 1000
        for window in range(start, end, step):
            for region_of, region in enumerate(REGIONS):
                observations = _observations(window, nodes, region_of, salt + window // step)
                relay.windows.apply(IngestRecord(window, region, observations, {}, {}))
            clock.ms = window + step + 1
            await relay.seal_due()
            if (window - start) // step % 48 == 47:  # ship as it goes: a small outbox
                await relay.shipper.ship_pending()
        await relay.shipper.ship_pending()
    finally:
        await relay.stop()
    return settings.data_dir / "store.sqlite"


def build_lead_store(
    root: Path,
    *,
    days: float,
    nodes: int,
    operators: int,
    end_ms: int,
    window_s: int = WINDOW_S,
) -> tuple[Settings, int]:
    """The lead's settings (data_dir under ``root``) and its store's number of summaries:
    ``days`` of windows ending at or before ``end_ms``."""
    lead = root / "lead"
    lead.mkdir(parents=True)
    registry = lead / "registry.yaml"
    end = end_ms // (window_s * 1000) * window_s * 1000
    start = end - int(days * DAY_MS) // (window_s * 1000) * window_s * 1000
    target = sqlite3.connect(lead / "store.sqlite")
    try:
        for i in range(operators):
            store = asyncio.run(
                _operator(root, f"bench.relay/op-{i}", registry, nodes, window_s, (start, end))
            )
            target.execute("ATTACH DATABASE ? AS op", (str(store),))
            if i == 0:  # the store's own table and index, as the operators' stores made them
                schema = target.execute(
                    "SELECT sql FROM op.sqlite_master WHERE name IN ('documents', "
                    "'documents_order') ORDER BY type DESC"
                ).fetchall()
                for (sql,) in schema:
                    target.execute(sql)
            target.execute("INSERT INTO main.documents SELECT * FROM op.documents")
            target.commit()
            target.execute("DETACH DATABASE op")
            store.unlink()
        summaries = target.execute("SELECT COUNT(*) FROM documents WHERE kind = 'summary'")
        count = int(summaries.fetchone()[0])
    finally:
        target.close()
    return _settings(lead), count


def _settings(lead: Path) -> Settings:
    return Settings(
        data_dir=lead, lead={"registry": lead / "registry.yaml", "verify_interval_seconds": 3600}
    )


async def _timed(call: Callable[[], Awaitable[object]]) -> float:
    """Median seconds of a lead answer, made and serialised as the API serves it."""
    took = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        orjson.dumps(await call())
        took.append(time.perf_counter() - started)
    return round(statistics.median(took), 4)


async def _started(settings: Settings, now_ms: int) -> tuple[LeadService, float]:
    started = time.perf_counter()
    service = await build_service(settings, open_source(settings), lambda: now_ms)
    return service, time.perf_counter() - started


async def _measure(settings: Settings, now_ms: int, days: float) -> dict[str, Any]:
    service, first = await _started(settings, now_ms)
    verification = service.verification.current
    summaries = verification.report.summaries_checked
    rollup_s = first - verification.seconds
    await service.source.close()
    service, again = await _started(settings, now_ms)
    try:
        day = TimeRange(now_ms - DAY_MS, now_ms)
        whole = TimeRange(now_ms - int(days * DAY_MS), now_ms)

        def nodes(span: TimeRange) -> Callable[[], Awaitable[object]]:
            return lambda: service.nodes(span, role=None, region=None, include_unverified=False)

        def series(step_ms: int | None) -> Callable[[], Awaitable[object]]:
            return lambda: service.series(
                "distributor", "dist-0", whole, step_ms=step_ms, region=None,
                include_unverified=False,
            )  # fmt: skip

        return {
            "summaries": summaries,
            "batches_verified": len(verification.report.verified),
            "findings": len(verification.report.findings),
            "first_start_s": round(first, 2),
            "first_start_verify_s": round(verification.seconds, 2),
            "first_start_rollup_s": round(rollup_s, 2),
            "rollup_summaries_per_s": round(summaries / rollup_s) if rollup_s > 0 else None,
            "restart_s": round(again, 2),
            "restart_verify_s": round(service.verification.current.seconds, 2),
            "nodes_24h_s": await _timed(nodes(day)),
            "nodes_all_days_s": await _timed(nodes(whole)),
            "series_all_days_step_1h_s": await _timed(series(3_600_000)),
            "series_all_days_per_window_s": await _timed(series(None)),
        }
    finally:
        await service.source.close()


def run_lead_bench(
    out: Path, root: Path, *, days: float, nodes: int, operators: int
) -> dict[str, Any]:
    """Build the store under ``root``, measure, write the report to ``out``.

    A store built there before by this function (same shape) is measured again instead: its
    rollups and verification checkpoint are removed, so the first start is measured anew.
    """
    tune_gc()
    load = os.getloadavg()
    made = root / "made.json"
    built: float | None = None
    if made.exists():
        kept = orjson.loads(made.read_bytes())
        now_ms, summaries = kept["end_ms"], kept["summaries"]
        days, nodes, operators = kept["days"], kept["nodes"], kept["operators"]
        settings = _settings(root / "lead")
        for name in (ROLLUP_FILE, CHECKPOINT_FILE):
            for path in settings.data_dir.glob(f"{name}*"):
                path.unlink()
    else:
        now_ms = time.time_ns() // 1_000_000
        started = time.perf_counter()
        settings, summaries = build_lead_store(
            root, days=days, nodes=nodes, operators=operators, end_ms=now_ms
        )
        built = round(time.perf_counter() - started, 1)
        shape = {"days": days, "nodes": nodes, "operators": operators}
        made.write_bytes(orjson.dumps({"end_ms": now_ms, "summaries": summaries, **shape}))
    store_bytes = (settings.data_dir / "store.sqlite").stat().st_size
    figures = asyncio.run(_measure(settings, now_ms, days))
    rollup_bytes = (settings.data_dir / "lead-rollups.sqlite").stat().st_size
    report: dict[str, Any] = {
        "relay_version": __version__,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(load),
        "setup": {
            "days": days,
            "nodes": nodes,
            "operators": operators,
            "window_s": WINDOW_S,
            "store_summaries": summaries,
            "store_bytes": store_bytes,
            "rollup_bytes": rollup_bytes,
            "build_s": built,
            "figures": f"median of {REPEATS} calls, answer made and serialised, in process",
        },
        "lead": figures,
    }
    report["targets"] = {
        "/v1/nodes 24 h < 0.3 s": figures["nodes_24h_s"] < 0.3,
        f"/v1/nodes {days:g} days < 1 s": figures["nodes_all_days_s"] < 1.0,
        f"one node's {days:g}-day series (1 h step) < 0.5 s": figures["series_all_days_step_1h_s"]
        < 0.5,
    }
    out.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return report
