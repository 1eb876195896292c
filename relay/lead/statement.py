"""Statements signed by the lead's key: holds and period reports.

The lead's key is an ordinary relay key (`relay keygen --origin <lead name> --out lead.key`,
relay/attest/keys.py); its verifier key string `<lead name>+<kid>+<base64>` is what auditors are
given. A statement is signed like a batch header (DESIGN §5.3), with its own domain-separation
line so that no signature of one kind can pass for another:

    msg = b"relay-hold/v1\\n" + JCS(body)       (or relay-report/v1)
    sig = Ed25519(msg), standard base64

and stored as the envelope `{"body": {...}, "signer": "<verifier key>", "sig": "<base64>"}`.
`signer` only says which key to try: an auditor checks the signature with the key they were given
(or that the DAO published), never with the one the envelope names.
"""

from __future__ import annotations

from typing import Any, Final

from relay.attest.canonical import canonical_json
from relay.attest.errors import NonCanonicalError
from relay.attest.keys import OperatorKey, VerifierKey
from relay.core.b64 import b64decode, b64encode

__all__ = ["HOLD_DOMAIN", "REPORT_DOMAIN", "StatementError", "open_statement", "sign_statement"]

HOLD_DOMAIN: Final = "relay-hold/v1"
REPORT_DOMAIN: Final = "relay-report/v1"


class StatementError(ValueError):
    """An envelope that is malformed or whose signature does not verify with the given key."""


def signed_message(domain: str, body: dict[str, Any]) -> bytes:
    return domain.encode() + b"\n" + canonical_json(body)


def sign_statement(key: OperatorKey, domain: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "body": body,
        "signer": key.verifier.encode(),
        "sig": b64encode(key.sign(signed_message(domain, body))),
    }


def open_statement(envelope: object, domain: str, vkey: VerifierKey) -> dict[str, Any]:
    """The body of ``envelope`` if ``vkey`` signed it under ``domain``; StatementError if not."""
    if not isinstance(envelope, dict):
        raise StatementError("not a signed statement: expected a JSON object")
    body, sig_text = envelope.get("body"), envelope.get("sig")
    if not isinstance(body, dict) or not isinstance(sig_text, str):
        raise StatementError("a signed statement needs an object `body` and a string `sig`")
    try:
        sig = b64decode(sig_text)
    except ValueError as exc:
        raise StatementError(f"sig is not standard base64: {exc}") from exc
    try:
        msg = signed_message(domain, body)
    except NonCanonicalError as exc:
        raise StatementError(f"body has no canonical form: {exc}") from exc
    if not vkey.verify(msg, sig):
        raise StatementError(f"the signature is not by {vkey.origin}+{vkey.kid} over {domain}")
    return body
