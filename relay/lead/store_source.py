"""The embedded store as a lead source: SQL with SQLite's JSON functions over `store.sqlite`.

The store is opened read-only. Queries run in a worker thread, one at a time on one connection.
Summaries are found through their batch documents (one per window per origin, and indexed by
(origin, seq)), so a time range costs a scan of batch headers, not of every summary.

Every grouping query returns rows (role, node, region, bucket, metric, key, value) in a "long"
form, one row per metric and key, which `_tallies_from_rows` folds into tallies.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import orjson

from relay.core.document import Document
from relay.lead.health import OriginPrivacy
from relay.lead.source import BatchPage, Buckets, CellQuery, GroupKey, OriginActivity
from relay.lead.tally import BatchSelection, Tally
from relay.lead.timerange import TimeRange
from relay.registry import Registry
from relay.verify import VerificationReport, verify_documents
from relay.verify.sources import store_chain_starts, store_documents

__all__ = ["StoreSource"]

# `source` is a BLOB of JSON text; CAST makes it text for the JSON functions on every SQLite.
_SELECTED_BATCHES = """
sel AS (
    SELECT b.origin, b.seq, CAST(b.source AS TEXT) AS src FROM documents b
    WHERE b.kind = 'batch'
      AND json_extract(CAST(b.source AS TEXT), '$.window_start_ms') >= :from_ms
      AND json_extract(CAST(b.source AS TEXT), '$.window_start_ms') < :to_ms
      AND {selected}
)"""
_IN_RANGES = """EXISTS (
    SELECT 1 FROM json_each(:ranges) r
    WHERE json_extract(r.value, '$[0]') = b.origin
      AND b.seq BETWEEN json_extract(r.value, '$[1]') AND json_extract(r.value, '$[2]'))"""

# One parse of each summary (a multi-path json_extract gives an array of the fields used), then
# only that small array is read; histogram counts are read by index, not by joining two arrays.
# CROSS JOIN keeps SQLite's join order: the batches in range first, then their summaries by index.
_TALLIES = (
    "WITH"
    + _SELECTED_BATCHES
    + """,
f AS MATERIALIZED (
    SELECT d.origin AS origin, json_extract(CAST(d.source AS TEXT),
        '$.node.role', '$.node.id', '$.region', '$.window_start_ms', '$.window_end_ms',
        '$.requests', '$.outcomes', '$.signals', '$.ttfb_us.values', '$.ttfb_us.counts',
        '$.duration_us.values', '$.duration_us.counts', '$.ops') AS j
    FROM sel CROSS JOIN documents d ON d.origin = sel.origin AND d.seq = sel.seq
    WHERE d.kind = 'summary'
),
g AS MATERIALIZED (
    SELECT * FROM (
        SELECT origin, json_extract(j, '$[0]') AS role, json_extract(j, '$[1]') AS node,
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
)
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


class StoreSource:
    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(
                f"no embedded store at {path}: start `relay serve` with this data_dir first"
            )
        self._path = path
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()

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

    async def verify(self, registry: Registry, now_ms: int) -> VerificationReport:
        return await asyncio.to_thread(
            lambda: verify_documents(
                registry,
                store_documents(self._path),
                now_ms=now_ms,
                chain_starts=store_chain_starts(self._path),  # after `relay retention`
            )
        )

    async def tallies(
        self, query: CellQuery, selection: BatchSelection, buckets: Buckets
    ) -> dict[GroupKey, Tally]:
        bucket = _BUCKETS[buckets] if isinstance(buckets, str) else _STEP_BUCKET
        sql = _TALLIES.format(selected=_selected(selection), bucket=bucket)
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
