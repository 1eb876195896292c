"""Field types of the JSON documents relay signs, ships and answers (DESIGN §5, pinned).

Annotated types: the builders of those documents are typed with them (TypedDicts next to each
builder), and the JSON Schemas of `schemas/` and `openapi.yaml` are generated from the same
annotations, so a document's type and its published schema are one definition.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from relay.core.numbers import MAX_SAFE_INT

__all__ = [
    "HASH_B64_PATTERN",
    "Count",
    "DecimalText",
    "Hash64",
    "Kid",
    "Origin",
    "Region",
    "Signature64",
    "VerifierKeyString",
]

#: A count or an integer millisecond timestamp: canonical JSON keeps integers below 2^53 (§5.1).
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
Origin = Annotated[
    str,
    StringConstraints(pattern=r"^[^+\s]{1,255}$"),
    Field(description="Origin of the operator's log: no '+' and no white space."),
]
Kid = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{8}$"),
    Field(description="Key id: SHA-256(origin ‖ 0x0A ‖ 0x01 ‖ public key)[:4], 8 hex digits."),
]
#: Standard base64 of 32 bytes, canonical (the unused low bits of the last symbol are zero).
HASH_B64_PATTERN = r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]="
Hash64 = Annotated[
    str,
    StringConstraints(pattern=f"^{HASH_B64_PATTERN}$"),
    Field(description="A SHA-256 hash in standard base64 (44 characters, padded)."),
]
Signature64 = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9+/]{85}[AQgw]==$"),
    Field(description="An Ed25519 signature in standard base64 (88 characters, padded)."),
]
VerifierKeyString = Annotated[
    str,
    StringConstraints(pattern=r"^[^+\s]{1,255}\+[0-9a-f]{8}\+A[A-Za-z0-9+/]{43}$"),
    Field(description="Verifier key `<origin>+<kid>+<base64(0x01 ‖ Ed25519 public key)>` (§5.4)."),
]
Region = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{2}$"),
    Field(
        description="Macro-region AF AN AS EU NA OC SA, or ZZ (unknown, or a roll-up under k); "
        "an ISO 3166-1 country code only when the operator opted in to privacy.geo: country.",
        examples=["EU", "ZZ"],
    ),
]
DecimalText = Annotated[
    str, Field(pattern=r"^(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$", description="An exact decimal.")
]
