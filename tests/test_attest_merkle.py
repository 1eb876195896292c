"""RFC 9162 §2.1 Merkle trees: known vectors, exhaustive small trees, and properties.

The vectors are the RFC 6962 test data of certificate-transparency-go / Trillian, as kept in
github.com/transparency-dev/merkle proof/verify_test.go (leaves, roots, proofs).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.attest import merkle
from relay.attest.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    inclusion_proofs,
    leaf_hash,
    node_hash,
    root,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
LEAF_HASHES = [leaf_hash(leaf) for leaf in LEAVES]
# ROOTS[n - 1] is the root of LEAVES[:n].
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
EMPTY = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")

# (leaf index, tree size, audit path); the Go file numbers leaves from 1.
INCLUSION_VECTORS = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old size, new size, proof)
CONSISTENCY_VECTORS = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

OTHER_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def flipped(data: bytes, bit: int = 3) -> bytes:
    return bytes([data[0] ^ (1 << bit)]) + data[1:]


# --- reference implementation: the RFC's recursive definitions, verbatim ---------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 §2.1.1 over leaf hashes."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return node_hash(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 9162 §2.1.4.1."""
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_shape(m: int, n: int) -> tuple[str, ...] | None:
    """Which side each PATH(m, D[n]) element sits on, leaf first; None if m is not a leaf.

    An inclusion proof fixes only this shape, not the size: the same proof and root verify for
    every size with the same shape (leaf 0 of 3 and of 4, say), so only a size that changes the
    shape can be caught.
    """
    if not 0 <= m < n:
        return None
    if n == 1:
        return ()
    k = _k(n)
    if m < k:
        return (*(ref_shape(m, k) or ()), "right")
    return (*(ref_shape(m - k, n - k) or ()), "left")


def hashes(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


# --- known vectors --------------------------------------------------------------------------


def test_hash_domain_separation() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


def test_empty_tree_root() -> None:
    assert EMPTY_ROOT == EMPTY
    assert root([]) == EMPTY
    assert root_from_leaf_hashes([]) == EMPTY
    assert CompactRange().root() == EMPTY


@pytest.mark.parametrize("n", range(1, 9))
def test_roots_of_rfc6962_vectors(n: int) -> None:
    assert root(LEAVES[:n]) == ROOTS[n - 1]
    assert root_from_leaf_hashes(LEAF_HASHES[:n]) == ROOTS[n - 1]
    assert ref_mth(LEAF_HASHES[:n]) == ROOTS[n - 1]


def test_root_of_eight_leaves_literal() -> None:
    assert root(LEAVES).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_inclusion_proof_vectors(index: int, size: int, path: list[str]) -> None:
    proof = inclusion_proof(LEAF_HASHES[:size], index)
    assert [p.hex() for p in proof] == path
    assert verify_inclusion(LEAF_HASHES[index], index, size, proof, ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY_VECTORS)
def test_consistency_proof_vectors(old: int, new: int, path: list[str]) -> None:
    proof = consistency_proof(LEAF_HASHES[:new], old)
    assert [p.hex() for p in proof] == path
    assert verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof)


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_inclusion_vectors_reject_wrong_parameters(index: int, size: int, path: list[str]) -> None:
    proof = [bytes.fromhex(p) for p in path]
    leaf, good_root = LEAF_HASHES[index], ROOTS[size - 1]
    for wrong_index in (index - 1, index + 1, index ^ 2):
        assert not verify_inclusion(leaf, wrong_index, size, proof, good_root)
    for wrong_size in (size * 2, size // 2):
        assert not verify_inclusion(leaf, index, wrong_size, proof, good_root)
    assert not verify_inclusion(leaf, index, size, proof, EMPTY)
    assert not verify_inclusion(leaf, index, size, proof, OTHER_HASH)
    assert not verify_inclusion(leaf, index, size, [OTHER_HASH, *proof[1:]], good_root)


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY_VECTORS)
def test_consistency_vectors_reject_wrong_parameters(old: int, new: int, path: list[str]) -> None:
    proof = [bytes.fromhex(p) for p in path]
    r1, r2 = ROOTS[old - 1], ROOTS[new - 1]
    for wrong_old in (old - 1, old + 1, old ^ 2):
        assert not verify_consistency(wrong_old, new, r1, r2, proof)
    for wrong_new in (new * 2, new // 2):
        assert not verify_consistency(old, wrong_new, r1, r2, proof)
    assert not verify_consistency(old, new, r2, r1, proof)
    assert not verify_consistency(old, new, r1, r2, [proof[0], *proof])


# --- every proof of every tree up to 8 leaves -----------------------------------------------


def _inclusion_tamperings(
    leaf: bytes, index: int, size: int, proof: list[bytes], good_root: bytes
) -> list[tuple[bytes, int, int, list[bytes], bytes]]:
    cases = [
        (flipped(leaf), index, size, proof, good_root),
        (leaf, index, size, proof, flipped(good_root)),
        (leaf, index, size, [*proof, good_root], good_root),
        (leaf, index, size, [good_root, *proof], good_root),
    ]
    cases += [(leaf, i, size, proof, good_root) for i in range(-1, size + 1) if i != index]
    shape = ref_shape(index, size)
    cases += [
        (leaf, index, s, proof, good_root)
        for s in range(0, 17)
        if s != size and ref_shape(index, s) != shape
    ]
    for k in range(len(proof)):
        bad = list(proof)
        bad[k] = flipped(bad[k])
        cases.append((leaf, index, size, bad, good_root))
        cases.append((leaf, index, size, proof[:k] + proof[k + 1 :], good_root))
    return cases


def test_a_proof_fixes_the_shape_of_the_path_not_the_tree_size() -> None:
    proof = inclusion_proof(LEAF_HASHES[:3], 0)
    assert verify_inclusion(LEAF_HASHES[0], 0, 4, proof, ROOTS[2])
    assert not verify_inclusion(LEAF_HASHES[0], 0, 5, proof, ROOTS[2])


@pytest.mark.parametrize("size", range(1, 9))
def test_every_inclusion_proof_round_trips_and_resists_tampering(size: int) -> None:
    tree = LEAF_HASHES[:size]
    all_proofs = inclusion_proofs(tree)
    for index in range(size):
        proof = inclusion_proof(tree, index)
        assert proof == all_proofs[index] == ref_path(index, tree)
        assert verify_inclusion(tree[index], index, size, proof, ROOTS[size - 1])
        for case in _inclusion_tamperings(tree[index], index, size, proof, ROOTS[size - 1]):
            assert not verify_inclusion(*case), case


def _consistency_tamperings(
    old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes]
) -> list[tuple[int, int, bytes, bytes, list[bytes]]]:
    cases = [
        (old, new, flipped(r1), r2, proof),
        (old, new, r1, flipped(r2), proof),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [*proof, r2]),
        (old, new, r1, r2, [r1, *proof]),
        (old, new, r1, r2, [r2, *proof]),
    ]
    if proof:
        cases.append((old, new, r2, r1, proof))
        cases.append((old, new, r1, r2, []))
    for k in range(len(proof)):
        bad = list(proof)
        bad[k] = flipped(bad[k], 4)
        cases.append((old, new, r1, r2, bad))
        cases.append((old, new, r1, r2, proof[:k] + proof[k + 1 :]))
    return cases


@pytest.mark.parametrize("new", range(1, 9))
def test_every_consistency_proof_round_trips_and_resists_tampering(new: int) -> None:
    tree = LEAF_HASHES[:new]
    for old in range(1, new + 1):
        proof = consistency_proof(tree, old)
        assert proof == ref_subproof(old, tree, True)
        r1, r2 = ROOTS[old - 1], ROOTS[new - 1]
        assert verify_consistency(old, new, r1, r2, proof)
        for case in _consistency_tamperings(old, new, r1, r2, proof):
            assert not verify_consistency(*case), case


def test_consistency_proof_across_sizes_is_not_accepted_for_an_unrelated_root() -> None:
    proof = consistency_proof(LEAF_HASHES, 3)
    assert not verify_consistency(3, 8, root([b"x", b"y", b"z"]), ROOTS[7], proof)


def test_consistency_edges() -> None:
    assert consistency_proof(LEAF_HASHES, 0) == []
    assert consistency_proof(LEAF_HASHES, 8) == []
    assert verify_consistency(0, 0, EMPTY, EMPTY, [])
    assert verify_consistency(0, 5, EMPTY, ROOTS[4], [])
    assert not verify_consistency(0, 5, ROOTS[0], ROOTS[4], [])
    assert not verify_consistency(0, 5, EMPTY, ROOTS[4], [EMPTY])
    assert verify_consistency(3, 3, ROOTS[2], ROOTS[2], [])
    assert not verify_consistency(3, 3, ROOTS[2], ROOTS[3], [])
    assert not verify_consistency(3, 3, ROOTS[2], ROOTS[2], [ROOTS[2]])
    assert not verify_consistency(4, 3, ROOTS[3], ROOTS[2], [])
    assert not verify_consistency(-1, 3, EMPTY, ROOTS[2], [])


def test_inclusion_edges() -> None:
    assert inclusion_proof(LEAF_HASHES[:1], 0) == []
    assert verify_inclusion(LEAF_HASHES[0], 0, 1, [], ROOTS[0])
    assert not verify_inclusion(LEAF_HASHES[0], 0, 0, [], EMPTY)
    assert not verify_inclusion(LEAF_HASHES[0], 1, 1, [], ROOTS[0])
    assert inclusion_proofs([]) == []


@pytest.mark.parametrize("index", [-1, 8])
def test_inclusion_proof_rejects_index_out_of_range(index: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(LEAF_HASHES, index)


@pytest.mark.parametrize("old", [-1, 9])
def test_consistency_proof_rejects_old_size_out_of_range(old: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        consistency_proof(LEAF_HASHES, old)


def test_ten_thousand_leaves_are_fast() -> None:
    leaves = [i.to_bytes(8, "big") for i in range(10_000)]
    start = time.perf_counter()
    tree_root = root(leaves)
    elapsed = time.perf_counter() - start
    # O(n) is ~10-30 ms even on a slow machine; a quadratic or recursive-copy build is seconds.
    assert elapsed < 0.5
    assert tree_root == ref_mth([leaf_hash(leaf) for leaf in leaves])


def test_inclusion_proofs_of_a_large_batch_are_fast() -> None:
    tree = hashes(10_000)
    start = time.perf_counter()
    proofs = inclusion_proofs(tree)
    assert time.perf_counter() - start < 1.0
    tree_root = root_from_leaf_hashes(tree)
    for index in (0, 1, 4095, 8191, 8192, 9998, 9999):
        assert proofs[index] == inclusion_proof(tree, index)
        assert verify_inclusion(tree[index], index, len(tree), proofs[index], tree_root)


# --- CompactRange ---------------------------------------------------------------------------


def test_compact_range_matches_vectors_at_every_size() -> None:
    compact = CompactRange()
    for n, h in enumerate(LEAF_HASHES, start=1):
        compact.append(h)
        assert compact.size == n
        assert compact.root() == ROOTS[n - 1]
        assert len(compact.to_list()) == n.bit_count()


@given(st.integers(min_value=0, max_value=300))
def test_compact_range_root_equals_full_root(n: int) -> None:
    tree = hashes(n)
    compact = CompactRange()
    for h in tree:
        compact.append(h)
    assert compact.size == n
    assert compact.root() == root_from_leaf_hashes(tree) == ref_mth(tree)


@given(st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=40))
def test_compact_range_survives_persistence(n: int, more: int) -> None:
    tree = hashes(n + more)
    compact = CompactRange()
    for h in tree[:n]:
        compact.append(h)
    restored = CompactRange.from_list(compact.size, compact.to_list())
    for h in tree[n:]:
        restored.append(h)
    assert restored.size == n + more
    assert restored.root() == root_from_leaf_hashes(tree)


def test_compact_range_to_list_is_a_copy() -> None:
    compact = CompactRange()
    compact.append(LEAF_HASHES[0])
    compact.to_list().clear()
    assert compact.root() == ROOTS[0]


@pytest.mark.parametrize(
    ("size", "stored"),
    [
        (-1, []),
        (3, [ROOTS[1]]),
        (2, [ROOTS[1], ROOTS[0]]),
        (1, [b"short"]),
    ],
)
def test_compact_range_from_list_rejects_inconsistent_state(size: int, stored: list[bytes]) -> None:
    with pytest.raises(ValueError):
        CompactRange.from_list(size, stored)


def test_compact_range_rejects_a_leaf_that_is_not_a_hash() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange().append(b"leaf data, not its hash")


# --- properties -----------------------------------------------------------------------------


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(min_value=1, max_value=300))
    return size, draw(st.integers(min_value=0, max_value=size - 1))


@given(size_and_index())
def test_inclusion_proofs_verify_for_random_trees(case: tuple[int, int]) -> None:
    size, index = case
    tree = hashes(size)
    proof = inclusion_proof(tree, index)
    tree_root = root_from_leaf_hashes(tree)
    assert proof == ref_path(index, tree)
    assert verify_inclusion(tree[index], index, size, proof, tree_root)
    for other_size in (size - 1, size + 1, size * 2):
        same_shape = ref_shape(index, other_size) == ref_shape(index, size)
        assert verify_inclusion(tree[index], index, other_size, proof, tree_root) == same_shape
    other = (index + 1) % size
    if other != index:
        assert not verify_inclusion(tree[index], other, size, proof, tree_root)


@given(size_and_index())
def test_consistency_proofs_verify_for_random_trees(case: tuple[int, int]) -> None:
    new, old_index = case
    old = old_index + 1
    tree = hashes(new)
    proof = consistency_proof(tree, old)
    r1, r2 = root_from_leaf_hashes(tree[:old]), root_from_leaf_hashes(tree)
    assert proof == ref_subproof(old, tree, True)
    assert verify_consistency(old, new, r1, r2, proof)
    if old < new:
        assert not verify_consistency(old, new, r1, flipped(r2), proof)
        assert not verify_consistency(old, new, flipped(r1), r2, proof)


def test_module_exports_match_the_package() -> None:
    import relay.attest

    for name in merkle.__all__:
        assert getattr(relay.attest, name) is getattr(merkle, name)
