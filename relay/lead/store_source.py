"""The embedded store as a lead source: SQL with SQLite's JSON functions over `store.sqlite`.

The store is opened read-only. Queries run in a worker thread, one at a time on one connection.
Summaries are found through their batch documents (one per window per origin, and indexed by
(origin, seq)), so a time range costs a scan of batch headers, not of every summary.

Every grouping query returns rows (role, node, region, bucket, metric, key, value) in a "long"
form, one row per metric and key, which `_tallies_from_rows` folds into tallies.

With a rollup file (relay/lead/rollup.py, what `relay lead` uses) the tallies of the verified
batches are read from it instead; `track` sums newly verified batches into it from one row per
summary (`_SUMMARY_ROWS`, the same extraction and filters as the grouping query).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Hashable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson

from relay.core.document import Document
from relay.lead.health import OriginPrivacy
from relay.lead.rollup import Rollups
from relay.lead.source import BatchPage, Buckets, CellQuery, GroupKey, OriginActivity
from relay.lead.tally import BatchSelection, Tally
from relay.lead.timerange import TimeRange
from relay.registry import Registry
from relay.verify import VerificationReport, verify_documents
from relay.verify.sources import store_chain_starts, store_documents

__all__ = ["ROLLUP_FILE", "StoreSource"]

#: The lead's rollup file, in the data_dir beside store.sqlite.
ROLLUP_FILE = "lead-rollups.sqlite"

# `source` is a BLOB of JSON text; CAST makes it text for the JSON functions on every SQLite.
_SELECTED_BATCHES = """
sel AS (
    SELECT b.origin, b.seq, CAST(b.source AS TEXT) AS src, NULL AS sel_start FROM documents b
    WHERE b.kind = 'batch'
      AND json_extract(CAST(b.source AS TEXT), '$.window_start_ms') >= :from_ms
      AND json_extract(CAST(b.source AS TEXT), '$.window_start_ms') < :to_ms
      AND {selected}
)"""
# The batches named in :ranges, found through the (origin, seq) index: what rollups sum in.
_LISTED_BATCHES = """
sel AS (
    SELECT b.origin, b.seq, CAST(b.source AS TEXT) AS src,
           json_extract(CAST(b.source AS TEXT), '$.window_start_ms') AS sel_start
    FROM json_each(:ranges) r CROSS JOIN documents b
    WHERE b.origin = json_extract(r.value, '$[0]')
      AND b.seq BETWEEN json_extract(r.value, '$[1]') AND json_extract(r.value, '$[2]')
      AND b.kind = 'batch'
)"""
_IN_RANGES = """EXISTS (
    SELECT 1 FROM json_each(:ranges) r
    WHERE json_extract(r.value, '$[0]') = b.origin
      AND b.seq BETWEEN json_extract(r.value, '$[1]') AND json_extract(r.value, '$[2]'))"""

# One parse of each summary (a multi-path json_extract gives an array of the fields used), then
# only that small array is read; histogram counts are read by index, not by joining two arrays.
# CROSS JOIN keeps SQLite's join order: the batches in range first, then their summaries by index.
_SUMMARIES = """WITH {batches},
f AS MATERIALIZED (
    SELECT d.origin AS origin, sel.sel_start AS sel_start, json_extract(CAST(d.source AS TEXT),
        '$.node.role', '$.node.id', '$.region', '$.window_start_ms', '$.window_end_ms',
        '$.requests', '$.outcomes', '$.signals', '$.ttfb_us.values', '$.ttfb_us.counts',
        '$.duration_us.values', '$.duration_us.counts', '$.ops') AS j
    FROM sel CROSS JOIN documents d ON d.origin = sel.origin AND d.seq = sel.seq
    WHERE d.kind = 'summary'
),
g AS MATERIALIZED (
    SELECT * FROM (
        SELECT origin, sel_start, json_extract(j, '$[0]') AS role, json_extract(j, '$[1]') AS node,
               json_extract(j, '$[2]') AS region, {bucket} AS bucket,
               json_extract(j, '$[4]') AS window_end, json_extract(j, '$[5]') AS requests,
               json_extract(j, '$[6]') AS outcomes, json_extract(j, '$[7]') AS signals,
               json_extract(j, '$[8]') AS ttfb_values, json_extract(j, '$[9]') AS ttfb_counts,
               json_extract(j, '$[10]') AS duration_values,
               json_extract(j, '$[11]') AS duration_counts, json_extract(j, '$[12]') AS ops
        FROM f
    )
    WHERE (:role IS NULL OR role = :role) AND (:node IS NULL OR node = :node)
      AND (:region IS NULL OR region = :region)
      -- only well-formed summaries (unverified ones may be anything)
      AND typeof(role) = 'text' AND typeof(node) = 'text' AND typeof(region) = 'text'
      AND typeof(bucket) = 'integer'
)"""
_TALLIES = (
    _SUMMARIES
    + """
SELECT role, node, region, bucket, 'origin', origin, COUNT(*) FROM g
GROUP BY role, node, region, bucket, origin
UNION ALL
SELECT role, node, region, bucket, 'requests', NULL, TOTAL(requests)
FROM g GROUP BY role, node, region, bucket
UNION ALL
SELECT role, node, region, bucket, 'end', NULL, MAX(window_end)
FROM g GROUP BY role, node, region, bucket
UNION ALL
SELECT role, node, region, bucket, 'outcomes', o.key, SUM(o.value)
FROM g, json_each(g.outcomes) o WHERE typeof(o.value) = 'integer'
GROUP BY role, node, region, bucket, o.key
UNION ALL
SELECT role, node, region, bucket, 'ops', p.key, SUM(p.value)
FROM g, json_each(g.ops) p WHERE typeof(p.value) = 'integer'
GROUP BY role, node, region, bucket, p.key
UNION ALL
SELECT role, node, region, bucket, 'signals', s.key, SUM(s.value)
FROM g, json_each(g.signals) s WHERE typeof(s.value) = 'integer'
GROUP BY role, node, region, bucket, s.key
UNION ALL
SELECT role, node, region, bucket, 'ttfb_us', value, SUM(count) FROM (
    SELECT role, node, region, bucket, v.value AS value,
           json_extract(g.ttfb_counts, v.fullkey) AS count
    FROM g, json_each(g.ttfb_values) v
) WHERE typeof(value) = 'integer' AND typeof(count) = 'integer'
GROUP BY role, node, region, bucket, value
UNION ALL
SELECT role, node, region, bucket, 'duration_us', value, SUM(count) FROM (
    SELECT role, node, region, bucket, v.value AS value,
           json_extract(g.duration_counts, v.fullkey) AS count
    FROM g, json_each(g.duration_values) v
) WHERE typeof(value) = 'integer' AND typeof(count) = 'integer'
GROUP BY role, node, region, bucket, value
"""
)
# One row per summary, for the lead's rollups to sum in Python (`_fold`): a third of the time
# of the grouping query above, whose unions read each summary's arrays again.
_SUMMARY_ROWS = (
    _SUMMARIES
    + """
SELECT sel_start, role, node, region, bucket, origin, window_end, requests, outcomes, ops,
       signals, ttfb_values, ttfb_counts, duration_values, duration_counts
FROM g
"""
)

# Only dp headers have a scale and only aggregate-mode headers a k.
_PRIVACY = (
    "WITH"
    + _SELECTED_BATCHES
    + """
SELECT origin, MIN(json_extract(src, '$.privacy.k')), MAX(json_extract(src, '$.privacy.scale'))
FROM sel GROUP BY origin
"""
)

_BATCH_PAGE = (
    "WITH"
    + _SELECTED_BATCHES
    + """
SELECT src, COUNT(*) OVER () FROM sel WHERE :origin IS NULL OR origin = :origin
ORDER BY json_extract(src, '$.window_start_ms') DESC, origin, seq
LIMIT :limit OFFSET :offset
"""
)

_BATCH_COUNT = (
    "WITH"
    + _SELECTED_BATCHES
    + """
SELECT COUNT(*) FROM sel WHERE :origin IS NULL OR origin = :origin
"""
)

_ORIGINS = """
SELECT origin, COUNT(*), MAX(seq),
       MAX(json_extract(CAST(source AS TEXT), '$.signed_at_ms')),
       MAX(json_extract(CAST(source AS TEXT), '$.window_end_ms'))
FROM documents WHERE kind = 'batch' GROUP BY origin
"""

_CHECKPOINTS = """
SELECT b.seq, json_extract(CAST(b.source AS TEXT), '$.checkpoint') FROM documents b
WHERE b.kind = 'batch' AND b.origin = :origin AND {selected}
ORDER BY b.seq DESC LIMIT :limit
"""

_HEADERS = (
    "WITH"
    + _LISTED_BATCHES
    + """
SELECT origin, seq, sel_start,
       json_extract(src, '$.privacy.k'), json_extract(src, '$.privacy.scale')
FROM sel
"""
)

_DOCUMENT = "SELECT doc_index, doc_id, source FROM documents WHERE doc_id = ?"

_BUCKETS = {"none": "0", "window": "json_extract(j, '$[3]')"}
# Integer division: window starts are positive, so this is the floor.
_STEP_BUCKET = "json_extract(j, '$[3]') / :step * :step"


def _selected(selection: BatchSelection) -> str:
    return _IN_RANGES if selection.include else f"NOT {_IN_RANGES}"


def _range_params(time_range: TimeRange, selection: BatchSelection) -> dict[str, Any]:
    return {
        "from_ms": time_range.from_ms,
        "to_ms": time_range.to_ms,
        "ranges": orjson.dumps(selection.ranges).decode(),
    }


def _whole(value: Any) -> int | None:
    """A header's k or scale: a positive integer, else none (unverified data may hold anything)."""
    return int(value) if isinstance(value, int) and value > 0 else None


#: Batches summed into rollups per query (a few windows of every operator).
_ROLLUP_CHUNK = 64

T = TypeVar("T")


def _tallies_from_rows(rows: list[tuple[Any, ...]]) -> dict[GroupKey, Tally]:
    tallies: dict[GroupKey, Tally] = {}
    for role, node, region, bucket, metric, key, value in rows:
        tally = tallies.setdefault((role, node, region, int(bucket)), Tally())
        if value is None:  # a field missing from every summary of the group (unverified data)
            continue
        if metric == "requests":
            tally.requests = int(value)
        elif metric == "end":
            tally.last_window_end_ms = int(value)
        elif metric == "origin":
            tally.origins[key] = int(value)
        else:
            counts: dict[Any, int] = getattr(tally, metric)
            counts[int(key) if metric.endswith("_us") else key] = int(value)
    return tallies


def _json(text: Any) -> Any:
    """An object or array json_extract gave as text; None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # a JSON string at that path: json_extract unquotes it
        return None


def _add_counts(into: dict[Any, int], counts: Any) -> None:
    """An object's integer members added in, as the grouping query's json_each sums them."""
    if isinstance(counts, dict):
        for key, value in counts.items():
            if isinstance(value, int):
                into[key] = into.get(key, 0) + value


def _add_histogram(into: dict[int, int], values: Any, counts: Any) -> None:
    if isinstance(values, list) and isinstance(counts, list):
        for value, count in zip(values, counts, strict=False):
            if isinstance(value, int) and isinstance(count, int):
                into[value] = into.get(value, 0) + count


def _fold(rows: list[tuple[Any, ...]]) -> dict[tuple[int, str, str, str, int], Tally]:
    """Tallies per (batch window, role, node, region, summary window) from `_SUMMARY_ROWS`:
    the sums `_TALLIES` makes (same filters), in Python."""
    tallies: dict[tuple[int, str, str, str, int], Tally] = {}
    totals: dict[tuple[int, str, str, str, int], float] = {}
    for row in rows:
        sel, role, node, region, bucket, origin, end, requests, *counted = row
        outcomes, ops, signals, ttfb_values, ttfb_counts, duration_values, duration_counts = counted
        key = (int(sel), role, node, region, int(bucket))
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = Tally()
            totals[key] = 0.0
        tally.origins[origin] = tally.origins.get(origin, 0) + 1
        if isinstance(requests, (int, float)):  # TOTAL() skips NULL
            totals[key] += requests
        if isinstance(end, int):
            last = tally.last_window_end_ms
            tally.last_window_end_ms = end if last is None else max(last, end)
        _add_counts(tally.outcomes, _json(outcomes))
        _add_counts(tally.ops, _json(ops))
        _add_counts(tally.signals, _json(signals))
        _add_histogram(tally.ttfb_us, _json(ttfb_values), _json(ttfb_counts))
        _add_histogram(tally.duration_us, _json(duration_values), _json(duration_counts))
    for key, total in totals.items():
        tallies[key].requests = int(total)
    return tallies


def _chunks(items: list[tuple[str, int]], size: int) -> list[list[tuple[str, int]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class StoreSource:
    """The store, and the lead's rollups of it (relay/lead/rollup.py) in ``rollups``.

    Without a rollup file every answer reads raw summaries. With one, `track` sums in each
    newly verified batch and takes out any that stopped verifying; tallies of exactly the
    batches tracked are then read from the rollups, everything else from the summaries.
    """

    def __init__(self, path: Path, rollups: Path | None = None) -> None:
        if not path.exists():
            raise FileNotFoundError(
                f"no embedded store at {path}: start `relay serve` with this data_dir first"
            )
        self._path = path
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        self._rollups = None if rollups is None else Rollups(rollups)
        #: The verified batches the rollups hold exactly (None until `track` has run).
        self._tracked: BatchSelection | None = None

    def _query(self, sql: str, params: dict[str, Any] | tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    async def _run(
        self, sql: str, params: dict[str, Any] | tuple[Any, ...]
    ) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._query, sql, params)

    async def change_token(self) -> Hashable:
        # data_version changes whenever another connection commits to the file.
        rows = await self._run("PRAGMA data_version", ())
        return int(rows[0][0])

    async def state(self) -> str:
        rows = await self._run("SELECT COUNT(*), MAX(rowid) FROM documents", ())
        return f"store:{rows[0][0]}:{rows[0][1]}"

    async def verify(self, registry: Registry, now_ms: int) -> VerificationReport:
        return await asyncio.to_thread(
            lambda: verify_documents(
                registry,
                store_documents(self._path),
                now_ms=now_ms,
                chain_starts=store_chain_starts(self._path),  # after `relay retention`
            )
        )

    def _rolled(self, selection: BatchSelection) -> Rollups | None:
        """The rollups if they hold exactly these batches."""
        return self._rollups if selection == self._tracked else None

    async def track(self, verified: set[tuple[str, int]]) -> None:
        rollups = self._rollups
        if rollups is None:
            return
        rolled = await asyncio.to_thread(self._locked, rollups.rolled)
        gone = {rolled[batch] for batch in set(rolled) - verified}
        new = verified - set(rolled)
        if gone or new:  # answers read the summaries until the rollups hold `verified` again
            self._tracked = None
        if gone:  # a finding after the roll-up: redo those windows from what still verifies
            await asyncio.to_thread(self._locked, partial(rollups.forget, gone))
            new = verified - {batch for batch, start in rolled.items() if start not in gone}
        touched = set(gone)
        for chunk in _chunks(sorted(new), _ROLLUP_CHUNK):
            touched |= await asyncio.to_thread(self._locked, partial(self._roll_up, rollups, chunk))
        if touched:
            await asyncio.to_thread(self._locked, partial(rollups.settle, touched))
        self._tracked = BatchSelection.of(verified, include=True)

    def _locked(self, work: Callable[[], T]) -> T:
        with self._lock:
            return work()

    def _roll_up(self, rollups: Rollups, batches: list[tuple[str, int]]) -> set[int]:
        ranges = {"ranges": orjson.dumps(BatchSelection.of(batches, include=True).ranges).decode()}
        sql = _SUMMARY_ROWS.format(batches=_LISTED_BATCHES, bucket=_BUCKETS["window"])
        params = {**ranges, "role": None, "node": None, "region": None}
        rows = self._db.execute(sql, params).fetchall()
        headers = self._db.execute(_HEADERS, ranges).fetchall()
        return rollups.add(headers, _fold(rows))

    async def tallies(
        self, query: CellQuery, selection: BatchSelection, buckets: Buckets
    ) -> dict[GroupKey, Tally]:
        rollups = self._rolled(selection)
        if rollups is not None:
            return await asyncio.to_thread(self._locked, lambda: rollups.tallies(query, buckets))
        bucket = _BUCKETS[buckets] if isinstance(buckets, str) else _STEP_BUCKET
        batches = _SELECTED_BATCHES.format(selected=_selected(selection))
        sql = _TALLIES.format(batches=batches, bucket=bucket)
        params = {
            **_range_params(query.time_range, selection),
            "role": query.role,
            "node": query.node_id,
            "region": query.region,
        }
        if not isinstance(buckets, str):
            params["step"] = buckets
        return _tallies_from_rows(await self._run(sql, params))

    async def privacy(
        self, time_range: TimeRange, selection: BatchSelection
    ) -> dict[str, OriginPrivacy]:
        rollups = self._rolled(selection)
        if rollups is not None:
            span = time_range
            rows = await asyncio.to_thread(
                self._locked, lambda: rollups.privacy(span.from_ms, span.to_ms)
            )
        else:
            sql = _PRIVACY.format(selected=_selected(selection))
            rows = await self._run(sql, _range_params(time_range, selection))
        return {
            origin: OriginPrivacy(_whole(k), _whole(scale))
            for origin, k, scale in rows
            if _whole(k) is not None or _whole(scale) is not None
        }

    async def origins(self) -> dict[str, OriginActivity]:
        rows = await self._run(_ORIGINS, ())
        return {
            origin: OriginActivity(int(count), int(seq), int(signed or 0), int(end or 0))
            for origin, count, seq, signed, end in rows
        }

    async def batches(
        self,
        origin: str | None,
        time_range: TimeRange,
        selection: BatchSelection,
        limit: int,
        offset: int,
    ) -> BatchPage:
        params = {
            **_range_params(time_range, selection),
            "origin": origin,
            "limit": limit,
            "offset": offset,
        }
        selected = _selected(selection)
        rows = await self._run(_BATCH_PAGE.format(selected=selected), params)
        if rows:
            total = int(rows[0][1])
        else:  # past the last page: the window function had no row to count on
            total = int((await self._run(_BATCH_COUNT.format(selected=selected), params))[0][0])
        return BatchPage(total, [orjson.loads(src) for src, _ in rows])

    async def _document(self, doc_id: str) -> Document | None:
        rows = await self._run(_DOCUMENT, (doc_id,))
        if not rows:
            return None
        index, found_id, source = rows[0]
        return Document(index, found_id, orjson.loads(source))

    async def batch(self, origin: str, seq: int) -> Document | None:
        return await self._document(f"{origin}|b|{seq}")

    async def summary(self, origin: str, seq: int, i: int) -> Document | None:
        return await self._document(f"{origin}|s|{seq}|{i}")

    async def checkpoints(
        self, origin: str, selection: BatchSelection, limit: int
    ) -> list[tuple[int, str]]:
        sql = _CHECKPOINTS.format(selected=_selected(selection))
        ranges = orjson.dumps(selection.ranges).decode()
        params = {"origin": origin, "limit": limit, "ranges": ranges}
        rows = await self._run(sql, params)
        return [(int(seq), note) for seq, note in rows if isinstance(note, str)]

    async def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._rollups is not None:
                self._rollups.close()
