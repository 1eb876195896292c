"""The documents relay ships: exactly what goes to Elasticsearch (DESIGN §2, §7, pinned).

`{"_index", "_id", "_source"}` per document. Indices are dated by window start (UTC month);
ids are deterministic so that shipping twice stores once (`op_type=create`, 409 = stored).
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from relay.attest.batch import SignedBatch
from relay.attest.merkle import inclusion_proofs, leaf_hash

__all__ = ["Document", "batch_documents", "index_name", "pack_source", "unpack_source"]


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


def index_name(prefix: str, kind: str, window_start_ms: int) -> str:
    month = datetime.fromtimestamp(window_start_ms / 1000, tz=UTC).strftime("%Y.%m")
    return f"{prefix}{kind}-{month}"


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
        Document(index_name(index_prefix, "batches", start), f"{origin}|b|{seq}", batch_source)
    ]
    proofs = inclusion_proofs([leaf_hash(leaf) for leaf in signed.leaves])
    # A tree of n leaves has 2n nodes but its proofs name ~n·log2(n) of them: encode each once.
    encoded: dict[bytes, str] = {}
    n = len(summaries)
    summary_index = index_name(index_prefix, "summaries", start)
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
