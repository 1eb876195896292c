"""Reading the documents back from Elasticsearch, in verification order (DESIGN §7).

One point in time (PIT) over `<prefix>batches-*,<prefix>summaries-*`, paged with `search_after`
and sorted by origin, seq, then i: batch documents have no `i` and sort first. A PIT search adds
the `_shard_doc` tiebreaker itself, so paging neither skips nor repeats a document, and the view
does not change while it is read.

`search_hits` pages; `documents_from_hits` turns any iterable of hits into documents, which is the
seam for testing everything after the HTTP layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch

from relay.core.document import Document
from relay.verify.errors import SourceError
from relay.verify.sources import document_from_mapping

__all__ = ["SORT", "documents_from_hits", "elasticsearch_documents", "search_hits"]

SORT: list[dict[str, Any]] = [
    {"origin": {"order": "asc", "unmapped_type": "keyword"}},
    {"seq": {"order": "asc", "unmapped_type": "long"}},
    {"i": {"order": "asc", "missing": "_first", "unmapped_type": "long"}},
]


def documents_from_hits(hits: Iterable[Mapping[str, Any]]) -> Iterator[Document]:
    """Search hits (`_index`, `_id`, `_source`) as documents; SourceError for a malformed one."""
    for hit in hits:
        yield document_from_mapping(hit, f"search hit {hit.get('_id')!r}")


def search_hits(
    client: Elasticsearch, index_prefix: str, *, page_size: int = 1000, keep_alive: str = "5m"
) -> Iterator[dict[str, Any]]:
    """Every batch and summary hit under ``index_prefix``, in (origin, seq, i) order."""
    indices = f"{index_prefix}batches-*,{index_prefix}summaries-*"
    pit_id: str = client.open_point_in_time(index=indices, keep_alive=keep_alive)["id"]
    try:
        search_after: list[Any] | None = None
        while True:
            response = client.search(
                pit={"id": pit_id, "keep_alive": keep_alive},
                sort=SORT,
                size=page_size,
                search_after=search_after,
                track_total_hits=False,
            )
            pit_id = response.get("pit_id", pit_id)
            hits: list[dict[str, Any]] = response["hits"]["hits"]
            yield from hits
            if len(hits) < page_size:
                return
            search_after = hits[-1]["sort"]
    finally:
        # The PIT expires by itself after keep_alive; closing early only frees it sooner.
        with contextlib.suppress(ApiError, TransportError):
            client.close_point_in_time(id=pit_id)


def elasticsearch_documents(
    url: str, *, api_key: str | None = None, index_prefix: str = "relay-"
) -> Iterator[Document]:
    """The documents of the cluster at ``url``; SourceError if it cannot be searched."""
    client = Elasticsearch(url, api_key=api_key, request_timeout=60)
    try:
        yield from documents_from_hits(search_hits(client, index_prefix))
    except (ApiError, TransportError) as exc:
        raise SourceError(f"cannot read documents from Elasticsearch at {url}: {exc}") from exc
    finally:
        client.close()
