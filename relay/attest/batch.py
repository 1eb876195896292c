"""Signed telemetry batches (DESIGN §5.2–5.3).

A batch is one window of one origin. Its summaries become Merkle leaves
``JCS({"origin", "seq", "i", ...summary})``; its header carries their RFC 9162 root and the hash of
the previous batch; the signed bytes are ``b"telemetry-batch/v1\\n" + JCS(header)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field, with_config
from typing_extensions import TypedDict

from relay.aggregate.cells import Stats, Summary
from relay.attest import merkle
from relay.attest.canonical import canonical_json, strict_loads
from relay.attest.errors import (
    BadSignatureError,
    InvalidOriginError,
    MalformedBatchError,
    NonCanonicalError,
)
from relay.attest.keys import OperatorKey, VerifierKey, validate_origin
from relay.core.b64 import b64decode, b64encode
from relay.core.fields import Count, Hash64, Kid, Origin
from relay.core.numbers import is_int
from relay.privacy.dp_release import DpPrivacy
from relay.privacy.threshold import AggregatePrivacy

__all__ = [
    "BATCH_MSG_PREFIX",
    "ZERO_HASH",
    "BatchHeader",
    "Privacy",
    "SignedBatch",
    "batch_hash",
    "batch_message",
    "leaf_bytes",
    "sign_batch",
    "verify_batch",
]

BATCH_MSG_PREFIX = b"telemetry-batch/v1\n"
#: ``prev`` of seq 0.
ZERO_HASH = bytes(32)

Privacy = Annotated[
    AggregatePrivacy | DpPrivacy,
    Field(discriminator="mode", description="The privacy parameters the batch was made under."),
]


@with_config(extra="forbid")
class BatchHeader(TypedDict):
    """The signed batch header (§5.3): `signed` is its RFC 8785 form after the prefix line."""

    v: Literal[1]
    type: Literal["telemetry-batch"]
    origin: Origin
    kid: Kid
    seq: Count
    window_start_ms: Count
    window_end_ms: Count
    signed_at_ms: Count
    n: Annotated[Count, Field(description="Number of summaries (Merkle leaves).")]
    root: Annotated[Hash64, Field(description="RFC 9162 Merkle root of the leaves.")]
    prev: Annotated[Hash64, Field(description="batch_hash of seq - 1; 32 zero bytes for seq 0.")]
    schema: Annotated[
        int,
        Field(
            ge=1,
            description="Document format: 2 = summaries carry `att.leaf_hash`, 1 = `att.leaf` "
            "(relays before format 2); readers accept both.",
        ),
    ]
    privacy: Privacy
    stats: Stats
    gap: NotRequired[
        Annotated[
            Literal[True],
            Field(
                description="Present on a batch that spans downtime: empty, several windows long."
            ),
        ]
    ]
    next_kid: NotRequired[
        Annotated[Kid, Field(description="On the last batch under a key: the kid of the next key.")]
    ]


_LEAF_KEYS = frozenset({"origin", "seq", "i"})
_INT_FIELDS = ("seq", "window_start_ms", "window_end_ms", "signed_at_ms", "n", "schema")
_HASH_FIELDS = ("root", "prev")
_PINNED_FIELDS = frozenset(
    {"v", "type", "origin", "kid", *_INT_FIELDS, *_HASH_FIELDS, "privacy", "stats"}
)


def leaf_bytes(origin: str, seq: int, i: int, summary: Mapping[str, object]) -> bytes:
    """Leaf ``i`` of batch ``seq``: JCS of the summary with its position added (DESIGN §5.2)."""
    clash = _LEAF_KEYS.intersection(summary)
    if clash:
        raise ValueError(f"summary must not contain {sorted(clash)}: the batch sets them")
    return canonical_json({"origin": origin, "seq": seq, "i": i, **summary})


def batch_message(header: Mapping[str, object]) -> bytes:
    """The signed bytes: the telemetry-batch/v1 prefix and the RFC 8785 form of the header."""
    return BATCH_MSG_PREFIX + canonical_json(dict(header))


def batch_hash(msg: bytes) -> bytes:
    """SHA-256 of the signed bytes; the next batch's ``prev``."""
    return hashlib.sha256(msg).digest()


@dataclass(frozen=True, slots=True)
class SignedBatch:
    header: BatchHeader
    msg: bytes
    sig: bytes
    batch_hash: bytes
    leaves: tuple[bytes, ...]


def sign_batch(
    key: OperatorKey,
    *,
    seq: int,
    prev: bytes,
    window_start_ms: int,
    window_end_ms: int,
    signed_at_ms: int,
    summaries: Sequence[Summary],
    schema: int,
    privacy: Privacy,
    stats: Stats,
    gap: bool = False,
    next_kid: str | None = None,
) -> SignedBatch:
    """Build, canonicalise and sign one batch (DESIGN §5.3).

    ``gap`` marks a batch that spans downtime, ``next_kid`` names the next key on the last batch
    under this one. Raises ValueError for a header that verify_batch would reject as malformed,
    and NonCanonicalError for values RFC 8785 cannot represent.
    """
    leaves = tuple(leaf_bytes(key.origin, seq, i, s) for i, s in enumerate(summaries))
    header: BatchHeader = {
        "v": 1,
        "type": "telemetry-batch",
        "origin": key.origin,
        "kid": key.kid,
        "seq": seq,
        "window_start_ms": window_start_ms,
        "window_end_ms": window_end_ms,
        "signed_at_ms": signed_at_ms,
        "n": len(leaves),
        "root": b64encode(merkle.root(leaves)),
        "prev": b64encode(prev),
        "schema": schema,
        "privacy": privacy.copy(),
        "stats": stats.copy(),
    }
    if gap:
        header["gap"] = True
    if next_kid is not None:
        header["next_kid"] = next_kid
    problem = _header_problem(header)
    if problem:
        raise ValueError(problem)
    msg = batch_message(header)
    return SignedBatch(
        header=header, msg=msg, sig=key.sign(msg), batch_hash=batch_hash(msg), leaves=leaves
    )


def verify_batch(vkey: VerifierKey, msg: bytes, sig: bytes) -> dict[str, Any]:
    """Check a signed batch and return its header, parsed only from the verified bytes.

    Checks, in order: the telemetry-batch/v1 prefix (MalformedBatchError), the signature
    (BadSignatureError), RFC 8785 form of the header (NonCanonicalError), and the types of the
    pinned header fields and that origin and kid are the key's (MalformedBatchError). Semantic
    checks (chain, windows, counts) are the auditor's.
    """
    if not msg.startswith(BATCH_MSG_PREFIX):
        raise MalformedBatchError("message does not start with the telemetry-batch/v1 prefix")
    if not vkey.verify(msg, sig):
        raise BadSignatureError(f"batch signature does not verify under {vkey.origin}+{vkey.kid}")
    body = msg[len(BATCH_MSG_PREFIX) :]
    try:
        header = strict_loads(body)
    except (ValueError, RecursionError) as e:
        raise MalformedBatchError(f"batch header is not JSON: {e}") from e
    if canonical_json(header) != body:
        raise NonCanonicalError("batch header is not in RFC 8785 canonical form")
    if not isinstance(header, dict):
        raise MalformedBatchError("batch header is not a JSON object")
    problem = _header_problem(header)
    if problem:
        raise MalformedBatchError(problem)
    if header["origin"] != vkey.origin or header["kid"] != vkey.kid:
        raise MalformedBatchError(
            f"header names {header['origin']}+{header['kid']} but was signed by "
            f"{vkey.origin}+{vkey.kid}"
        )
    return header


def _is_hash(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return len(b64decode(value)) == merkle.HASH_SIZE
    except ValueError:
        return False


def _header_problem(header: Mapping[str, Any]) -> str | None:
    """What makes ``header`` not a telemetry-batch/v1 header, or None if nothing does."""
    missing = _PINNED_FIELDS.difference(header)
    if missing:
        return f"batch header lacks {sorted(missing)}"
    if header["v"] != 1 or not is_int(header["v"]):
        return f"unsupported batch header version {header['v']!r}"
    if header["type"] != "telemetry-batch":
        return f"header type is {header['type']!r}, not 'telemetry-batch'"
    if not isinstance(header["origin"], str) or not isinstance(header["kid"], str):
        return "origin and kid must be strings"
    try:
        validate_origin(header["origin"])
    except InvalidOriginError as e:
        return str(e)
    for name in _INT_FIELDS:
        if not is_int(header[name]) or header[name] < 0:
            return f"{name} must be a non-negative integer, got {header[name]!r}"
    for name in _HASH_FIELDS:
        if not _is_hash(header[name]):
            return f"{name} must be a base64 SHA-256 hash, got {header[name]!r}"
    if not isinstance(header["privacy"], dict):
        return "privacy must be an object"
    stats = header["stats"]
    if not isinstance(stats, dict) or not all(is_int(v) and v >= 0 for v in stats.values()):
        return "stats must be an object of non-negative integer counts"
    return None
