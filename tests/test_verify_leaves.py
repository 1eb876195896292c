"""The summary check's shortcut around rfc8785 must decide exactly as RFC 8785 would."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
import rfc8785

from relay.attest.merkle import inclusion_proofs, leaf_hash, root
from relay.verify.findings import Code
from relay.verify.leaves import BatchTree, check_summary, read_summary

BASE: dict[str, Any] = {"origin": "o", "seq": 0, "i": 0}
_EMPTY = {"values": [], "counts": []}
#: The content of a leaf relay could publish: BASE and every summary field.
SUMMARY: dict[str, Any] = {
    **BASE,
    "window_start_ms": 1_767_571_200_000,
    "window_end_ms": 1_767_571_500_000,
    "node": {"role": "distributor", "id": "mrbovo.distributor.cc"},
    "region": "EU",
    "requests": 12,
    "outcomes": {"ok": 10, "timeout": 2},
    "ops": {"download": 12},
    "signals": {"playback_slow": 1},
    "assets": {"video": 12},
    "bytes": 1_000_000,
    "ttfb_us": {"values": [20_000, 40_000], "counts": [3, 9]},
    "duration_us": _EMPTY,
    "throughput_bps": _EMPTY,
}
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def problem(leaf: bytes, searchable: dict[str, Any]) -> Code | None:
    """Check a one-leaf batch whose root is ``leaf``, with ``searchable`` as stored fields.

    Both ways of checking inclusion (rebuilt tree, RFC 9162 algorithm) must agree.
    """
    source = {**searchable, "att": {"leaf": leaf.decode(), "n": 1, "proof": []}}
    summary = read_summary(source)
    root = leaf_hash(leaf)
    found = {check_summary(source, summary, 1, root, tree) for tree in (None, BatchTree([root]))}
    assert len(found) == 1, found
    (result,) = found
    return None if result is None else result[0]


def test_orjson_escapes_ascii_as_rfc8785_does() -> None:
    for code in range(128):
        assert orjson.dumps(chr(code)) == rfc8785.dumps(chr(code)), code


@pytest.mark.parametrize(
    "value",
    [1e16, 0.5, 2**53 - 1, -(2**53 - 1), "é", "\u2028", "\U0001f600", None, [1.5, {"b": 1e-7}]],
)
def test_canonical_leaves_pass_whatever_path_they_take(value: object) -> None:
    searchable = {**BASE, "x": value}
    # Past every check of form and equality: only the summary schema is left, which has no x.
    assert problem(rfc8785.dumps(searchable), searchable) is Code.INVALID_LEAF


def test_a_summary_relay_could_publish_passes() -> None:
    assert problem(rfc8785.dumps(SUMMARY), SUMMARY) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("node", {"role": "distributor", "id": "<script>alert(1)</script>"}),
        ("node", {"role": "gateway", "id": "d1"}),
        ("requests", -1),
        ("bytes", -5),
        ("requests", True),
        ("requests", 12.0),
        ("outcomes", {"ok": 10, "teapot": 2}),
        ("signals", {"playback_slow": -1}),
        ("region", "eu"),
        ("ttfb_us", {"values": [20_000], "counts": [-3]}),
        ("ttfb_us", {"values": [20_000]}),
        ("extra", 1),
    ],
)
def test_signed_content_outside_the_summary_schema_is_invalid(field: str, value: Any) -> None:
    content = {**SUMMARY, field: value}
    source = {**content, "att": {"leaf": rfc8785.dumps(content).decode(), "n": 1, "proof": []}}
    found = check_summary(source, read_summary(source), 1, leaf_hash(rfc8785.dumps(content)), None)
    assert found is not None and found[0] is Code.INVALID_LEAF
    assert found[1].startswith(f"signed leaf violates the summary schema at {field}")
    assert "<script>" not in found[1]


@pytest.mark.parametrize(
    ("leaf", "searchable"),
    [
        # orjson writes these bytes for the stored fields, but RFC 8785 would not.
        (b'{"i":0,"origin":"o","seq":0,"x":1e+16}', {**BASE, "x": 1e16}),
        (b'{"i":0,"origin":"o","seq":0,"x":9007199254740993}', {**BASE, "x": 2**53 + 1}),
        # RFC 8785 sorts keys by UTF-16 code units, where U+1F600 (D83D DE00) comes before
        # U+FB01; orjson sorts by code point, the other way round.
        (
            '{"i":0,"origin":"o","seq":0,"\ufb01":2,"\U0001f600":1}'.encode(),
            {**BASE, "\ufb01": 2, "\U0001f600": 1},
        ),
        (b'{"i":0,"origin":"o","seq":0,"x":1,"x":1}', {**BASE, "x": 1}),
        (b'{"i":0, "origin":"o","seq":0}', {**BASE}),
    ],
)
def test_non_canonical_leaves_are_caught(leaf: bytes, searchable: dict[str, Any]) -> None:
    assert problem(leaf, searchable) is Code.NON_CANONICAL


@pytest.mark.parametrize(
    ("signed", "stored"),
    [(True, 1), (1, "1"), (None, float("nan")), ({"a": 1}, {"a": 1, "b": 0}), ([1, 2], [2, 1])],
)
def test_stored_fields_must_equal_the_leaf_exactly(signed: Any, stored: Any) -> None:
    leaf = rfc8785.dumps({**BASE, "x": signed})
    assert problem(leaf, {**BASE, "x": stored}) is Code.LEAF_MISMATCH


def test_inclusion_is_checked_before_the_fields() -> None:
    leaf = rfc8785.dumps({**BASE, "x": 1})
    source = {**BASE, "x": 1, "att": {"leaf": leaf.decode(), "n": 2, "proof": []}}
    assert check_summary(source, read_summary(source), 2, leaf_hash(leaf), None) == (
        Code.BAD_INCLUSION_PROOF,
        "leaf 0 and its proof do not lead to the signed root (n = 2)",
    )


def test_rebuilt_tree_accepts_exactly_the_audit_paths() -> None:
    leaves = [rfc8785.dumps({**SUMMARY, "i": i}) for i in range(5)]
    hashes = [leaf_hash(leaf) for leaf in leaves]
    tree = BatchTree(hashes)
    assert tree.root == root(leaves)
    for i, path in enumerate(inclusion_proofs(hashes)):
        proof = [base64.b64encode(p).decode() for p in path]
        source = {**SUMMARY, "i": i, "att": {"leaf": leaves[i].decode(), "n": 5, "proof": proof}}
        for candidate in (None, tree):
            assert check_summary(source, read_summary(source), 5, tree.root, candidate) is None
        # The same proof with the unused bits of its last base64 digit set decodes to the same
        # bytes in lenient decoders; both paths refuse it.
        last = proof[-1]
        digit = ALPHABET.index(last[-2]) ^ 1  # the lowest of its 6 bits is past the 256th
        lenient = last[:-2] + ALPHABET[digit] + last[-1]
        assert base64.b64decode(lenient) == base64.b64decode(last)
        source["att"]["proof"] = [*proof[:-1], lenient]
        for candidate in (None, tree):
            assert check_summary(source, read_summary(source), 5, tree.root, candidate) == (
                Code.BAD_INCLUSION_PROOF,
                f"leaf {i} and its proof do not lead to the signed root (n = 5)",
            )


# -- document format 2: `att.leaf_hash`, the leaf being the searchable fields ----------------------


def problem_v2(
    searchable: dict[str, Any], signed: bytes | None = None, stated: object = None
) -> Code | None:
    """Check a one-leaf batch in document format 2 whose root is the hash of ``signed`` (default:
    the RFC 8785 form of ``searchable``); the document states that hash unless ``stated`` is
    given. Both ways of checking inclusion must agree."""
    signed = rfc8785.dumps(searchable) if signed is None else signed
    root = leaf_hash(signed)
    claimed = base64.b64encode(root).decode() if stated is None else stated
    source = {**searchable, "att": {"leaf_hash": claimed, "n": 1, "proof": []}}
    summary = read_summary(source)
    found = {check_summary(source, summary, 1, root, tree) for tree in (None, BatchTree([root]))}
    assert len(found) == 1, found
    (result,) = found
    return None if result is None else result[0]


def test_format_2_summary_relay_could_publish_passes() -> None:
    assert problem_v2(SUMMARY) is None


@pytest.mark.parametrize(
    "value",
    [1e16, 0.5, 2**53 - 1, -(2**53 - 1), "é", "\u2028", "\U0001f600", None, [1.5, {"b": 1e-7}]],
)
def test_format_2_leaf_is_the_rfc8785_form_whatever_path_it_takes(value: object) -> None:
    # Past inclusion and equality: only the summary schema is left, which has no x.
    assert problem_v2({**BASE, "x": value}) is Code.INVALID_LEAF


@pytest.mark.parametrize(
    ("signed", "stored"),
    [
        (12, 13),
        (True, 1),
        (1, "1"),
        ({"a": 1}, {"a": 1, "b": 0}),
        ([1, 2], [2, 1]),
        # No RFC 8785 form at all: they cannot be the signed leaf.
        (None, float("nan")),
        (1, 2**53 + 1),
    ],
)
def test_format_2_changed_fields_are_leaf_mismatch(signed: Any, stored: Any) -> None:
    """The proof authenticates the stated leaf hash; fields that do not hash to it differ from
    the signed leaf, exactly as a stored leaf would show (format 1: `leaf_mismatch` too)."""
    leaf = rfc8785.dumps({**BASE, "x": signed})
    assert problem_v2({**BASE, "x": stored}, signed=leaf) is Code.LEAF_MISMATCH
    assert problem(leaf, {**BASE, "x": stored}) is Code.LEAF_MISMATCH


def test_format_2_signed_leaf_must_be_the_canonical_form() -> None:
    # A signer that wrote the fields with white space signed another leaf than these fields.
    searchable = {**BASE, "x": 1}
    assert problem_v2(searchable, signed=b'{"i":0, "origin":"o","seq":0,"x":1}') is (
        Code.LEAF_MISMATCH
    )


def test_format_2_restated_leaf_hash_is_bad_inclusion_proof() -> None:
    """Fields changed and the leaf hash restated to match them: the proof no longer leads to
    the signed root (format 1: the leaf restated, the same code)."""
    changed = {**SUMMARY, "requests": 13}
    restated = base64.b64encode(leaf_hash(rfc8785.dumps(changed))).decode()
    signed = rfc8785.dumps(SUMMARY)
    assert problem_v2(changed, signed=signed, stated=restated) is Code.BAD_INCLUSION_PROOF
    source = {**changed, "att": {"leaf": rfc8785.dumps(changed).decode(), "n": 1, "proof": []}}
    found = check_summary(source, read_summary(source), 1, leaf_hash(signed), None)
    assert found is not None and found[0] is Code.BAD_INCLUSION_PROOF


@pytest.mark.parametrize(
    "stated",
    [
        "not base64",
        base64.b64encode(bytes(31)).decode(),
        # The unused bits of the last digit set: the same bytes to a lenient decoder.
        base64.b64encode(bytes(32)).decode()[:-2] + "B=",
        7,
    ],
)
def test_format_2_malformed_leaf_hash_is_bad_inclusion_proof(stated: object) -> None:
    assert problem_v2(SUMMARY, stated=stated) is Code.BAD_INCLUSION_PROOF


def test_summary_without_leaf_or_leaf_hash_is_bad_inclusion_proof() -> None:
    source = {**SUMMARY, "att": {"n": 1, "proof": []}}
    assert check_summary(source, read_summary(source), 1, leaf_hash(b"x"), None) == (
        Code.BAD_INCLUSION_PROOF,
        "summary document has no att.leaf or att.leaf_hash string",
    )
