"""Operator keys: Ed25519 under the C2SP signed-note key conventions (c2sp.org/signed-note).

Strings are byte-compatible with golang.org/x/mod/sumdb/note, so standard tooling can read them:

- verifier key: ``<origin>+<kid>+<base64(0x01 ‖ 32-byte public key)>``
- private key file: ``PRIVATE+KEY+<origin>+<kid>+<base64(0x01 ‖ 32-byte seed)>`` and a newline
- kid: the signed-note key ID, SHA-256(origin ‖ 0x0A ‖ 0x01 ‖ public key)[:4], as 8 hex digits
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

from relay.attest.errors import (
    InsecureKeyFileError,
    InvalidKeyFileError,
    InvalidOriginError,
    InvalidVerifierKeyError,
    KeyFileExistsError,
)
from relay.core.b64 import b64decode, b64encode

__all__ = ["OperatorKey", "VerifierKey", "key_id", "validate_origin"]

#: Signature type identifier of Ed25519 in c2sp.org/signed-note.
ALG_ED25519 = 0x01
PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
SIGNATURE_SIZE = 64
MAX_ORIGIN_LENGTH = 255
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_KID_RE = re.compile(r"[0-9a-f]{8}")
# A key file is one short line; anything much bigger is not a key file.
_MAX_KEY_FILE_BYTES = 4096


def key_id(origin: str, public_key: bytes) -> str:
    """SHA-256(origin ‖ 0x0A ‖ 0x01 ‖ public key)[:4] as 8 lowercase hex digits.

    The Ed25519 key ID of c2sp.org/signed-note, "Ed25519 signatures".
    """
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    digest = hashlib.sha256(origin.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return digest[:4].hex()


def validate_origin(origin: str) -> None:
    """Raise InvalidOriginError unless ``origin`` can name a signed-note key and a log.

    c2sp.org/signed-note forbids empty names, '+' and Unicode spaces; this also refuses
    unprintable characters and more than 255 characters, so an origin is safe in a file name, a
    log line and an Elasticsearch keyword.
    """
    if not origin:
        raise InvalidOriginError("origin must not be empty")
    if len(origin) > MAX_ORIGIN_LENGTH:
        raise InvalidOriginError(f"origin is longer than {MAX_ORIGIN_LENGTH} characters")
    if "+" in origin:
        raise InvalidOriginError(f"origin must not contain '+': {origin!r}")
    if any(c.isspace() for c in origin):
        raise InvalidOriginError(f"origin must not contain white space: {origin!r}")
    if not origin.isprintable():
        raise InvalidOriginError(f"origin must be printable: {origin!r}")


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """The public half of an operator key, as listed in the registry.

    Construction checks that the three parts agree, so a VerifierKey is always consistent.
    """

    origin: str
    kid: str
    public_key: bytes

    def __post_init__(self) -> None:
        try:
            validate_origin(self.origin)
        except InvalidOriginError as e:
            raise InvalidVerifierKeyError(f"invalid verifier key origin: {e}") from e
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise InvalidVerifierKeyError(
                f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(self.public_key)}"
            )
        expected = key_id(self.origin, self.public_key)
        if self.kid != expected:
            raise InvalidVerifierKeyError(
                f"key id {self.kid!r} does not match the key: for origin {self.origin!r} "
                f"it is {expected!r}"
            )

    def encode(self) -> str:
        """``<origin>+<kid>+<base64(0x01 ‖ public key)>``."""
        return f"{self.origin}+{self.kid}+{b64encode(bytes([ALG_ED25519]) + self.public_key)}"

    @classmethod
    def parse(cls, s: str) -> VerifierKey:
        """Parse a verifier key string; raise InvalidVerifierKeyError saying what is wrong."""
        origin, kid, public_key = parse_note_key(
            s,
            form="a verifier key has the form <origin>+<kid>+<base64 key>",
            type_byte=ALG_ED25519,
            type_error="key material must start with the Ed25519 algorithm byte 0x01",
        )
        if not _KID_RE.fullmatch(kid):
            raise InvalidVerifierKeyError(f"key id must be 8 lowercase hex digits, got {kid!r}")
        return cls(origin, kid, public_key)

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """True iff ``sig`` is a valid Ed25519 signature of ``msg``; never raises for bad ones."""
        return ed25519_verifies(self.public_key, msg, sig)


def parse_note_key(s: str, *, form: str, type_byte: int, type_error: str) -> tuple[str, str, bytes]:
    """(name, key id, public key) of a C2SP signed-note key string ``<name>+<kid>+base64(type ‖
    key)``, operator verifier keys (type 0x01) and witness keys (0x04) alike; the caller checks
    what the key id must be. Raises InvalidVerifierKeyError with ``form`` or ``type_error``."""
    # A name never contains '+' but base64 may, so only the first two separate fields.
    parts = s.split("+", 2)
    if len(parts) != 3:
        raise InvalidVerifierKeyError(f"{form}, got {len(parts)} part(s)")
    name, kid, encoded = parts
    try:
        raw = b64decode(encoded)
    except ValueError as e:
        raise InvalidVerifierKeyError(f"key material is not valid base64: {e}") from e
    if not raw or raw[0] != type_byte:
        raise InvalidVerifierKeyError(type_error)
    return name, kid, raw[1:]


def ed25519_verifies(public_key: bytes, msg: bytes, sig: bytes) -> bool:
    """True iff ``sig`` is a valid Ed25519 signature of ``msg``; never raises for bad ones."""
    if len(sig) != SIGNATURE_SIZE:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(msg, sig)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


class OperatorKey:
    """An operator's Ed25519 signing key and the origin it signs as."""

    __slots__ = ("_origin", "_signing_key", "_verifier")

    def __init__(self, origin: str, signing_key: nacl.signing.SigningKey) -> None:
        validate_origin(origin)
        public_key = bytes(signing_key.verify_key)
        self._origin = origin
        self._signing_key = signing_key
        self._verifier = VerifierKey(origin, key_id(origin, public_key), public_key)

    @classmethod
    def generate(cls, origin: str) -> OperatorKey:
        return cls(origin, nacl.signing.SigningKey.generate())

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def kid(self) -> str:
        return self._verifier.kid

    @property
    def verifier(self) -> VerifierKey:
        return self._verifier

    def sign(self, msg: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of ``msg`` (RFC 8032)."""
        return self._signing_key.sign(msg).signature

    def __repr__(self) -> str:
        # Never show the seed, which the default repr of a wrapped key could leak into logs.
        return f"OperatorKey(origin={self._origin!r}, kid={self.kid!r})"

    def save(self, path: Path) -> None:
        """Write the key file at ``path``: mode 0600 from creation, atomic, never overwriting.

        The key is written to a temporary file in the same directory and hard-linked into place:
        unlike os.replace, os.link fails if ``path`` exists, so a concurrent writer cannot be
        clobbered and readers never see a partial file. Raises KeyFileExistsError if it exists.
        """
        encoded = b64encode(bytes([ALG_ED25519]) + bytes(self._signing_key))
        data = f"{_PRIVATE_PREFIX}{self._origin}+{self.kid}+{encoded}\n".encode()
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with open(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise KeyFileExistsError(
                    f"{path} already exists; refusing to overwrite an operator key"
                ) from None
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_directory(path.parent)

    @classmethod
    def load(cls, path: Path) -> OperatorKey:
        """Read a key file written by ``save`` (or by golang.org/x/mod/sumdb/note).

        Raises InsecureKeyFileError if group or others have any access to it, InvalidKeyFileError
        if it is not a valid private key, and OSError if it cannot be read.
        """
        with open(path, "rb") as f:
            # fstat on the open file, not stat on the path, so the checked file is the read one.
            mode = os.fstat(f.fileno()).st_mode
            # Windows has no group/other permission bits to check.
            if os.name == "posix" and mode & 0o077:
                raise InsecureKeyFileError(
                    f"{path} has mode {mode & 0o777:04o}; an operator key must be readable by its "
                    f"owner only (chmod 600 {path})"
                )
            data = f.read(_MAX_KEY_FILE_BYTES + 1)
        if len(data) > _MAX_KEY_FILE_BYTES:
            raise InvalidKeyFileError(f"{path} is too large to be an operator key file")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidKeyFileError(f"{path} is not UTF-8 text") from None
        return cls._parse_private(text.strip(), path)

    @classmethod
    def _parse_private(cls, text: str, path: Path) -> OperatorKey:
        # Error messages never quote the file: it holds the secret seed.
        if not text.startswith(_PRIVATE_PREFIX):
            raise InvalidKeyFileError(
                f"{path} is not a signed-note private key (expected PRIVATE+KEY+<origin>+<kid>+...)"
            )
        parts = text[len(_PRIVATE_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise InvalidKeyFileError(f"{path}: expected PRIVATE+KEY+<origin>+<kid>+<base64 key>")
        origin, kid, encoded = parts
        try:
            validate_origin(origin)
        except InvalidOriginError as e:
            raise InvalidKeyFileError(f"{path}: {e}") from None
        if not _KID_RE.fullmatch(kid):
            raise InvalidKeyFileError(f"{path}: key id must be 8 lowercase hex digits")
        try:
            raw = b64decode(encoded)
        except ValueError:
            raise InvalidKeyFileError(f"{path}: key material is not valid base64") from None
        if len(raw) != 1 + SEED_SIZE or raw[0] != ALG_ED25519:
            raise InvalidKeyFileError(
                f"{path}: key material must be 0x01 followed by a {SEED_SIZE}-byte Ed25519 seed"
            )
        key = cls(origin, nacl.signing.SigningKey(raw[1:]))
        if key.kid != kid:
            raise InvalidKeyFileError(
                f"{path}: key id {kid} does not match the key (it is {key.kid}); "
                "the file is corrupt or was edited"
            )
        return key


def _fsync_directory(directory: Path) -> None:
    """Make a new directory entry durable, so a crash cannot lose a key already reported saved."""
    # Windows cannot open a directory to fsync it.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
