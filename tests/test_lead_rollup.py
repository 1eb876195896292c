"""Lead-side rollups (relay/lead/rollup.py): the same answers as the raw summaries, faster.

The store is made by relay.bench.lead (real relays, signed batches, no HTTP), small: 2.5 days of
20-minute windows from two operators over five nodes, so ranges cover whole days, whole hours and
windows at the edges. Each answer over the rollups is compared with the raw computation over the
same verified batches (a StoreSource without rollups) for random ranges, steps and filters.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from relay.bench.lead import build_lead_store
from relay.cli import main
from relay.config import Settings
from relay.lead.rollup import DAY_MS, HOUR_MS, spans
from relay.lead.server import build_service, open_source
from relay.lead.service import LeadService
from relay.lead.source import Buckets, CellQuery
from relay.lead.store_source import ROLLUP_FILE, StoreSource
from relay.lead.timerange import TimeRange

NOW_MS = time.time_ns() // 1_000_000
DAYS = 2.5
WINDOW_S = 1200


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("rollup")
    settings, summaries = build_lead_store(
        root, days=DAYS, nodes=5, operators=2, end_ms=NOW_MS, window_s=WINDOW_S
    )
    assert summaries > 0
    return settings


@pytest.fixture
def settings(made: Settings, tmp_path: Path) -> Settings:
    """A copy of the store for one test (some alter it), without rollups yet."""
    shutil.copy(made.data_dir / "store.sqlite", tmp_path / "store.sqlite")
    return made.model_copy(update={"data_dir": tmp_path})


async def _lead(settings: Settings, now_ms: int = NOW_MS) -> LeadService:
    return await build_service(settings, open_source(settings), lambda: now_ms)


def _raw(settings: Settings) -> StoreSource:
    return StoreSource(settings.data_dir / "store.sqlite")


def test_spans_cover_the_range_once() -> None:
    day0 = 20_000 * DAY_MS
    start, end = day0 - 5 * HOUR_MS - 7, day0 + 2 * DAY_MS + 3 * HOUR_MS + 11
    assert spans(start, end, "none") == [
        ("w", start, day0 - 5 * HOUR_MS),
        ("h", day0 - 5 * HOUR_MS, day0),
        ("d", day0, day0 + 2 * DAY_MS),
        ("h", day0 + 2 * DAY_MS, day0 + 2 * DAY_MS + 3 * HOUR_MS),
        ("w", day0 + 2 * DAY_MS + 3 * HOUR_MS, end),
    ]
    assert spans(start, end, "window") == [("w", start, end)]
    assert spans(start, end, 1_800_000) == [("w", start, end)]  # half hours: windows only
    hours = day0 - 5 * HOUR_MS, day0 + 2 * DAY_MS + 3 * HOUR_MS  # two-hour steps: no days
    assert [span for span in spans(start, end, 2 * HOUR_MS) if span[1] < span[2]] == [
        ("w", start, hours[0]),
        ("h", *hours),
        ("w", hours[1], end),
    ]


async def test_rollups_answer_as_the_raw_summaries(settings: Settings) -> None:
    lead = await _lead(settings)
    raw = _raw(settings)
    source = lead.source
    assert isinstance(source, StoreSource)
    v = lead.verification.current
    assert not v.report.findings and v.report.verified
    try:
        rng = random.Random(18)
        start = NOW_MS - int(DAYS * DAY_MS) - HOUR_MS
        steps: list[Buckets] = ["none", "window", HOUR_MS, 2 * HOUR_MS, DAY_MS, 1_800_000]
        nodes = [None, ("distributor", "dist-0"), ("storage", "store-4")]
        levels_used = set()
        for n in range(60):
            lo = rng.randrange(start, NOW_MS)
            hi = rng.randrange(lo + 1, NOW_MS + HOUR_MS)
            if rng.random() < 0.3:  # aligned ends too
                lo, hi = lo // HOUR_MS * HOUR_MS, -(-hi // HOUR_MS) * HOUR_MS
            buckets = rng.choice(steps)
            if n < 6:  # the whole history: ranges holding whole days
                lo, hi, buckets = start - rng.randrange(HOUR_MS), NOW_MS, steps[n]
            node = rng.choice(nodes)
            region = rng.choice([None, "EU", "NA"])
            query = CellQuery(
                TimeRange(lo, hi),
                role=None if node is None else node[0],
                node_id=None if node is None else node[1],
                region=region,
            )
            rolled = await source.tallies(query, v.verified, buckets)
            assert rolled == await raw.tallies(query, v.verified, buckets), (query, buckets)
            assert await source.privacy(query.time_range, v.verified) == await raw.privacy(
                query.time_range, v.verified
            )
            levels_used |= {level for level, a, b in spans(lo, hi, buckets) if a < b}
        assert levels_used == {"w", "h", "d"}
        # The rollups answered (not the raw path): they hold every verified batch.
        db = sqlite3.connect(settings.data_dir / ROLLUP_FILE)
        assert db.execute("SELECT COUNT(*) FROM rolled").fetchone()[0] == len(v.report.verified)
        db.close()
    finally:
        await source.close()
        await raw.close()


async def _whole_answer(lead: LeadService) -> dict[str, object]:
    span = TimeRange(NOW_MS - 3 * DAY_MS, NOW_MS)
    answer = await lead.nodes(span, role=None, region=None, include_unverified=False)
    return orjson.loads(orjson.dumps({k: v for k, v in answer.items() if k != "verification"}))


def _alter_one_summary(store: Path) -> tuple[str, int]:
    """Change a count of one summary of a batch in the middle of the history; return the batch."""
    db = sqlite3.connect(store)
    try:
        origin, seq = db.execute(
            "SELECT origin, seq FROM documents WHERE kind = 'batch' ORDER BY seq DESC LIMIT 1 "
            "OFFSET 40"
        ).fetchone()
        doc_id, source = db.execute(
            "SELECT doc_id, source FROM documents WHERE kind = 'summary' AND origin = ? AND "
            "seq = ? LIMIT 1",
            (origin, seq),
        ).fetchone()
        altered = {**orjson.loads(source), "requests": 1_000_000}
        db.execute(
            "UPDATE documents SET source = ? WHERE doc_id = ?", (orjson.dumps(altered), doc_id)
        )
        db.commit()
        return origin, seq
    finally:
        db.close()


async def test_a_batch_found_bad_after_roll_up_leaves_the_answers(settings: Settings) -> None:
    lead = await _lead(settings)
    before = await _whole_answer(lead)
    bad = _alter_one_summary(settings.data_dir / "store.sqlite")
    v = await lead.verification.refresh(force=True)
    assert bad not in v.report.verified
    assert bad in v.findings_by_batch
    after = await _whole_answer(lead)
    assert after != before
    # What the raw summaries of the batches still verified give, and nothing of the bad batch.
    raw_lead = LeadService(_raw(settings), lead.verification, lead.thresholds, lead.clock)
    assert after == await _whole_answer(raw_lead)
    db = sqlite3.connect(settings.data_dir / ROLLUP_FILE)
    assert db.execute("SELECT 1 FROM rolled WHERE origin = ? AND seq = ?", bad).fetchone() is None
    db.close()
    await raw_lead.source.close()
    await lead.source.close()


async def test_a_restart_on_the_same_store_does_not_verify_again(settings: Settings) -> None:
    lead = await _lead(settings)
    first = lead.verification.current
    answer = await _whole_answer(lead)
    await lead.source.close()
    lead = await _lead(settings, NOW_MS + 60_000)
    kept = lead.verification.current
    # The result of the first start, not a new run (that would be dated by the new clock).
    assert (kept.checked_at_ms, kept.seconds) == (first.checked_at_ms, 0.0)
    assert kept.report.verified == first.report.verified
    assert kept.report.to_dict() == first.report.to_dict()
    assert await _whole_answer(lead) == answer
    # A full run (the hourly one) still verifies everything.
    again = await lead.verification.refresh(force=True)
    assert again.checked_at_ms == NOW_MS + 60_000
    await lead.source.close()


async def test_a_restart_keeps_the_rollups_and_new_batches_are_added(settings: Settings) -> None:
    # Half the history first, as a lead that started earlier saw it.
    full = settings.data_dir / "store.sqlite"
    db = sqlite3.connect(full)
    cut = db.execute("SELECT MAX(seq) / 2 FROM documents").fetchone()[0]
    kept = db.execute("SELECT * FROM documents WHERE seq > ?", (cut,)).fetchall()
    db.execute("DELETE FROM documents WHERE seq > ?", (cut,))
    db.commit()
    lead = await _lead(settings)
    rolled_before = len(lead.verification.current.report.verified)
    await lead.source.close()
    # The operators ship the rest; the lead restarts and sees it.
    db.executemany(f"INSERT INTO documents VALUES ({', '.join('?' * len(kept[0]))})", kept)
    db.commit()
    db.close()
    lead = await _lead(settings, NOW_MS + 60_000)
    v = lead.verification.current
    assert v.checked_at_ms == NOW_MS + 60_000  # the store changed: verified before answering
    assert len(v.report.verified) > rolled_before
    raw_lead = LeadService(_raw(settings), lead.verification, lead.thresholds, lead.clock)
    assert await _whole_answer(lead) == await _whole_answer(raw_lead)
    await raw_lead.source.close()
    await lead.source.close()


def test_bench_lead_reports_the_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    argv = ["bench", "--lead", "--days", "0.05", "--nodes", "5", "--operators", "2"]
    assert main([*argv, "--out", str(out), "--dir", str(tmp_path / "bench")]) == 0
    report = orjson.loads(out.read_bytes())
    assert report["setup"]["store_summaries"] == report["lead"]["summaries"] > 0
    assert report["lead"]["findings"] == 0
    assert report["lead"]["restart_verify_s"] == 0.0  # the checkpoint was taken
    assert len(report["targets"]) == 3
    assert "/v1/nodes 24 h" in capsys.readouterr().out
    # The kept store is measured again, not built again.
    assert main([*argv, "--out", str(out), "--dir", str(tmp_path / "bench")]) == 0
    assert orjson.loads(out.read_bytes())["setup"]["build_s"] is None
