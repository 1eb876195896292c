"""Held batches on Elasticsearch: copied into `<prefix>holds`, which ILM never deletes.

Retention on Elasticsearch deletes whole monthly indices (`relay es-setup`'s ILM policy), so a
hold cannot keep documents where they are. `copy_hold` copies the held batches and their summaries,
under their own `_id`s, into `<prefix>holds` (template: relay/sinks/es_setup.py `holds_template`,
no lifecycle), reads the copies back and checks them: each equal to its original, and together
verifying as a chain that starts at the hold (`check_held`) with the batch hashes the hold signed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from elasticsearch import AsyncElasticsearch

from relay.core.document import Document
from relay.lead.holds import Hold, HoldError
from relay.registry import Registry
from relay.sinks.documents import same_source
from relay.sinks.es_setup import holds_template
from relay.verify.elasticsearch import documents_from_hits, hit_pages
from relay.verify.verifier import verify_documents

__all__ = ["check_held", "copy_hold", "held_documents", "holds_index"]

_BULK = 1000  # documents per bulk request


def holds_index(index_prefix: str) -> str:
    return f"{index_prefix}holds"


def check_held(
    documents: Iterable[Document], hold: Hold, registry: Registry, now_ms: int
) -> list[str]:
    """Problems with the held documents (none: they verify, and are the batches held)."""
    documents = list(documents)
    report = verify_documents(
        registry, documents, now_ms=now_ms, chain_starts={hold.origin: hold.chain_start}
    )
    problems = [f"{f.code}: seq {f.seq}: {f.message}" for f in report.findings]
    stored = {
        d.source.get("seq"): d.source.get("batch_hash") for d in documents if "att" not in d.source
    }
    for seq, expected in zip(hold.seqs, hold.batch_hashes, strict=True):
        if seq not in stored:
            problems.append(f"seq {seq}: the held batch is missing")
        elif stored[seq] != expected:
            problems.append(f"seq {seq}: batch_hash {stored[seq]} is not the held {expected}")
        elif (hold.origin, seq) not in report.verified:
            problems.append(f"seq {seq}: the held batch does not verify")
    return problems


async def held_documents(
    client: AsyncElasticsearch, index: str, hold: Hold
) -> AsyncIterator[Document]:
    """The hold's batches and summaries in ``index`` (a pattern list), in verification order."""
    query = {
        "bool": {
            "filter": [
                {"term": {"origin": hold.origin}},
                {"range": {"seq": {"gte": hold.seqs.start, "lte": hold.seqs.stop - 1}}},
            ]
        }
    }
    async with contextlib.aclosing(hit_pages(client, index, query=query)) as pages:
        async for hits in pages:
            for document in documents_from_hits(hits):
                yield document


async def copy_hold(
    client: AsyncElasticsearch, index_prefix: str, hold: Hold, registry: Registry, now_ms: int
) -> int:
    """Copy the hold's documents into `<prefix>holds` and check the copies; return how many."""
    target = holds_index(index_prefix)
    await client.indices.put_index_template(name=target, **holds_template(index_prefix))
    live = f"{index_prefix}batches-*,{index_prefix}summaries-*"
    originals = [doc async for doc in held_documents(client, live, hold)]
    operations: list[Mapping[str, Any]] = []
    for doc in originals:
        operations += [{"create": {"_index": target, "_id": doc.id}}, doc.source]
    for start in range(0, len(operations), 2 * _BULK):
        response = await client.bulk(operations=operations[start : start + 2 * _BULK])
        for item in response.body["items"]:
            status = item["create"]["status"]
            # 409: an earlier hold copied it already; the copy is compared below like the rest.
            if status not in (200, 201, 409):
                raise HoldError(f"copying {item['create']['_id']} to {target}: {item['create']}")
    await client.indices.refresh(index=target)
    copies = {doc.id: doc async for doc in held_documents(client, target, hold)}
    for doc in originals:
        copy = copies.get(doc.id)
        if copy is None or not same_source(doc.source, copy.source):
            raise HoldError(f"the copy of {doc.id} in {target} is missing or differs")
    problems = check_held(copies.values(), hold, registry, now_ms)
    if problems:
        raise HoldError(f"the held copies in {target} do not verify: " + "; ".join(problems[:10]))
    return len(originals)
