"""Checkpoints: c2sp.org/tlog-checkpoint bodies in c2sp.org/signed-note notes."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import nacl.signing
import pytest

from relay.attest import (
    BadCheckpointSignatureError,
    Checkpoint,
    CheckpointError,
    CheckpointNotSignedError,
    CompactRange,
    MalformedCheckpointError,
    OperatorKey,
    VerifierKey,
    checkpoint_body,
    consistency_proof,
    leaf_hash,
    open_checkpoint,
    root,
    sign_batch,
    sign_checkpoint,
    verify_consistency,
)

# The generic signed-note layer is private; the Go known-answer test needs it directly.
from relay.attest.checkpoint import _open_note, _sign_note

# golang.org/x/mod/sumdb/note package documentation: key pair, text and the exact signed note.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
GO_NOTE = f"{GO_TEXT}\n\u2014 PeterNeumann {GO_SIGNATURE}\n"

SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
ORIGIN = "relay.test/operator-1"
ROOT = bytes(range(32))


@pytest.fixture
def key() -> OperatorKey:
    return OperatorKey(ORIGIN, nacl.signing.SigningKey(SEED))


@pytest.fixture
def go_key(tmp_path: Path) -> OperatorKey:
    path = tmp_path / "go.key"
    path.write_text(GO_SKEY)
    path.chmod(0o600)
    return OperatorKey.load(path)


def signature_line(key: OperatorKey, text: str) -> str:
    return _sign_note(key, text)[len(text) + 1 :]


# --- the signed-note layer against the Go reference -----------------------------------------


def test_signed_note_matches_go_byte_for_byte(go_key: OperatorKey) -> None:
    assert _sign_note(go_key, GO_TEXT) == GO_NOTE


def test_go_note_opens() -> None:
    assert _open_note(GO_NOTE, VerifierKey.parse(GO_VKEY)) == GO_TEXT


def test_go_note_with_altered_text_fails() -> None:
    with pytest.raises(BadCheckpointSignatureError):
        _open_note(GO_NOTE.replace("answer", "answers"), VerifierKey.parse(GO_VKEY))


# --- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_body_format() -> None:
    expected_root = base64.b64encode(ROOT).decode()
    assert checkpoint_body(ORIGIN, 42, ROOT) == f"{ORIGIN}\n42\n{expected_root}\n"
    assert checkpoint_body(ORIGIN, 0, ROOT).split("\n")[1] == "0"


@pytest.mark.parametrize(("size", "root_hash"), [(-1, ROOT), (2**63, ROOT), (1, b"short")])
def test_checkpoint_body_refuses_bad_values(size: int, root_hash: bytes) -> None:
    with pytest.raises(ValueError):
        checkpoint_body(ORIGIN, size, root_hash)


def test_round_trip(key: OperatorKey) -> None:
    note = sign_checkpoint(key, 42, ROOT)
    body, sig_line = note.split("\n\n")
    assert body + "\n" == checkpoint_body(ORIGIN, 42, ROOT)
    assert sig_line.startswith("\u2014 " + ORIGIN + " ")
    blob = base64.b64decode(sig_line.split(" ")[2])
    assert blob[:4] == bytes.fromhex(key.kid)
    assert len(blob) == 4 + 64
    checkpoint = open_checkpoint(note, VerifierKey.parse(key.verifier.encode()))
    assert checkpoint == Checkpoint(origin=ORIGIN, size=42, root=ROOT, text=note)


def test_empty_tree_checkpoint(key: OperatorKey) -> None:
    note = sign_checkpoint(key, 0, root([]))
    assert open_checkpoint(note, key.verifier).size == 0


@pytest.mark.parametrize(
    "tamper",
    [
        lambda note: note.replace("\n42\n", "\n43\n"),
        lambda note: note.replace(
            base64.b64encode(ROOT).decode(), base64.b64encode(ROOT[::-1]).decode()
        ),
        lambda note: note.replace(ORIGIN + "\n", ORIGIN + "x\n", 1),
    ],
)
def test_tampered_body_is_rejected(key: OperatorKey, tamper: Callable[[str], str]) -> None:
    note = sign_checkpoint(key, 42, ROOT)
    with pytest.raises(BadCheckpointSignatureError):
        open_checkpoint(tamper(note), key.verifier)


def test_tampered_signature_is_rejected(key: OperatorKey) -> None:
    note = sign_checkpoint(key, 42, ROOT)
    body, sig_line = note.split("\n\n")
    prefix, encoded = sig_line.rstrip("\n").rsplit(" ", 1)
    blob = bytearray(base64.b64decode(encoded))
    for i in range(4, len(blob)):
        blob[i] ^= 1
        bad = f"{body}\n\n{prefix} {base64.b64encode(bytes(blob)).decode()}\n"
        blob[i] ^= 1
        with pytest.raises(BadCheckpointSignatureError):
            open_checkpoint(bad, key.verifier)


def test_signature_by_another_key_is_rejected(key: OperatorKey) -> None:
    for other in (OperatorKey.generate(ORIGIN), OperatorKey.generate("relay.test/other")):
        note = sign_checkpoint(other, 42, ROOT)
        with pytest.raises(CheckpointNotSignedError):
            open_checkpoint(note, key.verifier)


def test_forged_signature_under_the_right_name_and_kid_is_rejected(key: OperatorKey) -> None:
    text = checkpoint_body(ORIGIN, 42, ROOT)
    forged = base64.b64encode(bytes.fromhex(key.kid) + bytes(64)).decode()
    with pytest.raises(BadCheckpointSignatureError):
        open_checkpoint(f"{text}\n\u2014 {ORIGIN} {forged}\n", key.verifier)


def test_unknown_signatures_are_ignored(key: OperatorKey) -> None:
    text = checkpoint_body(ORIGIN, 42, ROOT)
    ours = signature_line(key, text)
    witness = signature_line(OperatorKey.generate("witness.example/w1"), text)
    # Same name, other key: the spec says to ignore it as unknown, not to fail.
    rotated = signature_line(OperatorKey.generate(ORIGIN), text)
    # Another algorithm's longer signature from an unknown key.
    pq = f"\u2014 pq.example {base64.b64encode(b'1234' + bytes(2420)).decode()}\n"
    for lines in ([ours, witness], [witness, ours], [rotated, pq, ours]):
        note = text + "\n" + "".join(lines)
        assert open_checkpoint(note, key.verifier).size == 42


def test_a_bad_signature_from_the_key_fails_even_next_to_a_good_one(key: OperatorKey) -> None:
    text = checkpoint_body(ORIGIN, 42, ROOT)
    forged = base64.b64encode(bytes.fromhex(key.kid) + bytes(64)).decode()
    note = f"{text}\n{signature_line(key, text)}\u2014 {ORIGIN} {forged}\n"
    with pytest.raises(BadCheckpointSignatureError):
        open_checkpoint(note, key.verifier)


B64_ROOT = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"relay.test/other\n1\n{B64_ROOT}\n", "origin"),
        (f"{ORIGIN}\n01\n{B64_ROOT}\n", "leading zeros"),
        (f"{ORIGIN}\n-1\n{B64_ROOT}\n", "decimal"),
        (f"{ORIGIN}\n+1\n{B64_ROOT}\n", "decimal"),
        (f"{ORIGIN}\n\uff11\n{B64_ROOT}\n", "decimal"),
        (f"{ORIGIN}\n{2**63}\n{B64_ROOT}\n", "decimal"),
        (f"{ORIGIN}\n{'9' * 5000}\n{B64_ROOT}\n", "decimal"),
        (f"{ORIGIN}\n1\nAAAA\n", "32 bytes"),
        (f"{ORIGIN}\n1\n{B64_ROOT[:-1]}\n", "base64"),
        (f"{ORIGIN}\n1\n{B64_ROOT}\nextension\n", "3 lines"),
        (f"{ORIGIN}\n1\n", "3 lines"),
    ],
)
def test_malformed_bodies(key: OperatorKey, body: str, message: str) -> None:
    with pytest.raises(MalformedCheckpointError, match=message):
        open_checkpoint(_sign_note(key, body), key.verifier)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda n: n.replace("\n\n", "\n"), "blank line"),
        (lambda n: n[:-1], "final newline"),
        (lambda n: n + "\n", "signature line"),
        (lambda n: n.replace("\u2014 ", "- "), "em dash"),
        (lambda n: n.replace("\u2014 ", "\u2014  "), "key name"),
        (lambda n: n.replace("=\n", "\n"), "base64"),
        (lambda n: n.replace("\n42\n", "\n4\t2\n"), "control"),
        (lambda n: n.replace("\n42\n", "\n42\r\n"), "control"),
        (lambda n: n.replace("\n42\n", "\n42\ud800\n"), "UTF-8"),
    ],
)
def test_malformed_notes(key: OperatorKey, mangle: Callable[[str], str], message: str) -> None:
    with pytest.raises(MalformedCheckpointError, match=message):
        open_checkpoint(mangle(sign_checkpoint(key, 42, ROOT)), key.verifier)


def test_unsigned_text_is_rejected(key: OperatorKey) -> None:
    with pytest.raises(CheckpointError):
        open_checkpoint(checkpoint_body(ORIGIN, 42, ROOT), key.verifier)


def test_too_many_signatures(key: OperatorKey) -> None:
    note = sign_checkpoint(key, 42, ROOT)
    extra = signature_line(OperatorKey.generate("w.example"), checkpoint_body(ORIGIN, 42, ROOT))
    with pytest.raises(MalformedCheckpointError, match="more than"):
        open_checkpoint(note + extra * 100, key.verifier)


# --- the log of batches ---------------------------------------------------------------------


def test_checkpoints_over_batch_messages_prove_append_only(key: OperatorKey) -> None:
    compact = CompactRange()
    msgs: list[bytes] = []
    notes: list[str] = []
    prev = bytes(32)
    for seq in range(5):
        batch = sign_batch(
            key,
            seq=seq,
            prev=prev,
            window_start_ms=60_000 * seq,
            window_end_ms=60_000 * (seq + 1),
            signed_at_ms=60_000 * (seq + 1) + 5,
            summaries=[],
            schema=1,
            privacy={"mode": "aggregate"},
            stats={"accepted": 0},
        )
        prev = batch.batch_hash
        msgs.append(batch.msg)
        compact.append(leaf_hash(batch.msg))
        notes.append(sign_checkpoint(key, compact.size, compact.root()))

    old = open_checkpoint(notes[1], key.verifier)
    new = open_checkpoint(notes[4], key.verifier)
    assert (old.size, new.size) == (2, 5)
    assert new.root == root(msgs)
    proof = consistency_proof([leaf_hash(m) for m in msgs], old.size)
    assert verify_consistency(old.size, new.size, old.root, new.root, proof)
