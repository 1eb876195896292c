"""RFC 8785 canonical JSON via the rfc8785 package, and the verifier's canonical-form check."""

from __future__ import annotations

import json
import math

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.attest import NonCanonicalError, canonical_json, is_canonical

# RFC 8785 §3.2.2 example; also testdata/{input,output}/values.json of
# cyberphone/json-canonicalization.
RFC8785_VALUES_INPUT = r"""{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"""
RFC8785_VALUES_OUTPUT = (
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
).encode()

# RFC 8785 §3.2.3: properties sort by the UTF-16 code units of their names.
RFC8785_SORTING_INPUT = r"""{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"""
RFC8785_SORTED_VALUES = [
    "Carriage Return",
    "One",
    "Control",
    "Latin Small Letter O With Diaeresis",
    "Euro Sign",
    "Emoji: Grinning Face",
    "Hebrew Letter Dalet With Dagesh",
]


def test_rfc8785_values_example() -> None:
    assert canonical_json(json.loads(RFC8785_VALUES_INPUT)) == RFC8785_VALUES_OUTPUT
    assert is_canonical(RFC8785_VALUES_OUTPUT)
    assert not is_canonical(RFC8785_VALUES_INPUT.encode())


def test_rfc8785_sorting_example() -> None:
    out = canonical_json(json.loads(RFC8785_SORTING_INPUT))
    assert list(json.loads(out).values()) == RFC8785_SORTED_VALUES


def test_no_white_space_and_sorted_keys() -> None:
    assert canonical_json({"b": [1, 2], "a": {"d": None, "c": True}}) == (
        b'{"a":{"c":true,"d":null},"b":[1,2]}'
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, b"0"),
        (-0.0, b"0"),
        (2**53 - 1, b"9007199254740991"),
        (-(2**53) + 1, b"-9007199254740991"),
        (1.0, b"1"),
        (1e21, b"1e+21"),
        (1e-7, b"1e-7"),
        (0.000001, b"0.000001"),
        ("é\u2028", '"é\u2028"'.encode()),
        ((1, "a"), b'[1,"a"]'),
    ],
)
def test_scalars(value: object, expected: bytes) -> None:
    assert canonical_json(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        2**53,
        -(2**53),
        {"n": 10**20},
        math.nan,
        math.inf,
        [-math.inf],
        "\ud800",
        {1: "non-string key"},
        {"set": {1, 2}},
        b"bytes",
    ],
)
def test_values_rfc8785_cannot_represent(value: object) -> None:
    with pytest.raises(NonCanonicalError):
        canonical_json(value)


def test_too_deep_nesting_is_an_error_not_a_crash() -> None:
    value: object = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(NonCanonicalError, match="nested"):
        canonical_json(value)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1}',  # white space
        b'{"b":1,"a":2}',  # key order
        b'{"a":1,"a":1}',  # duplicate key
        b"1.0",  # number form
        b"1E3",
        b'"\\u0041"',  # needless escape
        b'"\\/"',
        b"{}\n",  # trailing newline
        b"\xef\xbb\xbf{}",  # byte order mark
        b"NaN",
        b"Infinity",
        b"9007199254740993",  # no double has this value
        b"1e400",  # overflows to infinity
        b'"\\ud800"',  # lone surrogate
        b"\xff",  # not UTF-8
        '"é"'.encode("utf-16-le"),
        b"",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_not_canonical(data: bytes) -> None:
    assert not is_canonical(data)


@pytest.mark.parametrize("data", [b"{}", b"[]", b"null", b'{"a":[1,"x",true]}', b"-5"])
def test_canonical(data: bytes) -> None:
    assert is_canonical(data)


def test_large_integral_doubles_are_canonical_as_rfc8785_writes_them() -> None:
    # RFC 8785 numbers are doubles, written as ECMAScript does: shortest digits, no exponent.
    data = canonical_json(2.0**60)
    assert data == b"1152921504606847000"
    assert is_canonical(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_output_is_recognised_as_canonical(value: object) -> None:
    assert is_canonical(canonical_json(value))


@given(json_values)
def test_pretty_printed_objects_are_not_canonical(value: object) -> None:
    data = json.dumps({"k": value}, indent=1).encode()
    assert not is_canonical(data)


_JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.text(alphabet=st.characters(max_codepoint=0x7F))
)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=6) | st.sampled_from(["a", "B", "é", "\\u0000"]), inner, max_size=4
        )
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(_JSON)
def test_fast_path_is_byte_identical_to_rfc8785(value: object) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(NonCanonicalError):
            canonical_json(value)
        return
    assert canonical_json(value) == expected
