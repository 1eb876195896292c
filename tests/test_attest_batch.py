"""Signed telemetry batches (DESIGN §5.2–5.3): leaves, header, signing and verification."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from typing import Any

import nacl.signing
import pytest

from relay.attest import (
    BATCH_MSG_PREFIX,
    ZERO_HASH,
    AttestError,
    BadSignatureError,
    MalformedBatchError,
    NonCanonicalError,
    OperatorKey,
    SignedBatch,
    VerifierKey,
    batch_hash,
    batch_message,
    canonical_json,
    leaf_bytes,
    merkle,
    sign_batch,
    verify_batch,
)

# RFC 8032 §7.1 TEST 1 seed, so every signature below is reproducible.
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
ORIGIN = "relay.test/operator-1"
KID = "f7780683"

SUMMARY: dict[str, Any] = {
    "region": "eu-west",
    "node": {"role": "storage", "id": "12"},
    "requests": 3,
    "outcomes": {"ok": 2, "timeout": 1},
    "signals": {},
    "ttfb_ms_p50": 120.5,
}


@pytest.fixture
def key() -> OperatorKey:
    return OperatorKey(ORIGIN, nacl.signing.SigningKey(SEED))


def make_batch(key: OperatorKey, **overrides: Any) -> SignedBatch:
    args: dict[str, Any] = {
        "seq": 0,
        "prev": ZERO_HASH,
        "window_start_ms": 1_700_000_000_000,
        "window_end_ms": 1_700_000_060_000,
        "signed_at_ms": 1_700_000_061_000,
        "summaries": [],
        "schema": 1,
        "privacy": {"mode": "aggregate", "k": 10},
        "stats": {"accepted": 0, "rejected": 0},
    }
    args.update(overrides)
    return sign_batch(key, **args)


def signed(key: OperatorKey, body: bytes) -> tuple[bytes, bytes]:
    msg = BATCH_MSG_PREFIX + body
    return msg, key.sign(msg)


def flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]


# --- leaves ---------------------------------------------------------------------------------


def test_leaf_bytes_are_exactly_jcs() -> None:
    assert leaf_bytes("relay.test/op", 7, 0, SUMMARY) == (
        b'{"i":0,"node":{"id":"12","role":"storage"},"origin":"relay.test/op",'
        b'"outcomes":{"ok":2,"timeout":1},"region":"eu-west","requests":3,"seq":7,'
        b'"signals":{},"ttfb_ms_p50":120.5}'
    )


def test_leaf_integers_and_floats_use_rfc8785_forms() -> None:
    leaf = leaf_bytes("o", 1, 2, {"bytes": 2**53 - 1, "share": 1.0, "tiny": 1e-7, "big": 1e21})
    assert leaf == (
        b'{"big":1e+21,"bytes":9007199254740991,"i":2,"origin":"o","seq":1,"share":1,"tiny":1e-7}'
    )


@pytest.mark.parametrize("field", ["origin", "seq", "i"])
def test_summary_must_not_carry_position_fields(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        leaf_bytes("o", 1, 2, {**SUMMARY, field: 0})


def test_unrepresentable_summary_values_are_refused() -> None:
    with pytest.raises(NonCanonicalError):
        leaf_bytes("o", 1, 0, {"bytes": 2**53})


# --- signing --------------------------------------------------------------------------------


def test_golden_empty_batch(key: OperatorKey) -> None:
    batch = make_batch(key)
    assert batch.msg == (
        b"telemetry-batch/v1\n"
        b'{"kid":"f7780683","n":0,"origin":"relay.test/operator-1",'
        b'"prev":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",'
        b'"privacy":{"k":10,"mode":"aggregate"},'
        b'"root":"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=","schema":1,"seq":0,'
        b'"signed_at_ms":1700000061000,"stats":{"accepted":0,"rejected":0},'
        b'"type":"telemetry-batch","v":1,"window_end_ms":1700000060000,'
        b'"window_start_ms":1700000000000}'
    )
    assert batch.leaves == ()
    assert batch.batch_hash == hashlib.sha256(batch.msg).digest()
    assert batch.msg == batch_message(batch.header)


def test_header_and_leaves(key: OperatorKey) -> None:
    summaries = [SUMMARY, {**SUMMARY, "region": "us-east"}, {**SUMMARY, "requests": 0}]
    batch = make_batch(key, seq=4, prev=b"\x07" * 32, summaries=summaries)
    h = batch.header
    assert h["v"] == 1 and h["type"] == "telemetry-batch"
    assert (h["origin"], h["kid"], h["seq"], h["n"]) == (ORIGIN, KID, 4, 3)
    assert batch.leaves == tuple(leaf_bytes(ORIGIN, 4, i, s) for i, s in enumerate(summaries))
    assert base64.b64decode(h["root"]) == merkle.root(list(batch.leaves))
    assert base64.b64decode(h["prev"]) == b"\x07" * 32
    assert batch.batch_hash == batch_hash(batch.msg)
    assert batch.sig == key.sign(batch.msg)


def test_batches_chain_by_hash(key: OperatorKey) -> None:
    first = make_batch(key)
    second = make_batch(key, seq=1, prev=first.batch_hash)
    header = verify_batch(key.verifier, second.msg, second.sig)
    assert base64.b64decode(header["prev"]) == first.batch_hash


def test_optional_header_fields_are_signed(key: OperatorKey) -> None:
    batch = make_batch(key, gap=True, next_kid="0badc0de")
    header = verify_batch(key.verifier, batch.msg, batch.sig)
    assert header["gap"] is True
    assert header["next_kid"] == "0badc0de"


def test_optional_header_fields_are_absent_unless_set(key: OperatorKey) -> None:
    batch = make_batch(key)
    header = verify_batch(key.verifier, batch.msg, batch.sig)
    assert "gap" not in header
    assert "next_kid" not in header


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prev": b"short"}, "prev"),
        ({"seq": -1}, "seq"),
        ({"stats": {"accepted": -1}}, "stats"),
        ({"schema": True}, "schema"),
    ],
)
def test_sign_batch_refuses_headers_verify_would_reject(
    key: OperatorKey, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_batch(key, **overrides)


def test_signed_batch_is_frozen(key: OperatorKey) -> None:
    batch = make_batch(key)
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.sig = b""  # type: ignore[misc]


# --- verification ---------------------------------------------------------------------------


def test_verify_with_a_key_parsed_from_its_string_alone(key: OperatorKey) -> None:
    batch = make_batch(key, summaries=[SUMMARY])
    vkey = VerifierKey.parse(key.verifier.encode())
    header = verify_batch(vkey, batch.msg, batch.sig)
    assert header == batch.header
    assert canonical_json(header) == batch.msg[len(BATCH_MSG_PREFIX) :]


def test_every_flipped_bit_of_the_message_is_caught(key: OperatorKey) -> None:
    batch = make_batch(key, summaries=[SUMMARY])
    for i in range(len(batch.msg)):
        error = MalformedBatchError if i < len(BATCH_MSG_PREFIX) else BadSignatureError
        with pytest.raises(error):
            verify_batch(key.verifier, flip(batch.msg, i), batch.sig)


def test_every_flipped_bit_of_the_signature_is_caught(key: OperatorKey) -> None:
    batch = make_batch(key)
    for i in range(len(batch.sig)):
        with pytest.raises(BadSignatureError):
            verify_batch(key.verifier, batch.msg, flip(batch.sig, i))
    for sig in (b"", batch.sig[:-1], batch.sig + b"\x00"):
        with pytest.raises(BadSignatureError):
            verify_batch(key.verifier, batch.msg, sig)


def test_another_key_is_rejected(key: OperatorKey) -> None:
    batch = make_batch(key)
    other = OperatorKey.generate(ORIGIN)
    with pytest.raises(BadSignatureError):
        verify_batch(other.verifier, batch.msg, batch.sig)


@pytest.mark.parametrize(
    "serialise",
    [
        lambda h: json.dumps(h).encode(),  # white space, insertion order
        lambda h: json.dumps(h, sort_keys=True).encode(),  # white space
        lambda h: json.dumps(h, separators=(",", ":")).encode(),  # insertion order
        lambda h: json.dumps(h, sort_keys=True, separators=(",", ":")).encode() + b"\n",
        lambda h: canonical_json(h).replace(b'"v":1', b'"v":1.0'),
        lambda h: canonical_json(h).replace(b'{"kid"', b'{"kid":"x","kid"', 1),
        lambda h: canonical_json(h).replace(b"aggregate", b"\\u0061ggregate"),
    ],
)
def test_non_canonical_serialisations_are_detected(key: OperatorKey, serialise: Any) -> None:
    header = make_batch(key).header
    msg, sig = signed(key, serialise(header))
    with pytest.raises(NonCanonicalError):
        verify_batch(key.verifier, msg, sig)


def test_integers_beyond_2_53_are_non_canonical(key: OperatorKey) -> None:
    body = canonical_json(make_batch(key).header).replace(b'"seq":0', b'"seq":9007199254740993')
    msg, sig = signed(key, body)
    with pytest.raises(NonCanonicalError):
        verify_batch(key.verifier, msg, sig)


def _mutated(key: OperatorKey, **changes: Any) -> dict[str, Any]:
    header = dict(make_batch(key).header)
    for name, value in changes.items():
        if value is None:
            del header[name]
        else:
            header[name] = value
    return header


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"root": None}, "lacks"),
        ({"v": 2}, "version"),
        ({"v": True}, "version"),
        ({"type": "other"}, "type"),
        ({"origin": "relay.test/other"}, "signed by"),
        ({"kid": "00000000"}, "signed by"),
        ({"origin": "bad origin"}, "white space"),
        ({"seq": -1}, "seq"),
        ({"n": 1.5}, "n must"),
        ({"window_start_ms": "0"}, "window_start_ms"),
        ({"root": "AAAA"}, "root"),
        ({"prev": 5}, "prev"),
        ({"privacy": []}, "privacy"),
        ({"stats": {"accepted": True}}, "stats"),
        ({"stats": {"accepted": -2}}, "stats"),
    ],
)
def test_malformed_headers(key: OperatorKey, changes: dict[str, Any], message: str) -> None:
    msg, sig = signed(key, canonical_json(_mutated(key, **changes)))
    with pytest.raises(MalformedBatchError, match=message):
        verify_batch(key.verifier, msg, sig)


@pytest.mark.parametrize("body", [b"not json", b"[]", b'"header"', b"\xff", b"[" * 100_000])
def test_signed_bytes_that_are_not_a_header(key: OperatorKey, body: bytes) -> None:
    msg, sig = signed(key, body)
    with pytest.raises(AttestError):
        verify_batch(key.verifier, msg, sig)


def test_wrong_prefix_is_malformed(key: OperatorKey) -> None:
    body = canonical_json(make_batch(key).header)
    msg = b"telemetry-batch/v2\n" + body
    with pytest.raises(MalformedBatchError, match="prefix"):
        verify_batch(key.verifier, msg, key.sign(msg))
