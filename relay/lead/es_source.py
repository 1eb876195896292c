"""Elasticsearch as a lead source: the official 8.x async client and ES aggregations.

Reads `<prefix>summaries-*` and `<prefix>batches-*` as mapped by `relay es-setup`
(relay/sinks/es_setup.py): keywords for node, region and origin, longs for the counters (a fixed
vocabulary per counter object), `histogram` fields for the distributions.

Grouping is a `composite` aggregation over node role, node id, region (and a time bucket: the
window start as a `terms` source, or a `date_histogram` of `fixed_interval` = step, aligned to
the epoch like the store's), paged with `after`. Under it, `sum` per counter and a `histogram`
aggregation of interval 1 on each histogram field: Elasticsearch adds the counts of equal values,
which is the exact merge of relay's histograms (their values are integers).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Final

from relay.core.document import Document
from relay.lead.health import OPS, OUTCOMES, SIGNALS, OriginPrivacy
from relay.lead.source import BatchPage, Buckets, CellQuery, GroupKey, OriginActivity
from relay.lead.tally import BatchSelection, Tally
from relay.lead.timerange import TimeRange
from relay.registry import Registry
from relay.sinks.elasticsearch import make_client
from relay.verify import VerificationReport, Verifier
from relay.verify.elasticsearch import documents_from_hits, hit_pages

__all__ = ["ElasticsearchSource"]

#: Composite buckets per page: with two histograms of up to 302 values each, 50 buckets stay
#: well under Elasticsearch's `search.max_buckets` (65 536).
PAGE: Final = 50
MAX_ORIGINS: Final = 10_000
READ_PAGE: Final = 1000
_HISTOGRAMS: Final = ("ttfb_us", "duration_us")


def _selection_filter(selection: BatchSelection) -> dict[str, Any]:
    ranges = [
        {"bool": {"filter": [{"term": {"origin": o}}, {"range": {"seq": {"gte": lo, "lte": hi}}}]}}
        for o, lo, hi in selection.ranges
    ]
    chosen: dict[str, Any] = (
        {"bool": {"should": ranges, "minimum_should_match": 1}} if ranges else {"match_none": {}}
    )
    return chosen if selection.include else {"bool": {"must_not": [chosen]}}


def _time_filter(time_range: TimeRange) -> dict[str, Any]:
    window = {"gte": time_range.from_ms, "lt": time_range.to_ms, "format": "epoch_millis"}
    return {"range": {"window_start_ms": window}}


def _bucket_source(buckets: Buckets) -> list[dict[str, Any]]:
    if buckets == "none":
        return []
    if buckets == "window":
        return [{"bucket": {"terms": {"field": "window_start_ms"}}}]
    interval = {"field": "window_start_ms", "fixed_interval": f"{buckets}ms"}
    return [{"bucket": {"date_histogram": interval}}]


def _cell_aggs() -> dict[str, Any]:
    aggs: dict[str, Any] = {
        "requests": {"sum": {"field": "requests"}},
        "end": {"max": {"field": "window_end_ms"}},
        "origins": {"terms": {"field": "origin", "size": MAX_ORIGINS}},
    }
    for outcome in OUTCOMES:
        aggs[f"outcomes_{outcome}"] = {"sum": {"field": f"outcomes.{outcome}"}}
    for op in OPS:
        aggs[f"ops_{op}"] = {"sum": {"field": f"ops.{op}"}}
    for signal in SIGNALS:
        aggs[f"signals_{signal}"] = {"sum": {"field": f"signals.{signal}"}}
    for name in _HISTOGRAMS:
        aggs[name] = {"histogram": {"field": name, "interval": 1, "min_doc_count": 1}}
    return aggs


def _agg(found: dict[str, Any], name: str) -> dict[str, Any]:
    """An aggregation of a search answer; an empty one when no index matched (no shards)."""
    result: dict[str, Any] = found.get("aggregations", {}).get(name, {"buckets": []})
    return result


def _tally(bucket: dict[str, Any]) -> Tally:
    def counts(prefix: str, names: tuple[str, ...]) -> dict[str, int]:
        found = {name: round(bucket[f"{prefix}_{name}"]["value"] or 0) for name in names}
        return {name: count for name, count in found.items() if count}

    end = bucket["end"]["value"]
    return Tally(
        requests=round(bucket["requests"]["value"] or 0),
        outcomes=counts("outcomes", OUTCOMES),
        ops=counts("ops", OPS),
        signals=counts("signals", SIGNALS),
        ttfb_us={round(b["key"]): b["doc_count"] for b in bucket["ttfb_us"]["buckets"]},
        duration_us={round(b["key"]): b["doc_count"] for b in bucket["duration_us"]["buckets"]},
        origins={b["key"]: b["doc_count"] for b in bucket["origins"]["buckets"]},
        last_window_end_ms=None if end is None else round(end),
    )


class ElasticsearchSource:
    def __init__(
        self, url: str, *, api_key: str | None, index_prefix: str, ca_certs: Path | None
    ) -> None:
        self._client = make_client(url, api_key=api_key, ca_certs=ca_certs)
        self._summaries = f"{index_prefix}summaries-*"
        self._batches = f"{index_prefix}batches-*"
        # Both, for reading every document in verification order.
        self._all = f"{self._batches},{self._summaries}"

    async def _search(self, index: str, **body: Any) -> dict[str, Any]:
        response = await self._client.search(index=index, **body)
        return dict(response.body)

    async def change_token(self) -> Hashable:
        return await self._totals()

    async def state(self) -> str:
        total, newest = await self._totals()
        return f"elasticsearch:{total}:{newest}"

    async def _totals(self) -> tuple[int, Any]:
        """Documents stored and the newest batch's signing time."""
        found = await self._search(
            self._all,
            size=0,
            track_total_hits=True,
            aggs={"newest": {"max": {"field": "signed_at_ms"}}},
        )
        return (found["hits"]["total"]["value"], _agg(found, "newest").get("value"))

    async def verify(self, registry: Registry, now_ms: int) -> VerificationReport:
        verifier = Verifier(registry, now_ms=now_ms)

        def feed(hits: list[dict[str, Any]]) -> None:
            for document in documents_from_hits(hits):
                verifier.feed(document)

        async with contextlib.aclosing(
            hit_pages(self._client, self._all, page_size=READ_PAGE)
        ) as pages:
            async for hits in pages:
                await asyncio.to_thread(feed, hits)
        return await asyncio.to_thread(verifier.finish)

    async def track(self, verified: set[tuple[str, int]]) -> None:
        """Nothing to keep: Elasticsearch aggregates server-side, over the selection asked."""

    async def tallies(
        self, query: CellQuery, selection: BatchSelection, buckets: Buckets
    ) -> dict[GroupKey, Tally]:
        filters = [_time_filter(query.time_range), _selection_filter(selection)]
        for field, value in (
            ("node.role", query.role),
            ("node.id", query.node_id),
            ("region", query.region),
        ):
            if value is not None:
                filters.append({"term": {field: value}})
        sources = [
            {"role": {"terms": {"field": "node.role"}}},
            {"node": {"terms": {"field": "node.id"}}},
            {"region": {"terms": {"field": "region"}}},
            *_bucket_source(buckets),
        ]
        composite: dict[str, Any] = {"size": PAGE, "sources": sources}
        tallies: dict[GroupKey, Tally] = {}
        while True:
            found = await self._search(
                self._summaries,
                size=0,
                query={"bool": {"filter": filters}},
                aggs={"cells": {"composite": composite, "aggs": _cell_aggs()}},
            )
            cells = _agg(found, "cells")
            for bucket in cells["buckets"]:
                key = bucket["key"]
                group = (key["role"], key["node"], key["region"], round(key.get("bucket", 0)))
                tallies[group] = _tally(bucket)
            if len(cells["buckets"]) < PAGE or "after_key" not in cells:
                return tallies
            composite = {**composite, "after": cells["after_key"]}

    async def privacy(
        self, time_range: TimeRange, selection: BatchSelection
    ) -> dict[str, OriginPrivacy]:
        # Only dp headers have a scale and only aggregate-mode headers a k.
        filters = [_time_filter(time_range), _selection_filter(selection)]
        found = await self._search(
            self._batches,
            size=0,
            query={"bool": {"filter": filters}},
            aggs={
                "origins": {
                    "terms": {"field": "origin", "size": MAX_ORIGINS},
                    "aggs": {
                        "k": {"min": {"field": "privacy.k"}},
                        "scale": {"max": {"field": "privacy.scale"}},
                    },
                }
            },
        )
        found_privacy = {}
        for b in _agg(found, "origins")["buckets"]:
            k, scale = b["k"]["value"], b["scale"]["value"]
            if k is not None or scale is not None:
                found_privacy[b["key"]] = OriginPrivacy(
                    None if k is None else round(k), None if scale is None else round(scale)
                )
        return found_privacy

    async def origins(self) -> dict[str, OriginActivity]:
        found = await self._search(
            self._batches,
            size=0,
            aggs={
                "origins": {
                    "terms": {"field": "origin", "size": MAX_ORIGINS},
                    "aggs": {
                        "seq": {"max": {"field": "seq"}},
                        "signed": {"max": {"field": "signed_at_ms"}},
                        "end": {"max": {"field": "window_end_ms"}},
                    },
                }
            },
        )
        return {
            b["key"]: OriginActivity(
                b["doc_count"],
                round(b["seq"]["value"]),
                round(b["signed"]["value"] or 0),
                round(b["end"]["value"] or 0),
            )
            for b in _agg(found, "origins")["buckets"]
        }

    async def batches(
        self,
        origin: str | None,
        time_range: TimeRange,
        selection: BatchSelection,
        limit: int,
        offset: int,
    ) -> BatchPage:
        filters = [_time_filter(time_range), _selection_filter(selection)]
        if origin is not None:
            filters.append({"term": {"origin": origin}})
        found = await self._search(
            self._batches,
            query={"bool": {"filter": filters}},
            sort=[{"window_start_ms": "desc"}, {"origin": "asc"}, {"seq": "asc"}],
            from_=offset,
            size=limit,
            track_total_hits=True,
        )
        hits = found["hits"]
        return BatchPage(hits["total"]["value"], [hit["_source"] for hit in hits["hits"]])

    async def _document(self, index: str, doc_id: str) -> Document | None:
        found = await self._search(index, query={"ids": {"values": [doc_id]}}, size=1)
        hits = found["hits"]["hits"]
        if not hits:
            return None
        return Document(hits[0]["_index"], hits[0]["_id"], hits[0]["_source"])

    async def batch(self, origin: str, seq: int) -> Document | None:
        return await self._document(self._batches, f"{origin}|b|{seq}")

    async def summary(self, origin: str, seq: int, i: int) -> Document | None:
        return await self._document(self._summaries, f"{origin}|s|{seq}|{i}")

    async def checkpoints(
        self, origin: str, selection: BatchSelection, limit: int
    ) -> list[tuple[int, str]]:
        selected = _selection_filter(selection)
        found = await self._search(
            self._batches,
            query={"bool": {"filter": [{"term": {"origin": origin}}, selected]}},
            sort=[{"seq": "desc"}],
            size=limit,
            source_includes=["seq", "checkpoint"],
        )
        return [
            (hit["_source"]["seq"], hit["_source"]["checkpoint"])
            for hit in found["hits"]["hits"]
            if isinstance(hit["_source"].get("checkpoint"), str)
        ]

    async def close(self) -> None:
        await self._client.close()
