"""Log checkpoints: c2sp.org/tlog-checkpoint bodies in c2sp.org/signed-note notes.

Each origin keeps a Merkle tree over all its batch ``msg``s (DESIGN §5.5); after each batch it
signs ``<origin>\\n<size>\\n<base64 root>\\n``. An auditor holding an older checkpoint can then ask
for a consistency proof and detect truncation or a fork.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relay.attest.errors import (
    BadCheckpointSignatureError,
    CheckpointNotSignedError,
    MalformedCheckpointError,
)
from relay.attest.keys import OperatorKey, VerifierKey
from relay.attest.merkle import HASH_SIZE
from relay.core.b64 import b64decode, b64encode

__all__ = [
    "SIG_LINE_PREFIX",
    "Checkpoint",
    "checkpoint_body",
    "open_checkpoint",
    "sign_checkpoint",
    "split_note",
]

SIG_LINE_PREFIX = "\u2014 "  # em dash, space
# c2sp.org/signed-note: verifiers must accept at least 16 signatures and should cap the count.
_MAX_SIGNATURES = 100
# Note text is a handful of short lines and signatures are ~100 bytes each (PQ ones up to ~5 kB).
_MAX_NOTE_CHARS = 1 << 20
_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
# Sizes are stored as SQLite / Elasticsearch signed 64-bit integers.
_MAX_SIZE = (1 << 63) - 1
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f]")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified checkpoint: the tree of ``origin``'s batches had ``size`` leaves and ``root``."""

    origin: str
    size: int
    root: bytes
    text: str  # the whole signed note, to store and to hand to auditors unchanged


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    """The tlog-checkpoint note text: origin, decimal size, base64 root, each ending in newline."""
    if not 0 <= size <= _MAX_SIZE:
        raise ValueError(f"tree size {size} is outside 0..2^63-1")
    if len(root) != HASH_SIZE:
        raise ValueError(f"root must be {HASH_SIZE} bytes, got {len(root)}")
    return f"{origin}\n{size}\n{b64encode(root)}\n"


def sign_checkpoint(key: OperatorKey, size: int, root: bytes) -> str:
    """The signed note of the checkpoint (``key.origin``, ``size``, ``root``)."""
    return _sign_note(key, checkpoint_body(key.origin, size, root))


def open_checkpoint(text: str, vkey: VerifierKey) -> Checkpoint:
    """Verify a checkpoint note with ``vkey`` and parse its body (c2sp.org/tlog-checkpoint).

    Signatures from other keys (witnesses, a rotated key) are ignored. Raises
    CheckpointNotSignedError without a signature by ``vkey``, BadCheckpointSignatureError if one
    does not verify, and MalformedCheckpointError for anything not in the C2SP formats, including
    an origin line that is not ``vkey.origin`` and extension lines (this log writes none).
    """
    lines = _open_note(text, vkey).split("\n")
    # The text ends in a newline, so a three-line body splits into four with an empty last one.
    if len(lines) != 4 or lines[3]:
        raise MalformedCheckpointError(
            f"checkpoint body must be exactly 3 lines (origin, size, root), got {len(lines) - 1}"
        )
    origin, size_text, root_text = lines[:3]
    if origin != vkey.origin:
        raise MalformedCheckpointError(
            f"checkpoint origin {origin!r} is not the key's origin {vkey.origin!r}"
        )
    if not _SIZE_RE.fullmatch(size_text) or len(size_text) > 19 or int(size_text) > _MAX_SIZE:
        raise MalformedCheckpointError(
            f"tree size must be a decimal integer below 2^63 without leading zeros, "
            f"got {size_text[:40]!r}"
        )
    try:
        root = b64decode(root_text)
    except ValueError as e:
        raise MalformedCheckpointError(f"root hash is not valid base64: {e}") from e
    if len(root) != HASH_SIZE:
        raise MalformedCheckpointError(f"root hash must be {HASH_SIZE} bytes, got {len(root)}")
    return Checkpoint(origin=origin, size=int(size_text), root=root, text=text)


def _sign_note(key: OperatorKey, text: str) -> str:
    """A c2sp.org/signed-note note of ``text`` with one Ed25519 signature line by ``key``."""
    signature = key.sign(text.encode())
    blob = b64encode(bytes.fromhex(key.kid) + signature)
    return f"{text}\n{SIG_LINE_PREFIX}{key.origin} {blob}\n"


def _open_note(note: str, vkey: VerifierKey) -> str:
    """The text of a c2sp.org/signed-note note, once ``vkey``'s signature on it has verified.

    Follows the spec's rules: the text ends at the last blank line; every signature line must be
    well formed; lines whose (key name, key ID) is not ``vkey``'s are ignored; every line that is
    ``vkey``'s must verify, and at least one must be present.
    """
    text, signatures = split_note(note)
    message = text.encode()
    key_id = bytes.fromhex(vkey.kid)
    verified = False
    for name, blob in signatures:
        if name != vkey.origin or blob[:4] != key_id:
            continue
        if not vkey.verify(message, blob[4:]):
            raise BadCheckpointSignatureError(
                f"signature by {vkey.origin}+{vkey.kid} does not verify"
            )
        verified = True
    if not verified:
        raise CheckpointNotSignedError(f"note is not signed by {vkey.origin}+{vkey.kid}")
    return text


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """(text, [(key name, key ID ‖ signature), ...]) of a c2sp.org/signed-note note.

    The text ends at the last blank line (its final newline included); every line after it must
    be a well-formed signature line. Nothing is verified here. Raises MalformedCheckpointError.
    """
    if len(note) > _MAX_NOTE_CHARS:
        raise MalformedCheckpointError("note is too large")
    if _CONTROL_RE.search(note):
        raise MalformedCheckpointError("note contains control characters other than newline")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedCheckpointError("note is not valid UTF-8") from None
    split = note.rfind("\n\n")
    if split < 0:
        raise MalformedCheckpointError("note has no blank line before its signatures")
    text, signatures = note[: split + 1], note[split + 2 :]
    if not signatures.endswith("\n"):
        raise MalformedCheckpointError("note has no signature lines, or lacks the final newline")
    lines = signatures[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise MalformedCheckpointError(f"note has more than {_MAX_SIGNATURES} signatures")
    return text, [_parse_signature_line(line) for line in lines]


def _parse_signature_line(line: str) -> tuple[str, bytes]:
    """(key name, key ID ‖ signature) of ``— <name> <base64>`` (c2sp.org/signed-note)."""
    if not line.startswith(SIG_LINE_PREFIX):
        raise MalformedCheckpointError("signature line does not start with an em dash and space")
    name, _, encoded = line[len(SIG_LINE_PREFIX) :].partition(" ")
    if not name or "+" in name or any(c.isspace() for c in name):
        raise MalformedCheckpointError(f"invalid key name in signature line: {name!r}")
    try:
        blob = b64decode(encoded)
    except ValueError as e:
        raise MalformedCheckpointError(f"signature is not valid base64: {e}") from e
    if len(blob) < 5:
        raise MalformedCheckpointError("signature is shorter than a key ID and one byte")
    return name, blob
