"""Integer tests for parsed JSON."""

from __future__ import annotations

from typing import TypeGuard

__all__ = ["MAX_SAFE_INT", "is_int"]

#: The largest integer every JSON reader keeps exact (RFC 8785 §3.2.2.3, I-JSON): counts,
#: sequence numbers and timestamps in signed documents stay at or below it.
MAX_SAFE_INT = 2**53 - 1


def is_int(value: object) -> TypeGuard[int]:
    """True for a JSON integer: bool is an int subclass, but true is not a count or a seq."""
    return isinstance(value, int) and not isinstance(value, bool)
