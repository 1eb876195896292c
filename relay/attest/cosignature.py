"""Witness cosignatures on checkpoints: c2sp.org/tlog-cosignature, the Ed25519 type (v1).

A cosignature is one more c2sp.org/signed-note signature line on a checkpoint note, by a witness
that checked the checkpoint is consistent with every earlier one it saw of that origin. Per
tlog-cosignature §"Format" and §"Ed25519 signed message":

- key ID: SHA-256(<name> ‖ "\\n" ‖ 0x04 ‖ 32-byte public key)[:4] (0x04, not the 0x01 of
  ordinary Ed25519 note signatures, so a cosignature never verifies as a log signature);
- signature line: ``— <name> base64(key ID ‖ timestamped_signature)``, where
  timestamped_signature is the u64 big-endian POSIX timestamp followed by the 64-byte signature;
- signed message: ``cosignature/v1\\n`` ‖ ``time <timestamp>\\n`` ‖ the whole checkpoint body
  (its final newline included, no signature lines).
- verifier key (vkey): ``<name>+<key ID hex>+base64(0x04 ‖ public key)``.

The witness's private key file is an ordinary signed-note key file (relay/attest/keys.py): the
seed is the same, only the key ID and the signed message differ.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from relay.attest.checkpoint import SIG_LINE_PREFIX, split_note
from relay.attest.errors import InvalidOriginError, InvalidVerifierKeyError
from relay.attest.keys import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    OperatorKey,
    ed25519_verifies,
    parse_note_key,
    validate_origin,
)
from relay.core.b64 import b64encode

__all__ = ["ALG_COSIGNATURE_V1", "CosignerKey", "cosign", "cosignature_message", "cosigned_at"]

#: Signature type byte of Ed25519 cosignatures (tlog-cosignature §"Format").
ALG_COSIGNATURE_V1 = 0x04
_HEADER = "cosignature/v1\n"
_MAX_TIMESTAMP = (1 << 63) - 1
_TIMESTAMP_SIZE = 8


def _key_id(name: str, public_key: bytes) -> bytes:
    material = name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public_key
    return hashlib.sha256(material).digest()[:4]


def cosignature_message(body: str, timestamp: int) -> bytes:
    """What a v1 cosignature signs: header line, time line, then the checkpoint body."""
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise ValueError(f"timestamp {timestamp} is outside 0..2^63-1")
    return f"{_HEADER}time {timestamp}\n{body}".encode()


@dataclass(frozen=True, slots=True)
class CosignerKey:
    """A witness's public key, as auditors pass it to `relay verify --witness-key`."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        try:
            validate_origin(self.name)
        except InvalidOriginError as e:
            raise InvalidVerifierKeyError(f"invalid witness name: {e}") from e
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise InvalidVerifierKeyError(
                f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(self.public_key)}"
            )

    @property
    def key_id(self) -> bytes:
        return _key_id(self.name, self.public_key)

    def encode(self) -> str:
        return (
            f"{self.name}+{self.key_id.hex()}+"
            f"{b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public_key)}"
        )

    @classmethod
    def parse(cls, s: str) -> CosignerKey:
        """Parse ``<name>+<key ID>+base64(0x04 ‖ key)``; InvalidVerifierKeyError if wrong."""
        name, kid, public_key = parse_note_key(
            s,
            form="a witness key has the form <name>+<kid>+<base64 key>",
            type_byte=ALG_COSIGNATURE_V1,
            type_error="a witness key's material must start with the cosignature/v1 type byte 0x04",
        )
        key = cls(name, public_key)
        if kid != key.key_id.hex():
            raise InvalidVerifierKeyError(
                f"key id {kid!r} does not match the key (it is {key.key_id.hex()!r})"
            )
        return key

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """True iff ``sig`` is a valid Ed25519 signature of ``msg``; never raises for bad ones."""
        return ed25519_verifies(self.public_key, msg, sig)

    @classmethod
    def of(cls, key: OperatorKey) -> CosignerKey:
        """The cosigner key of a signing key (its origin is the witness's name)."""
        return cls(key.origin, key.verifier.public_key)


def cosign(key: OperatorKey, note: str, timestamp: int) -> str:
    """``note`` with one more signature line: ``key``'s v1 cosignature at ``timestamp``.

    The caller has verified the note (the log's signature, consistency); this only signs its
    body. Raises MalformedCheckpointError if ``note`` is not a signed note.
    """
    body, _ = split_note(note)
    signature = key.sign(cosignature_message(body, timestamp))
    cosigner = CosignerKey.of(key)
    blob = cosigner.key_id + timestamp.to_bytes(_TIMESTAMP_SIZE, "big") + signature
    return f"{note}{SIG_LINE_PREFIX}{cosigner.name} {b64encode(blob)}\n"


def cosigned_at(note: str, cosigner: CosignerKey) -> int | None:
    """The timestamp of a valid v1 cosignature by ``cosigner`` on ``note``, else None.

    Lines of other keys are ignored, as signed-note prescribes; a line of this key that does not
    verify counts as no cosignature. Raises MalformedCheckpointError if ``note`` is not a note.
    """
    body, signatures = split_note(note)
    key_id = cosigner.key_id
    for name, blob in signatures:
        if name != cosigner.name or blob[:4] != key_id:
            continue
        if len(blob) != 4 + _TIMESTAMP_SIZE + SIGNATURE_SIZE:
            continue
        timestamp = int.from_bytes(blob[4 : 4 + _TIMESTAMP_SIZE], "big")
        if timestamp > _MAX_TIMESTAMP:
            continue
        if cosigner.verify(cosignature_message(body, timestamp), blob[4 + _TIMESTAMP_SIZE :]):
            return timestamp
    return None
