"""Checking summary documents against their signed batch (DESIGN §5.2, §5.6).

A summary document carries its RFC 9162 inclusion proof (`att.proof`, leaf to root) and either
the signed leaf itself (`att.leaf`, document format 1) or its leaf hash (`att.leaf_hash`,
format 2, the leaf being `JCS({"origin", "seq", "i", ...summary fields})` of the searchable
fields). The leaf, or the leaf hash, is trusted only once the proof leads from it to the root of a
verified batch header. Then the searchable fields must be the leaf exactly: equal to the stored
leaf, or, in format 2, written as RFC 8785 they must hash to the proven leaf hash. Either way a
changed searchable field is `leaf_mismatch` (the proof still authenticates what was signed) and a
changed leaf or leaf hash is `bad_inclusion_proof`. Last, the leaf's content must be a summary relay
could have published: the summary schema (relay.sinks.documents.LeafContent,
`schemas/summary-document.schema.json`), node ids of `[A-Za-z0-9:._-]`, counts in
[0, 2^53 − 1], known outcome and signal names. A registered key signing a node id such as
`<script>…` or a negative count is `invalid_leaf`, not verified data.

Two costs are avoided in the common case. When a batch's summaries are all present, the tree is
rebuilt from their leaf hashes once (BatchTree); if its root is the signed one, each proof only
has to equal the leaf's audit path. Otherwise each proof is hashed up to the root on its own.

A stored leaf must also be RFC 8785 canonical (format 2 has no stored leaf: the verifier writes
it, canonically). Both are decided by writing the searchable fields with canonical_json
(relay.attest.canonical), the one place that knows when orjson's bytes are RFC 8785's: plain
values take orjson, anything else `rfc8785` (~0.3 ms for a summary with histograms, which alone
would cap verification near 3 000 summaries/s).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from relay.attest.canonical import canonical_json, is_canonical, strict_loads
from relay.attest.errors import NonCanonicalError
from relay.attest.merkle import (
    HASH_SIZE,
    inclusion_proofs,
    leaf_hash,
    root_from_leaf_hashes,
    verify_inclusion,
)
from relay.core.b64 import b64decode, b64encode
from relay.core.numbers import is_int
from relay.sinks.documents import LeafContent
from relay.verify.findings import Code

__all__ = ["BatchTree", "Problem", "SummaryLeaf", "check_summary", "read_summary", "same_json"]

_MISSING = object()
_LEAF_CONTENT = TypeAdapter(LeafContent)


Problem = tuple[Code, str]


@dataclass(frozen=True, slots=True)
class SummaryLeaf:
    """What a summary document claims (position, leaf hash, proof), or why it cannot say."""

    i: int | None
    data: bytes | None  # the stored leaf (format 1); None in format 2, whose fields are the leaf
    hash: bytes | None  # of `data`, or the stored `att.leaf_hash`
    proof: object  # att.proof as stored
    problem: Problem | None


def read_summary(source: Mapping[str, Any]) -> SummaryLeaf:
    """The position, leaf (hash) and proof of a summary document's `_source`, in either format."""
    i = source.get("i")
    if not is_int(i) or i < 0:
        return SummaryLeaf(None, None, None, None, _unreadable("has no valid position i"))
    att = source.get("att")
    if not isinstance(att, dict):
        return SummaryLeaf(i, None, None, None, _unreadable("has no att object"))
    leaf, stated = att.get("leaf"), att.get("leaf_hash")
    if isinstance(leaf, str):
        try:
            data = leaf.encode("utf-8")
        except UnicodeEncodeError:
            return SummaryLeaf(i, None, None, None, (Code.NON_CANONICAL, "att.leaf is not Unicode"))
        return SummaryLeaf(i, data, leaf_hash(data), att.get("proof"), None)
    if isinstance(stated, str):
        digest = _decode_hash(stated)
        if digest is None:
            return SummaryLeaf(
                i, None, None, None, _unreadable("has an att.leaf_hash that is not a base64 hash")
            )
        return SummaryLeaf(i, None, digest, att.get("proof"), None)
    return SummaryLeaf(i, None, None, None, _unreadable("has no att.leaf or att.leaf_hash string"))


class BatchTree:
    """A batch's Merkle tree rebuilt from the leaves of its summaries (RFC 9162 §2.1).

    When its root is the signed root, every leaf is authenticated at its position, and a stored
    proof is valid exactly when it is that leaf's audit path (RFC 9162 §2.1.3.1) in standard
    base64: comparing strings then replaces hashing each proof up to the root.
    """

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self._hashes = list(leaf_hashes)
        self.root = root_from_leaf_hashes(self._hashes)
        self._paths = [[b64encode(h) for h in path] for path in inclusion_proofs(self._hashes)]

    def proves(self, leaf: SummaryLeaf) -> bool:
        i = leaf.i
        return (
            i is not None
            and i < len(self._hashes)
            and leaf.hash == self._hashes[i]
            and leaf.proof == self._paths[i]
        )


def check_summary(
    source: Mapping[str, Any], leaf: SummaryLeaf, n: int, root: bytes, tree: BatchTree | None
) -> Problem | None:
    """The first problem of a summary document against a verified header's ``n`` and ``root``.

    In order: position and `att` readable, inclusion of the leaf hash (by ``tree`` if it was
    rebuilt to ``root``, else by the RFC 9162 §2.1.3.2 algorithm), RFC 8785 form of a stored leaf,
    searchable fields equal to the leaf (format 2: hashing to the proven leaf hash), `att.n`
    equal to the header's, the leaf's content valid under the schema.
    """
    if leaf.problem is not None:
        return leaf.problem
    assert leaf.i is not None and leaf.hash is not None
    if tree is not None:
        included = tree.proves(leaf)
    else:
        proof = _decode_proof(leaf.proof)
        included = proof is not None and verify_inclusion(leaf.hash, leaf.i, n, proof, root)
    if not included:
        return (
            Code.BAD_INCLUSION_PROOF,
            f"leaf {leaf.i} and its proof do not lead to the signed root (n = {n})",
        )
    if leaf.data is not None:
        problem = _compare(source, leaf.data)
    else:
        problem = _compare_hash(source, leaf.hash)
    att_n = source["att"].get("n")
    if problem is None and (not is_int(att_n) or att_n != n):
        problem = (Code.LEAF_MISMATCH, f"att.n is {att_n!r}, the signed batch has n = {n}")
    return problem or _invalid_content(source)


def _invalid_content(source: Mapping[str, Any]) -> Problem | None:
    """The first way the leaf's content (here: the searchable fields, found equal to it) breaks
    the summary schema. The message names the field and the rule, never the value: a finding
    is shown on the lead's dashboard, and the value may be markup."""
    content = {key: value for key, value in source.items() if key != "att"}
    try:
        _LEAF_CONTENT.validate_python(content, strict=True)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(map(str, error["loc"])) or "leaf"
        return (
            Code.INVALID_LEAF,
            f"signed leaf violates the summary schema at {where}: {error['msg']}",
        )
    return None


def _unreadable(what: str) -> Problem:
    return (Code.BAD_INCLUSION_PROOF, f"summary document {what}")


def _compare(source: Mapping[str, Any], leaf: bytes) -> Problem | None:
    searchable = {key: value for key, value in source.items() if key != "att"}
    try:
        if canonical_json(searchable) == leaf:
            return None
    except NonCanonicalError:
        pass
    if not is_canonical(leaf):
        return (Code.NON_CANONICAL, "signed leaf is not RFC 8785 canonical JSON")
    signed = strict_loads(leaf)
    if not isinstance(signed, dict):
        return (Code.LEAF_MISMATCH, "signed leaf is not a JSON object")
    differing = sorted(
        key
        for key in signed.keys() | searchable.keys()
        if not same_json(signed.get(key, _MISSING), searchable.get(key, _MISSING))
    )
    if differing:
        return (Code.LEAF_MISMATCH, f"searchable fields {differing} differ from the signed leaf")
    return None


def _compare_hash(source: Mapping[str, Any], signed_hash: bytes) -> Problem | None:
    """Format 2: the searchable fields, written as RFC 8785, are the leaf whose hash the proof
    led to the signed root. Which field differs cannot be told without the leaf."""
    searchable = {key: value for key, value in source.items() if key != "att"}
    try:
        leaf = canonical_json(searchable)
    except NonCanonicalError:
        return (
            Code.LEAF_MISMATCH,
            "searchable fields have no RFC 8785 form, so they are not the signed leaf",
        )
    if leaf_hash(leaf) != signed_hash:
        return (
            Code.LEAF_MISMATCH,
            "searchable fields differ from the signed leaf: their RFC 8785 form does not hash "
            "to att.leaf_hash, which the proof leads to the signed root",
        )
    return None


def same_json(a: object, b: object) -> bool:
    """Equality of JSON values: numbers by value, but true is not 1 and "1" is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(same_json(value, b[key]) for key, value in a.items())
        )
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same_json, a, b))
    return type(a) is type(b) and a == b


def _decode_proof(proof: object) -> list[bytes] | None:
    if not isinstance(proof, list):
        return None
    hashes = []
    for item in proof:
        digest = _decode_hash(item)
        if digest is None:
            return None
        hashes.append(digest)
    return hashes


def _decode_hash(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        # Standard base64 has one spelling per hash (as BatchTree.proves requires too).
        digest = b64decode(text)
    except ValueError:
        return None
    if len(digest) != HASH_SIZE:
        return None
    return digest
