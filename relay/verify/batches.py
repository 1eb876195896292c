"""Opening one batch document: key, signature, canonical form, searchable copies, timestamps.

DESIGN §5.3 (signed bytes, batch hash), §5.4 (keys and their seq ranges), §5.6 (what is trusted:
only the header parsed from the verified `signed` bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.attest.batch import batch_hash, verify_batch
from relay.attest.errors import BadSignatureError, MalformedBatchError, NonCanonicalError
from relay.attest.keys import VerifierKey
from relay.core.b64 import b64decode, b64encode
from relay.core.document import Document
from relay.verify.findings import Code
from relay.verify.keyring import Keyring
from relay.verify.leaves import same_json

__all__ = ["FUTURE_TOLERANCE_MS", "Emit", "OpenedBatch", "open_batch"]

#: How far `signed_at_ms` may be ahead of the auditor's clock: clock skew between two machines.
FUTURE_TOLERANCE_MS = 5 * 60 * 1000
# Fields of a batch document that are not copies of header fields.
_ENVELOPE = frozenset({"signed", "sig", "batch_hash", "checkpoint"})
_MISSING = object()

#: Report a finding about the current (origin, seq): code, message, document id.
Emit = Callable[[Code, str, str | None], None]


@dataclass(frozen=True, slots=True)
class OpenedBatch:
    """A batch document's signed bytes, and its header if (and only if) the signature verified."""

    doc_id: str
    msg: bytes
    batch_hash: bytes
    header: dict[str, Any] | None
    vkey: VerifierKey | None
    checkpoint: object  # the stored note, checked against the log by the caller


def open_batch(
    document: Document, origin: str, seq: int, keyring: Keyring, now_ms: int, emit: Emit
) -> OpenedBatch | None:
    """Verify a batch document filed under (``origin``, ``seq``), reporting through ``emit``.

    Returns None if it has no signed bytes at all, or if they verify but name another seq (it is
    then not a batch of this seq); an OpenedBatch without header if the signature does not verify
    (its bytes still link the hash chain and the log); a full one otherwise.
    """
    source, doc_id = document.source, document.id
    signed = source.get("signed")
    if not isinstance(signed, str):
        emit(Code.BAD_SIGNATURE, "batch document has no signed message", doc_id)
        return None
    try:
        msg = signed.encode("utf-8")
    except UnicodeEncodeError:
        emit(Code.NON_CANONICAL, "signed message is not valid Unicode", doc_id)
        return None
    unverified = OpenedBatch(doc_id, msg, batch_hash(msg), None, None, source.get("checkpoint"))
    kid = source.get("kid")
    vkey = keyring.key(origin, kid) if isinstance(kid, str) else None
    if vkey is None:
        emit(Code.UNKNOWN_KEY, f"signed by key {origin}+{kid}, which is not registered", doc_id)
        return unverified
    header = _verify(vkey, msg, source.get("sig"), doc_id, emit)
    if header is None:
        return unverified
    if header["seq"] != seq:
        emit(
            Code.LEAF_MISMATCH, f"filed as seq {seq}, but the signed seq is {header['seq']}", doc_id
        )
        return None
    if not keyring.valid_for(vkey, seq):
        emit(
            Code.KEY_NOT_VALID_FOR_SEQ,
            f"signed by {origin}+{vkey.kid}, which the registry allows for seqs "
            f"{keyring.validity(vkey)} only",
            doc_id,
        )
    _check_copies(source, header, unverified.batch_hash, doc_id, emit)
    _check_timestamps(header, now_ms, doc_id, emit)
    return OpenedBatch(doc_id, msg, unverified.batch_hash, header, vkey, unverified.checkpoint)


def _verify(
    vkey: VerifierKey, msg: bytes, sig_text: object, doc_id: str, emit: Emit
) -> dict[str, Any] | None:
    if not isinstance(sig_text, str):
        emit(Code.BAD_SIGNATURE, "batch document has no signature", doc_id)
        return None
    try:
        sig = b64decode(sig_text)
    except ValueError:
        emit(Code.BAD_SIGNATURE, "signature is not base64", doc_id)
        return None
    try:
        return verify_batch(vkey, msg, sig)
    except BadSignatureError as exc:
        emit(Code.BAD_SIGNATURE, str(exc), doc_id)
    except NonCanonicalError as exc:
        emit(Code.NON_CANONICAL, str(exc), doc_id)
    except MalformedBatchError as exc:
        # Signed, but not the canonical bytes of a telemetry-batch/v1 header.
        emit(Code.NON_CANONICAL, f"signed message is not a valid batch header: {exc}", doc_id)
    return None


def _check_copies(
    source: Mapping[str, Any], header: dict[str, Any], digest: bytes, doc_id: str, emit: Emit
) -> None:
    """The searchable fields must be exact copies of the signed header (DESIGN §2 documents)."""
    differing = sorted(
        key
        for key in (source.keys() | header.keys()) - _ENVELOPE
        if not same_json(source.get(key, _MISSING), header.get(key, _MISSING))
    )
    if source.get("batch_hash") != b64encode(digest):
        differing.append("batch_hash")
    if differing:
        emit(Code.LEAF_MISMATCH, f"fields {differing} differ from the signed header", doc_id)


def _check_timestamps(header: dict[str, Any], now_ms: int, doc_id: str, emit: Emit) -> None:
    signed_at, window_end = header["signed_at_ms"], header["window_end_ms"]
    if signed_at > now_ms + FUTURE_TOLERANCE_MS:
        emit(
            Code.FUTURE_TIMESTAMP,
            f"signed_at_ms {signed_at} is {(signed_at - now_ms) // 1000} s ahead of this clock",
            doc_id,
        )
    if window_end > signed_at:
        emit(
            Code.FUTURE_TIMESTAMP,
            f"window ends at {window_end}, after the batch was signed at {signed_at}",
            doc_id,
        )
