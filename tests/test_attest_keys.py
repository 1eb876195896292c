"""Operator and verifier keys: C2SP signed-note key IDs and strings, key files."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import nacl.signing
import pytest

from relay.attest import (
    InsecureKeyFileError,
    InvalidKeyFileError,
    InvalidOriginError,
    InvalidVerifierKeyError,
    KeyFileExistsError,
    OperatorKey,
    VerifierKey,
    key_id,
    validate_origin,
)

# golang.org/x/mod/sumdb/note, package documentation and note_test.go: the reference key pair.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"

# RFC 8032 §7.1, TEST 1.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_EMPTY_MSG_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

ORIGIN = "relay.test/operator-1"


def write_key_file(path: Path, content: str, mode: int = 0o600) -> Path:
    path.write_text(content)
    path.chmod(mode)
    return path


@pytest.fixture
def key() -> OperatorKey:
    return OperatorKey(ORIGIN, nacl.signing.SigningKey(RFC8032_SEED))


# --- key IDs and verifier key strings --------------------------------------------------------


def test_kid_of_the_go_reference_key() -> None:
    vkey = VerifierKey.parse(GO_VKEY)
    assert vkey.origin == "PeterNeumann"
    assert vkey.kid == "c74f20a3"
    assert key_id("PeterNeumann", vkey.public_key) == "c74f20a3"
    assert vkey.encode() == GO_VKEY


def test_kid_of_a_fixed_seed(key: OperatorKey) -> None:
    assert key.verifier.public_key == RFC8032_PUBLIC
    expected = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + RFC8032_PUBLIC).hexdigest()[:8]
    assert key.kid == expected == "f7780683"
    assert key_id(ORIGIN, RFC8032_PUBLIC) == expected


def test_kid_depends_on_origin() -> None:
    assert key_id("a.example", RFC8032_PUBLIC) != key_id("b.example", RFC8032_PUBLIC)


def test_key_id_rejects_a_prefixed_key() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        key_id(ORIGIN, b"\x01" + RFC8032_PUBLIC)


def test_signature_matches_rfc8032(key: OperatorKey) -> None:
    assert key.sign(b"") == RFC8032_EMPTY_MSG_SIG
    assert key.verifier.verify(b"", RFC8032_EMPTY_MSG_SIG)


def test_verifier_string_round_trip(key: OperatorKey) -> None:
    encoded = key.verifier.encode()
    assert encoded.startswith(f"{ORIGIN}+{key.kid}+")
    assert VerifierKey.parse(encoded) == key.verifier


def test_base64_with_plus_signs_splits_on_the_first_two_only() -> None:
    # Search for a key whose encoding contains '+', so the split is really exercised.
    for i in range(256):
        k = OperatorKey(ORIGIN, nacl.signing.SigningKey(bytes([i]) * 32))
        encoded = k.verifier.encode()
        if "+" in encoded.split("+", 2)[2]:
            assert VerifierKey.parse(encoded) == k.verifier
            return
    pytest.fail("no key with '+' in its base64")


def test_every_mangling_of_the_go_verifier_key_is_rejected() -> None:
    # As golang.org/x/mod/sumdb/note TestNewVerifier: every proper substring, every byte + 1.
    for i in range(len(GO_VKEY) + 1):
        for j in range(i + 1, len(GO_VKEY) + 1):
            if (i, j) != (0, len(GO_VKEY)):
                with pytest.raises(InvalidVerifierKeyError):
                    VerifierKey.parse(GO_VKEY[i:j])
    for i in range(len(GO_VKEY)):
        mangled = GO_VKEY[:i] + chr(ord(GO_VKEY[i]) + 1) + GO_VKEY[i + 1 :]
        with pytest.raises(InvalidVerifierKeyError):
            VerifierKey.parse(mangled)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # From note_test.go: wrong key length and unknown algorithm, with adjusted key IDs.
        ("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==", "base64"),
        ("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "algorithm"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "lowercase hex"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n", "base64"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq_LDE4izWy10TW", "base64"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "white space"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "empty"),
        ("PeterNeumann", "form"),
        ("PeterNeumann+c74f20a3+" + base64.b64encode(b"\x01" + bytes(31)).decode(), "32 bytes"),
    ],
)
def test_bad_verifier_keys_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidVerifierKeyError, match=message):
        VerifierKey.parse(text)


def test_verifier_key_construction_checks_consistency() -> None:
    with pytest.raises(InvalidVerifierKeyError, match="does not match"):
        VerifierKey(ORIGIN, "00000000", RFC8032_PUBLIC)
    with pytest.raises(InvalidVerifierKeyError, match="32 bytes"):
        VerifierKey(ORIGIN, "00000000", RFC8032_PUBLIC[:31])


def test_verify_is_false_for_bad_signatures_and_never_raises(key: OperatorKey) -> None:
    sig = key.sign(b"message")
    vkey = key.verifier
    assert vkey.verify(b"message", sig)
    assert not vkey.verify(b"messagf", sig)
    assert not vkey.verify(b"message", bytes([sig[0] ^ 1]) + sig[1:])
    assert not vkey.verify(b"message", sig[:63])
    assert not vkey.verify(b"message", sig + b"\x00")
    assert not vkey.verify(b"message", b"")
    assert not vkey.verify(b"message", bytes(64))
    assert not OperatorKey.generate(ORIGIN).verifier.verify(b"message", sig)


# --- origins --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin", ["relay.test/op", "joystream.example/operator-7", "é.example", "a" * 255]
)
def test_valid_origins(origin: str) -> None:
    validate_origin(origin)


@pytest.mark.parametrize(
    "origin",
    ["", "a+b", "a b", "a\tb", "a\nb", "a\u00a0b", "a\u2028b", "a\x00b", "a\x7fb", "a" * 256],
)
def test_invalid_origins(origin: str) -> None:
    with pytest.raises(InvalidOriginError):
        validate_origin(origin)


def test_operator_key_refuses_an_invalid_origin() -> None:
    with pytest.raises(InvalidOriginError):
        OperatorKey.generate("has space")


# --- operator keys and key files ------------------------------------------------------------


def test_generate_gives_distinct_keys() -> None:
    a, b = OperatorKey.generate(ORIGIN), OperatorKey.generate(ORIGIN)
    assert a.origin == b.origin == ORIGIN
    assert a.verifier != b.verifier
    assert len(a.sign(b"x")) == 64


def test_repr_does_not_leak_the_seed(key: OperatorKey) -> None:
    text = repr(key)
    assert key.kid in text
    assert RFC8032_SEED.hex() not in text
    assert "AZ1hsZ3" not in text  # start of base64(0x01 ‖ seed)


def test_load_the_go_reference_private_key(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "go.key", GO_SKEY + "\n")
    key = OperatorKey.load(path)
    assert key.origin == "PeterNeumann"
    assert key.kid == "c74f20a3"
    assert key.verifier.encode() == GO_VKEY


def test_save_then_load(tmp_path: Path, key: OperatorKey) -> None:
    path = tmp_path / "operator.key"
    key.save(path)
    content = path.read_text()
    assert content.startswith(f"PRIVATE+KEY+{ORIGIN}+{key.kid}+")
    assert content.endswith("\n") and content.count("\n") == 1
    loaded = OperatorKey.load(path)
    assert loaded.verifier == key.verifier
    assert loaded.sign(b"m") == key.sign(b"m")
    assert [p.name for p in tmp_path.iterdir()] == ["operator.key"]


def test_saved_file_is_private_even_with_a_permissive_umask(
    tmp_path: Path, key: OperatorKey
) -> None:
    old = os.umask(0)
    try:
        key.save(tmp_path / "operator.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "operator.key").stat().st_mode) == 0o600


def test_save_refuses_to_overwrite(tmp_path: Path, key: OperatorKey) -> None:
    path = tmp_path / "operator.key"
    path.write_text("precious")
    with pytest.raises(KeyFileExistsError, match="already exists"):
        key.save(path)
    assert path.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["operator.key"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o601])
def test_load_refuses_a_file_others_can_access(tmp_path: Path, mode: int) -> None:
    path = write_key_file(tmp_path / "k", GO_SKEY, mode)
    with pytest.raises(InsecureKeyFileError, match="chmod 600"):
        OperatorKey.load(path)


def test_load_accepts_owner_read_only(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "k", GO_SKEY, 0o400)
    assert OperatorKey.load(path).kid == "c74f20a3"


def _skey_with(seed_b64: str, kid: str = "c74f20a3", origin: str = "PeterNeumann") -> str:
    return f"PRIVATE+KEY+{origin}+{kid}+{seed_b64}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "not a signed-note private key"),
        (GO_VKEY, "not a signed-note private key"),
        ("PRIVATE+KEY+PeterNeumann", "expected"),
        (_skey_with("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz", kid="c74f20a4"), "key id"),
        (_skey_with("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz", kid="xyz"), "8 lowercase"),
        (_skey_with("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKD", kid="c74f20a3"), "base64"),
        (_skey_with("AoEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"), "0x01 followed by"),
        (_skey_with("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXH"), "0x01 followed by"),
        (_skey_with("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz", origin="Peter\x01"), "print"),
        (_skey_with("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz", origin="Peter2"), "key id"),
        ("x" * 5000, "too large"),
    ],
)
def test_bad_key_files_say_what_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    path = write_key_file(tmp_path / "k", content)
    with pytest.raises(InvalidKeyFileError, match=message) as info:
        OperatorKey.load(path)
    assert "AYEKFALVFGyNhPJEMzD1QIDr" not in str(info.value)


def test_key_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"\xff\xfe")
    path.chmod(0o600)
    with pytest.raises(InvalidKeyFileError, match="UTF-8"):
        OperatorKey.load(path)


def test_missing_key_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        OperatorKey.load(tmp_path / "absent.key")
