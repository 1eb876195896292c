"""Reading the documents back from Elasticsearch, in verification order (DESIGN §7).

The one document reader: `relay verify --es`, the lead's Elasticsearch source and the lead's hold
copies all page through documents with `hit_pages`. One point in time (PIT) over the indices,
paged with `search_after`, sorted by origin, seq, then i (batch documents have no `i` and sort
first), then `_shard_doc`. Two batches with the same origin and seq (an equivocation, stored in
two monthly indices) tie on (origin, seq, i); without a tiebreaker `search_after` would skip the
second one at a page boundary. `_shard_doc` (shard ordinal and Lucene doc id, stable within the
PIT) is unique per document; `_id` is not sortable on an ES 8 cluster by default
(`indices.id_field_data.enabled` is off), and equal `_id`s can exist in two indices anyway. The PIT
also keeps the view from changing while it is read.

`documents_from_hits` turns any iterable of hits into documents, which is the seam for testing
everything after the HTTP layer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping
from typing import Any, Final

from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch

from relay.core.document import Document
from relay.verify.errors import SourceError
from relay.verify.sources import document_from_mapping

__all__ = [
    "KEEP_ALIVE",
    "PAGE_SIZE",
    "SORT",
    "document_indices",
    "documents_from_hits",
    "elasticsearch_documents",
    "hit_pages",
]

SORT: Final[list[dict[str, Any]]] = [
    {"origin": {"order": "asc", "unmapped_type": "keyword"}},
    {"seq": {"order": "asc", "unmapped_type": "long"}},
    {"i": {"order": "asc", "missing": "_first", "unmapped_type": "long"}},
    {"_shard_doc": "asc"},
]
PAGE_SIZE: Final = 1000
#: Between two page requests, not for the whole read: each search renews it.
KEEP_ALIVE: Final = "5m"


def document_indices(index_prefix: str) -> str:
    """Every index that holds batch or summary documents under ``index_prefix``."""
    return f"{index_prefix}batches-*,{index_prefix}summaries-*"


def documents_from_hits(hits: Iterable[Mapping[str, Any]]) -> Iterator[Document]:
    """Search hits (`_index`, `_id`, `_source`) as documents; SourceError for a malformed one."""
    for hit in hits:
        yield document_from_mapping(hit, f"search hit {hit.get('_id')!r}")


async def hit_pages(
    client: AsyncElasticsearch,
    index: str,
    *,
    query: dict[str, Any] | None = None,
    page_size: int = PAGE_SIZE,
    keep_alive: str = KEEP_ALIVE,
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """Every hit of ``query`` in ``index`` (a pattern list), in SORT order, a page at a time."""
    opened = await client.open_point_in_time(index=index, keep_alive=keep_alive)
    pit_id: str = opened.body["id"]
    try:
        after: list[Any] | None = None
        while True:
            response = await client.search(
                pit={"id": pit_id, "keep_alive": keep_alive},
                query=query,
                sort=SORT,
                size=page_size,
                search_after=after,
                track_total_hits=False,
            )
            pit_id = response.body.get("pit_id", pit_id)
            hits: list[dict[str, Any]] = response.body["hits"]["hits"]
            if hits:
                yield hits
            if len(hits) < page_size:
                return
            after = hits[-1]["sort"]
    finally:
        # The PIT expires by itself after keep_alive; closing early only frees it sooner.
        with contextlib.suppress(ApiError, TransportError):
            await client.close_point_in_time(id=pit_id)


def elasticsearch_documents(
    url: str,
    *,
    api_key: str | None = None,
    index_prefix: str = "relay-",
    page_size: int = PAGE_SIZE,
) -> Iterator[Document]:
    """The documents of the cluster at ``url``; SourceError if it cannot be searched.

    A synchronous iterator over `hit_pages` (the command is synchronous): its own event loop
    fetches one page per step, so the documents are verified as they arrive.
    """
    loop = asyncio.new_event_loop()
    client = AsyncElasticsearch(url, api_key=api_key, request_timeout=60)
    pages = hit_pages(client, document_indices(index_prefix), page_size=page_size)
    try:
        while True:
            try:
                hits = loop.run_until_complete(anext(pages))
            except StopAsyncIteration:
                return
            yield from documents_from_hits(hits)
    except (ApiError, TransportError) as exc:
        raise SourceError(f"cannot read documents from Elasticsearch at {url}: {exc}") from exc
    finally:
        loop.run_until_complete(pages.aclose())
        loop.run_until_complete(client.close())
        loop.close()
