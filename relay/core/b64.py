"""Standard base64 (RFC 4648 §4, with padding), decoded strictly.

Signed-note keys and signatures, checkpoint roots and batch hashes all use this encoding. Decoding
accepts exactly one spelling per value (alphabet, padding and unused trailing bits all checked),
so two different strings never stand for the same bytes.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["b64decode", "b64encode"]


def b64encode(data: bytes) -> str:
    # binascii directly: 14 proof hashes per summary make this a hot spot of sealing.
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def b64decode(text: str) -> bytes:
    """Decode canonical standard base64; raise ValueError on anything else."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError("not standard base64 with padding") from e
    # b64decode ignores non-zero unused bits in the last symbol; re-encoding exposes them.
    if b64encode(data) != text:
        raise ValueError("non-canonical base64")
    return data
