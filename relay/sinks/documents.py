"""The documents relay ships: exactly what goes to Elasticsearch (DESIGN §2, §7, pinned).

`{"_index", "_id", "_source"}` per document. Indices are per origin and dated by window start
(UTC month), `<prefix>batches-<origin slug>-YYYY.MM`, so that an operator's API key can be
limited to its own indices (relay/sinks/es_setup.py). Ids are deterministic so that shipping twice
stores once (`op_type=create`); a 409 counts as stored only when the document found at the id is
ours (`same_source`): anyone else who can write the index could have taken the id first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from pydantic import Field, with_config
from typing_extensions import TypedDict

from relay.aggregate.cells import Summary
from relay.attest.batch import BatchHeader, SignedBatch
from relay.attest.merkle import CompactRange, inclusion_proofs, leaf_hash
from relay.core.b64 import b64encode
from relay.core.document import Document
from relay.core.fields import HASH_B64_PATTERN, Count, Hash64, Origin, Signature64
from relay.core.indices import index_name, origin_slug
from relay.core.numbers import MAX_SAFE_INT

__all__ = [
    "DOCUMENT_SCHEMA",
    "Attestation",
    "AttestationV1",
    "BatchDocument",
    "BatchSource",
    "LeafContent",
    "SummaryDocument",
    "SummarySource",
    "attested_leaf_hash",
    "batch_documents",
    "own_index_patterns",
    "same_source",
    "unpack_source",
]

#: The document format, signed as the batch header's `schema` (DESIGN §2). In format 2 a
#: summary's `att` carries `leaf_hash`, the RFC 9162 hash of its leaf, instead of the leaf
#: itself: the leaf is `JCS({origin, seq, i, ...summary fields})`, and those are the document's
#: searchable fields, so storing it too doubled the bytes of every summary. Format 1 (`att.leaf`,
#: the only one before) is still read everywhere: by `relay verify`, `relay lead` and the outbox.
DOCUMENT_SCHEMA = 2


_LeafCount = Annotated[
    int, Field(ge=1, le=MAX_SAFE_INT, description="Leaves in the batch's tree (= header n).")
]
_Proof = Annotated[
    list[Hash64], Field(description="Inclusion proof, RFC 9162 order, leaf to root.")
]


@with_config(extra="forbid")
class Attestation(TypedDict):
    """What ties a summary to its signed batch (document format 2): its leaf's hash and the
    RFC 9162 inclusion proof. The leaf is RFC 8785 JSON of the document's searchable fields
    (`origin`, `seq`, `i` and the summary fields), so it is not stored twice."""

    leaf_hash: Annotated[
        Hash64,
        Field(
            description='SHA-256(0x00 ‖ leaf), base64, the leaf being RFC 8785 JSON of {"origin", '
            '"seq", "i", ...summary fields}: the searchable fields of this document.'
        ),
    ]
    n: _LeafCount
    proof: _Proof


@with_config(extra="forbid")
class AttestationV1(TypedDict):
    """Document format 1 (relays before schema 2): the leaf itself and its inclusion proof."""

    leaf: Annotated[
        str,
        Field(
            description='The Merkle leaf as UTF-8 text: RFC 8785 JSON of {"origin", "seq", "i", '
            "...summary fields}."
        ),
    ]
    n: _LeafCount
    proof: _Proof


@with_config(extra="forbid")
class LeafContent(Summary):
    """What a leaf signs (§5.2): the summary fields and the summary's place in the chain.

    `relay verify` holds signed leaves to it (finding `invalid_leaf`): a signature proves who
    published a value, not that the value is one relay could have produced.
    """

    origin: Origin
    seq: Count
    i: Annotated[Count, Field(description="Leaf index in the batch.")]


@with_config(extra="forbid")
class SummarySource(LeafContent):
    """`_source` of a summary document: the summary fields plus its place in the chain."""

    att: Attestation | AttestationV1


@with_config(extra="forbid")
class BatchSource(BatchHeader):
    """`_source` of a batch document: searchable header fields plus what an auditor checks."""

    signed: Annotated[
        str,
        Field(
            pattern=r"^telemetry-batch/v1\n\{",
            description='The signed bytes as UTF-8: "telemetry-batch/v1\\n" + RFC 8785 header.',
        ),
    ]
    sig: Annotated[Signature64, Field(description="Ed25519 signature over `signed`, base64.")]
    batch_hash: Annotated[Hash64, Field(description="SHA-256 of `signed`, base64.")]
    checkpoint: Annotated[
        str,
        Field(
            pattern=r"^[^\n]+\n(0|[1-9][0-9]*)\n" + HASH_B64_PATTERN + r"\n\n(\u2014 [^\n]+\n)+$",
            description="Signed note (c2sp.org/tlog-checkpoint) over the log of this origin's "
            "batch messages, after this batch.",
        ),
    ]


_INDEX_NAMING = (
    "slug is the origin lower-cased, every run of characters outside [a-z0-9] as one `-`. "
)


@with_config(extra="forbid")
class BatchDocument(TypedDict):
    """A batch document as shipped to Elasticsearch and written by relay export (DESIGN §2)."""

    _index: Annotated[
        str,
        Field(
            pattern=r"^[a-z0-9][a-z0-9._-]*batches-([a-z0-9-]+-)?[0-9]{4}\.[0-9]{2}$",
            description="`<index_prefix>batches-<origin slug>-YYYY.MM` by window start (UTC); the "
            + _INDEX_NAMING
            + "Documents shipped before per-origin indices have `<index_prefix>batches-YYYY.MM`.",
        ),
    ]
    _id: Annotated[
        str,
        Field(pattern=r"^[^+\s]{1,255}\|b\|(0|[1-9][0-9]*)$", description="`<origin>|b|<seq>`."),
    ]
    _source: BatchSource


@with_config(extra="forbid")
class SummaryDocument(TypedDict):
    """A summary document as shipped to Elasticsearch and written by relay export (DESIGN §2)."""

    _index: Annotated[
        str,
        Field(
            pattern=r"^[a-z0-9][a-z0-9._-]*summaries-([a-z0-9-]+-)?[0-9]{4}\.[0-9]{2}$",
            description="`<index_prefix>summaries-<origin slug>-YYYY.MM` by window start (UTC); "
            "the "
            + _INDEX_NAMING
            + "Documents shipped before per-origin indices have `<index_prefix>summaries-YYYY.MM`.",
        ),
    ]
    _id: Annotated[
        str,
        Field(
            pattern=r"^[^+\s]{1,255}\|s\|(0|[1-9][0-9]*)\|(0|[1-9][0-9]*)$",
            description="`<origin>|s|<seq>|<i>`.",
        ),
    ]
    _source: SummarySource


@dataclass(frozen=True, slots=True)
class ChainStart:
    """Where an origin's chain starts when its first batches are gone on purpose.

    Retention of the embedded store leaves one (relay/sinks/retention.py), and so does a hold
    (relay/lead/holds.py). Batch ``seq`` is then the first one, its `prev` must be ``prev`` and,
    when ``log`` (the frontier of the log of batch messages 0..seq − 1) is known, every stored
    checkpoint is still checked against the log: a wrong marker shows as `checkpoint_mismatch`
    against the operator's own signed checkpoints. Without it the stored checkpoints are checked
    for signature and size only, as after a missing batch.
    """

    seq: int
    prev: bytes
    log: CompactRange | None


def own_index_patterns(prefix: str, origin: str) -> list[str]:
    """The index patterns of exactly ``origin``'s indices, for an Elasticsearch role.

    `????.??` rather than `*`: with `*`, origin `relay.example` (slug `relay-example`) would
    match `relay-batches-relay-example-eu-1-2026.01` of origin `relay.example/eu-1` too.
    """
    slug = origin_slug(origin)
    return [f"{prefix}{kind}-{slug}-????.??" for kind in ("batches", "summaries")]


def batch_documents(
    signed: SignedBatch,
    summaries: Sequence[Summary],
    checkpoint: str,
    index_prefix: str,
) -> list[Document]:
    """The batch document followed by its summary documents, in leaf order."""
    header = signed.header
    origin, seq = header["origin"], header["seq"]
    start = header["window_start_ms"]
    batch_source: BatchSource = {
        **header,
        "signed": signed.msg.decode("utf-8"),
        "sig": b64encode(signed.sig),
        "batch_hash": b64encode(signed.batch_hash),
        "checkpoint": checkpoint,
    }
    documents = [
        Document(
            index_name(index_prefix, "batches", origin, start), f"{origin}|b|{seq}", batch_source
        )
    ]
    hashes = [leaf_hash(leaf) for leaf in signed.leaves]
    proofs = inclusion_proofs(hashes)
    # A tree of n leaves has 2n nodes but its proofs name ~n·log2(n) of them: encode each once.
    encoded: dict[bytes, str] = {}
    n = len(summaries)
    summary_index = index_name(index_prefix, "summaries", origin, start)
    for i, (summary, hashed, proof) in enumerate(zip(summaries, hashes, proofs, strict=True)):
        source: SummarySource = {
            **summary,
            "origin": origin,
            "seq": seq,
            "i": i,
            "att": {
                "leaf_hash": b64encode(hashed),
                "n": n,
                "proof": [encoded.get(p) or encoded.setdefault(p, b64encode(p)) for p in proof],
            },
        }
        documents.append(Document(summary_index, f"{origin}|s|{seq}|{i}", source))
    return documents


def unpack_source(data: bytes) -> dict[str, Any]:
    """A document's `_source` from the bytes the outbox keeps.

    The outbox keeps `orjson.dumps(source)`. Relays before document format 2 kept a summary
    as its `att` alone, whose `leaf` holds the fields: such a row, still waiting after an
    upgrade, ships as the format-1 document it was.
    """
    source: dict[str, Any] = orjson.loads(data)
    if source.keys() == {"att"}:
        att = source["att"]
        return {**orjson.loads(att["leaf"]), "att": att}
    return source


def attested_leaf_hash(att: Mapping[str, Any]) -> str | None:
    """The leaf hash (base64) a summary's `att` states, in either format; None if it states
    none. What the inclusion proof leads up from; only `relay verify` says whether the fields
    hash to it."""
    leaf, stated = att.get("leaf"), att.get("leaf_hash")
    if isinstance(leaf, str):
        try:
            return b64encode(leaf_hash(leaf.encode("utf-8")))
        except UnicodeEncodeError:
            return None
    return stated if isinstance(stated, str) else None


def same_source(ours: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """True if ``stored`` (found at one of our ids) is our document's `_source`.

    Equal as JSON, key order aside: sorted compact orjson bytes, so `true` is not `1` and `"1"`
    is not `1`. A re-ship (a crash, a lost answer) sends exactly what the outbox committed, so
    only someone else's document differs.
    """
    return orjson.dumps(ours, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        stored, option=orjson.OPT_SORT_KEYS
    )
