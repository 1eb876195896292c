"""Witness cosignatures in the c2sp.org/tlog-cosignature v1 (Ed25519) format.

The format is checked from the spec's text, byte by byte, with PyNaCl directly rather than with
the module under test: key ID = SHA-256(name ‖ "\\n" ‖ 0x04 ‖ public key)[:4], signature line
`— <name> base64(key ID ‖ u64 big-endian timestamp ‖ Ed25519 signature)`, signed message
`cosignature/v1\\ntime <timestamp>\\n` ‖ checkpoint body.
"""

from __future__ import annotations

import base64
import hashlib

import nacl.signing
import pytest

from relay.attest.checkpoint import open_checkpoint, sign_checkpoint
from relay.attest.cosignature import CosignerKey, cosign, cosigned_at
from relay.attest.errors import CheckpointNotSignedError, InvalidVerifierKeyError
from relay.attest.keys import OperatorKey
from relay.attest.merkle import root

LOG = OperatorKey.generate("example.com/behind-the-sofa")
WITNESS = OperatorKey.generate("witness.example.com/w1")
# The time of the spec's example message.
TIMESTAMP = 1679315147


def _note() -> str:
    return sign_checkpoint(LOG, 3, root([b"a", b"b", b"c"]))


def test_cosignature_bytes_follow_the_spec() -> None:
    note = _note()
    cosigned = cosign(WITNESS, note, TIMESTAMP)
    assert cosigned.startswith(note)  # one line appended, nothing else touched
    line = cosigned[len(note) :]
    assert line.endswith("\n") and line.count("\n") == 1
    prefix = "\u2014 witness.example.com/w1 "
    assert line.startswith(prefix)
    blob = base64.b64decode(line[len(prefix) : -1], validate=True)
    public = bytes(WITNESS.verifier.public_key)
    expected_id = hashlib.sha256(b"witness.example.com/w1\n\x04" + public).digest()[:4]
    assert blob[:4] == expected_id
    assert int.from_bytes(blob[4:12], "big") == TIMESTAMP
    body = note[: note.index("\n\n") + 1]
    message = f"cosignature/v1\ntime {TIMESTAMP}\n{body}".encode()
    nacl.signing.VerifyKey(public).verify(message, blob[12:])  # raises if it does not verify
    assert len(blob) == 4 + 8 + 64


def test_cosigned_note_still_opens_with_the_log_key_and_the_cosignature_verifies() -> None:
    cosigned = cosign(WITNESS, _note(), TIMESTAMP)
    assert open_checkpoint(cosigned, LOG.verifier).size == 3
    assert cosigned_at(cosigned, CosignerKey.of(WITNESS)) == TIMESTAMP


def test_a_cosignature_is_not_a_note_signature_of_the_same_key() -> None:
    # Key type 0x04 gives another key ID than 0x01, so the line is not taken as a log signature.
    cosigned = cosign(WITNESS, sign_checkpoint(WITNESS, 1, root([b"x"])), TIMESTAMP)
    only_cosignature = cosigned.replace(cosigned.split("\n")[4] + "\n", "")
    with pytest.raises(CheckpointNotSignedError):
        open_checkpoint(only_cosignature, WITNESS.verifier)


def test_missing_wrong_or_tampered_cosignatures_do_not_count() -> None:
    note = _note()
    witness = CosignerKey.of(WITNESS)
    assert cosigned_at(note, witness) is None
    other = OperatorKey.generate("witness.example.com/w1")  # same name, another key
    assert cosigned_at(cosign(other, note, TIMESTAMP), witness) is None
    cosigned = cosign(WITNESS, note, TIMESTAMP)
    # The body says another size: the log signature would fail too, but the cosignature alone
    # must not verify over a different body.
    tampered = cosigned.replace("\n3\n", "\n4\n", 1)
    assert cosigned_at(tampered, witness) is None
    # A different timestamp in the blob breaks the signature, which covers the time line.
    line = cosigned.split("\n")[-2]
    name, encoded = line.rsplit(" ", 1)
    blob = bytearray(base64.b64decode(encoded))
    blob[11] ^= 1
    moved = cosigned.replace(line, f"{name} {base64.b64encode(bytes(blob)).decode()}")
    assert cosigned_at(moved, witness) is None


def test_cosigner_key_strings() -> None:
    witness = CosignerKey.of(WITNESS)
    encoded = witness.encode()
    name, kid, material = encoded.split("+", 2)
    assert name == "witness.example.com/w1" and kid == witness.key_id.hex()
    assert base64.b64decode(material)[0] == 0x04
    assert CosignerKey.parse(encoded) == witness
    with pytest.raises(InvalidVerifierKeyError, match="0x04"):
        CosignerKey.parse(WITNESS.verifier.encode())  # an ordinary 0x01 note key
    with pytest.raises(InvalidVerifierKeyError, match="does not match"):
        CosignerKey.parse(f"{name}+00000000+{material}")
    with pytest.raises(InvalidVerifierKeyError):
        CosignerKey.parse("no-plus-signs")
