"""Integer tests for parsed JSON."""

from __future__ import annotations

from typing import TypeGuard

__all__ = ["is_int"]


def is_int(value: object) -> TypeGuard[int]:
    """True for a JSON integer: bool is an int subclass, but true is not a count or a seq."""
    return isinstance(value, int) and not isinstance(value, bool)
