"""Canonical JSON: RFC 8785 (JSON Canonicalization Scheme), via the ``rfc8785`` package.

``rfc8785`` rather than ``jcs``: the latter silently rounds integers beyond 2^53, which would let
two different counts sign as the same bytes; ``rfc8785`` refuses them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, cast

import orjson
import rfc8785

from relay.attest.errors import NonCanonicalError

__all__ = ["canonical_json", "is_canonical"]

# 2^53: the first integer an IEEE 754 double cannot tell from its neighbour (RFC 8785 §3.2.2.3).
_SAFE_INTEGER_LIMIT = 2**53


def canonical_json(obj: object) -> bytes:
    """Serialise ``obj`` as RFC 8785 canonical JSON (UTF-8, sorted keys, no white space).

    ``obj`` is built from dict (string keys), list, tuple, str, int, float, bool and None. Raises
    NonCanonicalError for what RFC 8785 cannot represent: integers outside ±(2^53 − 1), NaN and
    infinities, lone surrogates, non-string keys, other types, and nesting too deep to walk.
    """
    if _plain(obj, 0):
        try:
            fast = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # e.g. a lone surrogate: rfc8785 says why below
            fast = b"\\"
        # ASCII without escapes: then orjson's bytes are RFC 8785's (see _plain).
        if fast.isascii() and b"\\" not in fast:
            return fast
    try:
        return rfc8785.dumps(cast(Any, obj))
    except rfc8785.CanonicalizationError as e:
        raise NonCanonicalError(str(e)) from e
    except RecursionError as e:
        raise NonCanonicalError("value is nested too deeply") from e


def _plain(value: object, depth: int) -> bool:
    """True for a value whose RFC 8785 form orjson (with sorted keys) writes byte for byte.

    That holds for dicts with str keys, lists, str, bool, None and integers within ±(2^53 − 1):
    both write integers in plain decimal and no white space, and for ASCII text without escapes
    sorting by UTF-8 bytes equals RFC 8785 §3.2.3's UTF-16 order. Floats (whose shortest forms
    can differ), subclasses and anything unusual take rfc8785's path. Summaries and headers are
    all plain, and sealing 10 000 of them is where the speed matters (DESIGN §10): hence exact
    type tests, and scalars checked in the loop rather than by a call each.
    """
    # ~20 values per summary, 10 000 summaries per seal: no call per scalar, no typing.cast
    # (a real call at run time), keys checked by set(map(type, ...)) in C.
    values: Iterable[object]
    if isinstance(value, dict):
        if type(value) is not dict or depth > 32 or not set(map(type, value)) <= _STR_ONLY:
            return False
        values = value.values()
    elif isinstance(value, list | tuple):
        if type(value) not in (list, tuple) or depth > 32:
            return False
        values = value
    else:
        values = (value,)
    for item in values:
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if not -_SAFE_INTEGER_LIMIT < item < _SAFE_INTEGER_LIMIT:
                return False
        elif kind is dict or kind is list or kind is tuple:
            if not _plain(item, depth + 1):
                return False
        else:
            return False
    return True


_STR_ONLY = frozenset({str})


def is_canonical(data: bytes) -> bool:
    """True iff ``data`` is exactly the RFC 8785 serialisation of the JSON value it encodes.

    Duplicate object keys, white space, non-UTF-8 input, ``1.0`` for ``1`` and the like all make
    the re-serialisation differ, so they are reported as not canonical.
    """
    try:
        return canonical_json(strict_loads(data)) == data
    except (ValueError, RecursionError, NonCanonicalError):
        return False


def strict_loads(data: bytes) -> object:
    """Parse UTF-8 JSON text with RFC 8785's number model, rejecting NaN/Infinity literals.

    Raises ValueError (including json.JSONDecodeError and UnicodeDecodeError) or RecursionError.
    """
    return json.loads(data.decode("utf-8"), parse_int=_parse_int, parse_constant=_reject_constant)


def _parse_int(text: str) -> int | float:
    # RFC 8785 numbers are IEEE 754 doubles. rfc8785 writes a large integral double such as
    # 2.0**60 without an exponent, so reading it back as a Python int (which rfc8785 refuses
    # beyond 2^53) would call rfc8785's own output non-canonical.
    value = int(text)
    return value if abs(value) < _SAFE_INTEGER_LIMIT else float(text)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")
