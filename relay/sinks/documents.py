"""The documents relay ships: exactly what goes to Elasticsearch (DESIGN §2, §7, pinned).

`{"_index", "_id", "_source"}` per document. Indices are per origin and dated by window start
(UTC month), `<prefix>batches-<origin slug>-YYYY.MM`, so that an operator's API key can be
limited to its own indices (relay/sinks/es_setup.py). Ids are deterministic so that shipping twice
stores once (`op_type=create`); a 409 counts as stored only when the document found at the id is
ours (`same_source`): anyone else who can write the index could have taken the id first.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from relay.attest.batch import SignedBatch
from relay.attest.merkle import inclusion_proofs, leaf_hash

__all__ = [
    "Document",
    "batch_documents",
    "index_name",
    "origin_slug",
    "own_index_patterns",
    "pack_source",
    "same_source",
    "unpack_source",
]

#: Elasticsearch refuses index names longer than this many bytes.
MAX_INDEX_NAME = 255
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Document:
    index: str
    id: str
    source: dict[str, Any]

    def to_line(self) -> bytes:
        """One NDJSON line of `relay export`, newline included."""
        return orjson.dumps({"_index": self.index, "_id": self.id, "_source": self.source}) + b"\n"

    @classmethod
    def from_line(cls, line: bytes | str) -> Document:
        data = orjson.loads(line)
        return cls(data["_index"], data["_id"], data["_source"])


def origin_slug(origin: str) -> str:
    """The origin as it appears in index names (DESIGN §7, pinned): lower-cased, every run of
    characters outside [a-z0-9] replaced by one `-` (`relay.example.org/eu-1` →
    `relay-example-org-eu-1`). Two origins can share a slug; that only lets their keys write each
    other's indices, and a 409 is still checked against the stored content."""
    return _NOT_SLUG.sub("-", origin.lower())


def index_name(prefix: str, kind: str, origin: str, window_start_ms: int) -> str:
    """`<prefix><kind>-<origin slug>-YYYY.MM`, the month (UTC) of the window start."""
    month = datetime.fromtimestamp(window_start_ms / 1000, tz=UTC).strftime("%Y.%m")
    return f"{prefix}{kind}-{origin_slug(origin)}-{month}"


def own_index_patterns(prefix: str, origin: str) -> list[str]:
    """The index patterns of exactly ``origin``'s indices, for an Elasticsearch role.

    `????.??` rather than `*`: with `*`, origin `relay.example` (slug `relay-example`) would
    match `relay-batches-relay-example-eu-1-2026.01` of origin `relay.example/eu-1` too.
    """
    slug = origin_slug(origin)
    return [f"{prefix}{kind}-{slug}-????.??" for kind in ("batches", "summaries")]


def _b64(data: bytes) -> str:
    # binascii directly: 14 proof hashes per summary make this a hot spot of sealing.
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def batch_documents(
    signed: SignedBatch,
    summaries: Sequence[dict[str, Any]],
    checkpoint: str,
    index_prefix: str,
) -> list[Document]:
    """The batch document followed by its summary documents, in leaf order."""
    header = signed.header
    origin, seq = header["origin"], header["seq"]
    start = header["window_start_ms"]
    batch_source = {
        **header,
        "signed": signed.msg.decode("utf-8"),
        "sig": _b64(signed.sig),
        "batch_hash": _b64(signed.batch_hash),
        "checkpoint": checkpoint,
    }
    documents = [
        Document(
            index_name(index_prefix, "batches", origin, start), f"{origin}|b|{seq}", batch_source
        )
    ]
    proofs = inclusion_proofs([leaf_hash(leaf) for leaf in signed.leaves])
    # A tree of n leaves has 2n nodes but its proofs name ~n·log2(n) of them: encode each once.
    encoded: dict[bytes, str] = {}
    n = len(summaries)
    summary_index = index_name(index_prefix, "summaries", origin, start)
    for i, (summary, leaf, proof) in enumerate(zip(summaries, signed.leaves, proofs, strict=True)):
        source = {
            **summary,
            "origin": origin,
            "seq": seq,
            "i": i,
            "att": {
                "leaf": leaf.decode("utf-8"),
                "n": n,
                "proof": [encoded.get(p) or encoded.setdefault(p, _b64(p)) for p in proof],
            },
        }
        documents.append(Document(summary_index, f"{origin}|s|{seq}|{i}", source))
    return documents


def pack_source(source: Mapping[str, Any]) -> bytes:
    """The bytes the outbox keeps for a document's `_source`.

    A summary document repeats its fields: they are also in `att.leaf`, the canonical JSON of
    {origin, seq, i, fields}. Only `att` is kept for one: ~1.2 kB instead of ~1.7 kB for a summary
    with a few histogram buckets, so sealing 10 000 cells writes and fsyncs ~5 MB less.
    """
    att = source.get("att")
    if isinstance(att, dict) and isinstance(att.get("leaf"), str):
        return orjson.dumps({"att": att})
    return orjson.dumps(source)


def unpack_source(data: bytes) -> dict[str, Any]:
    """The `_source` that `pack_source` kept: a summary's fields come back from its leaf."""
    source: dict[str, Any] = orjson.loads(data)
    if source.keys() == {"att"}:
        att = source["att"]
        return {**orjson.loads(att["leaf"]), "att": att}
    return source


def same_source(ours: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """True if ``stored`` (found at one of our ids) is our document's `_source`.

    Equal as JSON, key order aside: sorted compact orjson bytes, so `true` is not `1` and `"1"`
    is not `1`. A re-ship (a crash, a lost answer) sends exactly what the outbox committed, so
    only someone else's document differs.
    """
    return orjson.dumps(ours, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        stored, option=orjson.OPT_SORT_KEYS
    )
