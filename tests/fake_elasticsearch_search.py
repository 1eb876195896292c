"""The fake Elasticsearch (tests/fake_elasticsearch.py) with the `_search` the lead API uses.

A FAKE, not Elasticsearch: it evaluates, over the stored `_source`s, exactly the query and
aggregation subset that relay/lead/es_source.py sends, with Elasticsearch's semantics for it, and
answers anything else with a 400 so that a new query shape cannot pass unnoticed:

- queries: bool (filter, must, should + minimum_should_match, must_not), term, range (gte, gt,
  lt, lte), ids, match_all, match_none;
- sort (field: order, or {order, missing}), from, size, search_after, track_total_hits,
  `_source_includes`;
- a point in time (`pit` in the body of `POST /_search`, no index in the path, as ES requires):
  the view frozen when it was opened, and `_shard_doc` as in ES: a sort value unique per document
  and stable within the PIT (here the document's position in the view), allowed only with a PIT,
  and appended to the sort as the tiebreaker when the request does not name it;
- aggregations: composite (terms and date_histogram `fixed_interval` sources, size, after), terms
  (size; by count, then key), sum, max, histogram (interval, min_doc_count; on a `histogram`
  field it adds each value's count, as Elasticsearch does).
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fake_elasticsearch import FakeElasticsearch, _error

__all__ = ["SearchingElasticsearch"]

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


class Unsupported(Exception):
    """A query or aggregation this fake does not implement: answered 400."""


class MissingPit(Exception):
    """A search in a point in time that is not open (closed, or never opened): answered 404."""


def _field(source: dict[str, Any], path: str) -> Any:
    value: Any = source
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _matches(doc_id: str, source: dict[str, Any], query: dict[str, Any]) -> bool:
    [(kind, spec)] = query.items()
    if kind == "match_all":
        return True
    if kind == "match_none":
        return False
    if kind == "ids":
        return doc_id in spec["values"]
    if kind == "term":
        [(field, wanted)] = spec.items()
        wanted = wanted["value"] if isinstance(wanted, dict) else wanted
        return _field(source, field) == wanted
    if kind == "range":
        [(field, bounds)] = spec.items()
        value = _field(source, field)
        if value is None:
            return False
        checks: dict[str, Callable[[Any, Any], bool]] = {
            "gte": lambda v, b: v >= b,
            "gt": lambda v, b: v > b,
            "lte": lambda v, b: v <= b,
            "lt": lambda v, b: v < b,
        }
        return all(checks[op](value, bound) for op, bound in bounds.items() if op in checks)
    if kind == "bool":

        def each(name: str) -> list[bool]:
            return [_matches(doc_id, source, q) for q in spec.get(name, [])]

        should = each("should")
        required = 1 if should and not (spec.get("filter") or spec.get("must")) else 0
        minimum = int(spec.get("minimum_should_match", required))
        return (
            all(each("filter"))
            and all(each("must"))
            and not any(each("must_not"))
            and sum(should) >= minimum
        )
    raise Unsupported(f"query {kind}")


# -- aggregations ---------------------------------------------------------------------------------


def _aggregate(docs: list[dict[str, Any]], aggs: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, spec in aggs.items():
        sub = spec.get("aggs", {})
        kinds = [k for k in spec if k != "aggs"]
        if len(kinds) != 1:
            raise Unsupported(f"aggregation {name}: {kinds}")
        kind = kinds[0]
        body = spec[kind]
        if kind == "sum":
            values = [_field(d, body["field"]) for d in docs]
            result[name] = {"value": float(sum(v for v in values if v is not None))}
        elif kind in ("max", "min"):
            found = [v for d in docs if (v := _field(d, body["field"])) is not None]
            pick = max if kind == "max" else min
            result[name] = {"value": float(pick(found)) if found else None}
        elif kind == "terms":
            result[name] = _terms(docs, body, sub)
        elif kind == "histogram":
            result[name] = _histogram(docs, body)
        elif kind == "composite":
            result[name] = _composite(docs, body, sub)
        else:
            raise Unsupported(f"aggregation {kind}")
    return result


def _terms(docs: list[dict[str, Any]], body: dict[str, Any], sub: dict[str, Any]) -> dict[str, Any]:
    groups: dict[Any, list[dict[str, Any]]] = {}
    for doc in docs:
        value = _field(doc, body["field"])
        if value is not None:
            groups.setdefault(value, []).append(doc)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return {
        "doc_count_error_upper_bound": 0,
        "sum_other_doc_count": sum(len(g) for _, g in ordered[body.get("size", 10) :]),
        "buckets": [
            {"key": key, "doc_count": len(group), **_aggregate(group, sub)}
            for key, group in ordered[: body.get("size", 10)]
        ],
    }


def _histogram(docs: list[dict[str, Any]], body: dict[str, Any]) -> dict[str, Any]:
    interval = body["interval"]
    counts: dict[float, int] = {}
    for doc in docs:
        value = _field(doc, body["field"])
        if value is None:
            continue
        if isinstance(value, dict):  # a histogram field: each value weighs its count
            pairs = zip(value["values"], value["counts"], strict=True)
        else:
            pairs = zip([value], [1], strict=True)
        for v, c in pairs:
            key = math.floor(v / interval) * interval
            counts[float(key)] = counts.get(float(key), 0) + c
    minimum = body.get("min_doc_count", 0)
    if minimum == 0:
        raise Unsupported("histogram with min_doc_count 0 (empty buckets)")
    return {
        "buckets": [
            {"key": key, "doc_count": n} for key, n in sorted(counts.items()) if n >= minimum
        ]
    }


def _source_key(doc: dict[str, Any], source: dict[str, Any]) -> Any:
    [(kind, body)] = source.items()
    value = _field(doc, body["field"])
    if value is None:
        return None
    if kind == "terms":
        return value
    if kind == "date_histogram" and body.get("fixed_interval", "").endswith("ms"):
        step = int(body["fixed_interval"].removesuffix("ms"))
        return value // step * step
    raise Unsupported(f"composite source {kind} {body}")


def _composite(
    docs: list[dict[str, Any]], body: dict[str, Any], sub: dict[str, Any]
) -> dict[str, Any]:
    names = [name for source in body["sources"] for name in source]
    specs = [spec for source in body["sources"] for spec in source.values()]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for doc in docs:
        key = tuple(_source_key(doc, spec) for spec in specs)
        if None not in key:  # missing_bucket is off: documents without a value are left out
            groups.setdefault(key, []).append(doc)
    ordered = sorted(groups)
    if "after" in body:
        after = tuple(body["after"][name] for name in names)
        ordered = [key for key in ordered if key > after]
    page = ordered[: body.get("size", 10)]
    buckets = [
        {"key": dict(zip(names, key, strict=True)), "doc_count": len(groups[key])}
        | _aggregate(groups[key], sub)
        for key in page
    ]
    answer: dict[str, Any] = {"buckets": buckets}
    if buckets:
        answer["after_key"] = buckets[-1]["key"]
    return answer


# -- hits -----------------------------------------------------------------------------------------


def _sort_key(source: dict[str, Any], shard_doc: int, sort: list[dict[str, Any]]) -> list[Any]:
    key = []
    for clause in sort:
        [(field, spec)] = clause.items()
        spec = {"order": spec} if isinstance(spec, str) else spec
        value = shard_doc if field == "_shard_doc" else _field(source, field)
        if value is None:
            first = spec.get("missing") == "_first"
            descending = spec.get("order") == "desc"
            value = _LONG_MAX if first == descending else _LONG_MIN
        key.append(value)
    return key


def _sorted(hits: list[dict[str, Any]], sort: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for position in reversed(range(len(sort))):
        [(_, spec)] = sort[position].items()
        order = spec if isinstance(spec, str) else spec.get("order", "asc")
        hits.sort(key=lambda hit: hit["sort"][position], reverse=order == "desc")
    return hits


def _after(hit: dict[str, Any], after: list[Any], sort: list[dict[str, Any]]) -> bool:
    for value, bound, clause in zip(hit["sort"], after, sort, strict=True):
        [(_, spec)] = clause.items()
        descending = (spec if isinstance(spec, str) else spec.get("order", "asc")) == "desc"
        if value != bound:
            return (value < bound) if descending else (value > bound)
    return False


class SearchingElasticsearch(FakeElasticsearch):
    """FakeElasticsearch whose `_search` evaluates queries, sorting and aggregations."""

    async def _search(self, request: web.Request) -> tuple[int, Any]:
        raw = await request.read()
        body: dict[str, Any] = json.loads(raw) if raw else {}
        try:
            return 200, self._answer(request, body)
        except Unsupported as exc:
            return 400, _error(400, "parsing_exception", f"fake: unsupported {exc}")
        except MissingPit as exc:
            reason = f"No search context found for id [{exc}]"
            return 404, _error(404, "search_context_missing_exception", reason)

    def _view(
        self, request: web.Request, body: dict[str, Any]
    ) -> tuple[list[tuple[str, str, dict[str, Any]]], list[dict[str, Any]]]:
        """The documents searched (a PIT's frozen view, or the live indices) and the sort."""
        sort: list[dict[str, Any]] = body.get("sort", [])
        if "pit" not in body:
            if "index" not in request.match_info:
                raise Unsupported("search without an index")
            if any("_shard_doc" in clause for clause in sort):
                raise Unsupported("[_shard_doc] sort without a point in time")
            patterns = request.match_info["index"].split(",")
            return [
                (index, doc_id, source)
                for index in sorted(self.indices)
                if any(fnmatch.fnmatch(index, p) for p in patterns)
                for doc_id, source in sorted(self.indices[index].items())
            ], sort
        if "index" in request.match_info:
            raise Unsupported("[indices] cannot be used with point in time")
        if body["pit"]["id"] not in self.pits:
            raise MissingPit(body["pit"]["id"])
        if sort and not any("_shard_doc" in clause for clause in sort):
            sort = [*sort, {"_shard_doc": "asc"}]
        return self.pits[body["pit"]["id"]], sort

    def _answer(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        query = body.get("query", {"match_all": {}})
        view, sort = self._view(request, body)
        matched = [
            (index, doc_id, source, shard_doc)
            for shard_doc, (index, doc_id, source) in enumerate(view)
            if _matches(doc_id, source, query)
        ]
        answer: dict[str, Any] = {"took": 0, "timed_out": False}
        if "aggs" in body:
            answer["aggregations"] = _aggregate([s for _, _, s, _ in matched], body["aggs"])
        if "pit" in body:
            answer["pit_id"] = body["pit"]["id"]
        includes = request.query.get("_source_includes")
        hits = [
            {
                "_index": index,
                "_id": doc_id,
                "_score": None if sort else 1.0,
                "_source": source
                if includes is None
                else {k: v for k, v in source.items() if k in includes.split(",")},
                **({"sort": _sort_key(source, shard_doc, sort)} if sort else {}),
            }
            for index, doc_id, source, shard_doc in matched
        ]
        if sort:
            hits = _sorted(hits, sort)
        if body.get("search_after") is not None:
            hits = [hit for hit in hits if _after(hit, body["search_after"], sort)]
        start = int(body.get("from", request.query.get("from", 0)))
        size = int(body.get("size", request.query.get("size", 10)))
        answer["hits"] = {"hits": hits[start : start + size]}
        if body.get("track_total_hits", True) is not False:
            answer["hits"]["total"] = {"value": len(matched), "relation": "eq"}
        return answer
