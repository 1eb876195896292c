"""Optional ingest authentication: static bearer tokens and signed session tokens.

Static tokens are for server-side apps: `Authorization: Bearer <token>`, compared in constant
time against `ingest.auth.bearer_tokens` (name → token).

Session tokens let a gateway (e.g. Orion) vouch for its logged-in users without relay calling
anything: the gateway signs a short-lived token with an Ed25519 key whose verifier key string
(the same format as operator keys, `relay keygen --origin <issuer>`) is listed in
`ingest.auth.session_issuers`. Format:

    rst1.<base64url(payload)>.<base64url(signature)>

with `payload` the JSON `{"iss": <issuer origin>, "iat": <unix s>, "exp": <unix s>}` and the
signature over `b"relay-session/v1\\n" + <base64url(payload)>` (the domain tag keeps these
signatures apart from batch and checkpoint signatures). A token is valid while
iat − 60 s ≤ now < exp and exp − iat ≤ `session_max_ttl_seconds`. Tokens carry no user id; the
token (its issuer and signature, as bytes) is the rate-limit identity and is never stored or
logged.

Both parts must be canonical unpadded base64url: one token has exactly one spelling. A lenient
decoder (Python's skips characters outside the alphabet and ignores the unused low bits of the
last one) let one token be re-spelled without end, and every spelling got a fresh rate-limit
bucket. Ed25519 as libsodium verifies it is not malleable either (a non-canonical S or R fails),
so one signed payload is one bucket.

Why not PASETO v4.public or a JWT (EdDSA)? Both would verify the same Ed25519 signature over a
differently framed message; what made this format weak was the decoding, not the framing. A
JWT library brings algorithm negotiation (the `alg` header) that this needs to refuse anyway,
and both bring the `cryptography` stack next to the pynacl relay already uses for every other
signature. Gateways that already mint these tokens keep working unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from relay.attest.errors import AttestError
from relay.attest.keys import OperatorKey, VerifierKey

__all__ = ["AuthError", "Authenticator", "Credential", "issue_session_token"]

SESSION_PREFIX = "rst1"
SESSION_DOMAIN = b"relay-session/v1\n"
CLOCK_SKEW_S = 60


class AuthError(Exception):
    """The request's credentials are missing or invalid: a 401."""


@dataclass(frozen=True)
class Credential:
    kind: str  # "bearer" | "session"
    rate_key: str  # what per-token limits are keyed by; never stored


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _unb64url(text: str) -> bytes:
    """Strict unpadded base64url: ValueError for any text that is not the one spelling."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64url(data) != text:  # unused low bits set, or a length no encoding has
        raise ValueError("not canonical base64url")
    return data


def issue_session_token(key: OperatorKey, *, now_s: int, ttl_s: int) -> str:
    """What a gateway does per logged-in user (also `relay session-token`)."""
    payload = _b64url(orjson.dumps({"iss": key.origin, "iat": now_s, "exp": now_s + ttl_s}))
    signature = key.sign(SESSION_DOMAIN + payload.encode("ascii"))
    return f"{SESSION_PREFIX}.{payload}.{_b64url(signature)}"


class Authenticator:
    def __init__(
        self,
        *,
        required: bool,
        bearer_tokens: Mapping[str, str],
        session_issuers: Sequence[str],
        session_max_ttl_s: int,
    ) -> None:
        self.required = required
        self._bearer = [(name, token.encode()) for name, token in bearer_tokens.items()]
        issuers = [VerifierKey.parse(vkey) for vkey in session_issuers]
        self._issuers = {issuer.origin: issuer for issuer in issuers}
        self._max_ttl = session_max_ttl_s

    def authenticate(self, authorization: str | None, now_s: int) -> Credential | None:
        """The request's credential; None if it sent none and none is required.

        With no tokens or issuers configured, authentication is off and the header is ignored.
        """
        if not (self.required or self._bearer or self._issuers):
            return None
        if not authorization:
            if self.required:
                raise AuthError("this relay requires a bearer or session token")
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("use Authorization: Bearer <token>")
        token = token.strip()
        if token.startswith(SESSION_PREFIX + "."):
            return self._session(token, now_s)
        # aiohttp hands header bytes that are not UTF-8 over as surrogate escapes: compare the
        # bytes the client sent (a plain encode() would raise, and answer 500).
        presented = token.encode("utf-8", "surrogateescape")
        for name, expected in self._bearer:
            if hmac.compare_digest(presented, expected):
                return Credential("bearer", "bearer:" + name)
        raise AuthError("unknown token")

    def _session(self, token: str, now_s: int) -> Credential:
        try:
            _, payload_b64, sig_b64 = token.split(".")
            payload = orjson.loads(_unb64url(payload_b64))
            signature = _unb64url(sig_b64)
            issuer = self._issuers[payload["iss"]]
            iat, exp = int(payload["iat"]), int(payload["exp"])
        except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
            raise AuthError("malformed or unknown session token") from None
        try:
            valid = issuer.verify(SESSION_DOMAIN + payload_b64.encode("ascii"), signature)
        except AttestError:
            valid = False
        if not valid:
            raise AuthError("session token signature does not verify")
        if not (iat - CLOCK_SKEW_S <= now_s < exp) or exp - iat > self._max_ttl:
            raise AuthError("session token expired or not yet valid")
        return Credential("session", f"session:{issuer.origin}:{signature.hex()}")
