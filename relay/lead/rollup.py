"""Lead-side rollups: verified tallies per node, region and window, hour and day, in a lead file.

Reading a month of raw summaries costs minutes (JSON read per summary); the lead keeps its own
SQLite file beside the store (the store itself stays read-only to it) with the tallies of the
*verified* batches already summed:

- level `w`: per batch window start, the tally of each (role, node, region, summary window);
- level `h`: per hour of batch window starts, the tally of each (role, node, region, hour);
- level `d`: the same per UTC day.

A row is keyed by `sel_ms`, the start of the batch windows it holds (what a range selects on,
as the raw query does), and by `bucket`, the start of its summaries' window, hour or day (what a
series groups on). A range is answered from days wholly inside it, then hours, then windows for
the edges, so the answer is the raw one: the same summaries summed the same way
(tests/test_lead_rollup.py checks it over random ranges). An hour row serves a series whose step
is a whole number of hours, a day row one of whole days; a series per window reads windows.

`rolled` lists every batch summed in, with its header's privacy figures, so a batch that stops
verifying (a finding after it was rolled up) is taken out: its whole window is forgotten and the
window's batches that still verify are summed again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from relay.lead.source import Buckets, CellQuery, GroupKey, bucket_start
from relay.lead.tally import Tally

__all__ = ["DAY_MS", "HOUR_MS", "Rollups", "decode_tally", "encode_tally"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rolled (
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    window_start_ms INTEGER NOT NULL,
    -- the header's privacy.k and privacy.scale as stored (BLOB: no type affinity, so they
    -- compare as the raw query compares them)
    k BLOB,
    scale BLOB,
    PRIMARY KEY (origin, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rolled_window ON rolled (window_start_ms);
CREATE TABLE IF NOT EXISTS cells (
    level TEXT NOT NULL,
    sel_ms INTEGER NOT NULL,
    role TEXT NOT NULL,
    node TEXT NOT NULL,
    region TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    tally BLOB NOT NULL,
    PRIMARY KEY (level, sel_ms, role, node, region, bucket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cells_node ON cells (role, node, level, sel_ms);
"""

#: (role, node, region, bucket) of a cell row.
CellKey = tuple[str, str, str, int]


def encode_tally(tally: Tally) -> bytes:
    return orjson.dumps(
        [
            tally.requests,
            tally.outcomes,
            tally.ops,
            tally.signals,
            list(tally.ttfb_us.items()),
            list(tally.duration_us.items()),
            tally.origins,
            tally.last_window_end_ms,
        ]
    )


def decode_tally(data: bytes) -> Tally:
    # Histograms travel as [value, count] pairs (JSON object keys would be strings).
    requests, outcomes, ops, signals, ttfb, duration, origins, end = orjson.loads(data)
    return Tally(requests, outcomes, ops, signals, dict(ttfb), dict(duration), origins, end)


def _floor(ms: int, size: int) -> int:
    return ms // size * size


def _ceil(ms: int, size: int) -> int:
    return -(-ms // size) * size


def _usable(buckets: Buckets, size: int) -> bool:
    """Whether rows summed over `size` ms keep the answer's grouping exact."""
    return buckets == "none" or (isinstance(buckets, int) and buckets % size == 0)


def spans(from_ms: int, to_ms: int, buckets: Buckets) -> list[tuple[str, int, int]]:
    """(level, from, to) of `sel_ms` that together cover [from_ms, to_ms) exactly once."""
    h_lo, h_hi = _ceil(from_ms, HOUR_MS), _floor(to_ms, HOUR_MS)
    if not _usable(buckets, HOUR_MS) or h_lo >= h_hi:
        return [("w", from_ms, to_ms)]
    d_lo, d_hi = _ceil(from_ms, DAY_MS), _floor(to_ms, DAY_MS)
    if not _usable(buckets, DAY_MS) or d_lo >= d_hi:
        d_lo = d_hi = h_hi
    return [
        ("w", from_ms, h_lo),
        ("h", h_lo, d_lo),
        ("d", d_lo, d_hi),
        ("h", d_hi, h_hi),
        ("w", h_hi, to_ms),
    ]


_CELLS = """
SELECT role, node, region, bucket, tally FROM cells
WHERE level = :level AND sel_ms >= :lo AND sel_ms < :hi
"""


class Rollups:
    """The rollup file. Not thread-safe: the owner serialises every call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def rolled(self) -> dict[tuple[str, int], int]:
        """(origin, seq) → batch window start of every batch summed in."""
        rows = self._db.execute("SELECT origin, seq, window_start_ms FROM rolled")
        return {(origin, seq): start for origin, seq, start in rows}

    def forget(self, windows: Iterable[int]) -> None:
        """Take out every batch of these windows (their hours and days are redone by settle)."""
        with self._db:
            self._db.execute("BEGIN")
            for start in windows:
                self._db.execute("DELETE FROM rolled WHERE window_start_ms = ?", (start,))
                self._db.execute("DELETE FROM cells WHERE level = 'w' AND sel_ms = ?", (start,))

    def add(
        self,
        headers: Iterable[tuple[str, int, int, Any, Any]],
        tallies: dict[tuple[int, str, str, str, int], Tally],
    ) -> set[int]:
        """Sum batches in: their headers (origin, seq, window start, k, scale) and the tallies
        of their summaries per (window start, role, node, region, summary window start).

        Returns the batch window starts touched.
        """
        touched: set[int] = set()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO rolled (origin, seq, window_start_ms, k, scale) VALUES (?,?,?,?,?)",
                headers,
            )
            for (sel, role, node, region, bucket), tally in tallies.items():
                key = ("w", sel, role, node, region, bucket)
                found = self._db.execute(
                    "SELECT tally FROM cells WHERE level = ? AND sel_ms = ? AND role = ? "
                    "AND node = ? AND region = ? AND bucket = ?",
                    key,
                ).fetchone()
                if found is not None:
                    tally.add(decode_tally(found[0]))
                self._db.execute(
                    "INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?)",
                    (*key, encode_tally(tally)),
                )
                touched.add(sel)
        return touched

    def settle(self, windows: Iterable[int]) -> None:
        """Redo the hour and day rows over these batch windows from the rows below them."""
        hours = {_floor(start, HOUR_MS) for start in windows}
        with self._db:
            self._db.execute("BEGIN")
            for hour in sorted(hours):
                self._sum_up("w", "h", hour, HOUR_MS)
            for day in sorted({_floor(hour, DAY_MS) for hour in hours}):
                self._sum_up("h", "d", day, DAY_MS)

    def _sum_up(self, below: str, level: str, start: int, size: int) -> None:
        rows = self._db.execute(
            "SELECT role, node, region, bucket, tally FROM cells "
            "WHERE level = ? AND sel_ms >= ? AND sel_ms < ?",
            (below, start, start + size),
        )
        summed: dict[CellKey, Tally] = {}
        for role, node, region, bucket, data in rows:
            key = (role, node, region, _floor(bucket, size))
            summed.setdefault(key, Tally()).add(decode_tally(data))
        self._db.execute("DELETE FROM cells WHERE level = ? AND sel_ms = ?", (level, start))
        self._db.executemany(
            "INSERT INTO cells VALUES (?,?,?,?,?,?,?)",
            ((level, start, *key, encode_tally(tally)) for key, tally in summed.items()),
        )

    def tallies(self, query: CellQuery, buckets: Buckets) -> dict[GroupKey, Tally]:
        """The verified tallies of the query, as the raw query over verified batches gives them."""
        result: dict[GroupKey, Tally] = {}
        span = query.time_range
        # Only the filters asked for, so that one node's rows are found through cells_node.
        filters = {"role": query.role, "node": query.node_id, "region": query.region}
        sql = _CELLS + "".join(
            f" AND {name} = :{name}" for name, v in filters.items() if v is not None
        )
        for level, lo, hi in spans(span.from_ms, span.to_ms, buckets):
            if lo >= hi:
                continue
            params = {"level": level, "lo": lo, "hi": hi, **filters}
            for role, node, region, bucket, data in self._db.execute(sql, params):
                key = (role, node, region, bucket_start(bucket, buckets))
                found = result.get(key)
                if found is None:
                    result[key] = decode_tally(data)
                else:
                    found.add(decode_tally(data))
        return result

    def privacy(self, from_ms: int, to_ms: int) -> list[tuple[str, Any, Any]]:
        """Per origin the smallest k and largest scale of its rolled batches in the range."""
        return self._db.execute(
            "SELECT origin, MIN(k), MAX(scale) FROM rolled "
            "WHERE window_start_ms >= ? AND window_start_ms < ? GROUP BY origin",
            (from_ms, to_ms),
        ).fetchall()
