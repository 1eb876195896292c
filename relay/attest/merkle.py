"""Merkle hash trees as defined by RFC 9162 §2.1 (the RFC 6962 tree, unchanged).

Leaves hash as SHA-256(0x00 ‖ data), interior nodes as SHA-256(0x01 ‖ left ‖ right); a tree of
n > 1 leaves splits at the largest power of two k < n. Every function here is pure.

Bottom-up pairing in which an unpaired last node is carried up unchanged builds exactly the same
tree as the RFC's recursive split, and does so in O(n) without recursion; the functions below rely
on that equivalence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "consistency_proof",
    "inclusion_proof",
    "inclusion_proofs",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
#: MTH({}) = SHA-256() (RFC 9162 §2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """MTH({d0}) = SHA-256(0x00 ‖ d0) (RFC 9162 §2.1.1)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right) (RFC 9162 §2.1.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _parent_level(level: Sequence[bytes]) -> list[bytes]:
    # Inlined node_hash: this loop is the whole cost of a batch root.
    sha256 = hashlib.sha256
    # An odd last node has no partner; it is carried up below.
    pairs = zip(level[::2], level[1::2], strict=False)
    parents = [sha256(b"\x01" + left + right).digest() for left, right in pairs]
    if len(level) % 2:
        parents.append(level[-1])
    return parents


def _levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """All levels of the tree, leaves first and the single root last (n ≥ 1)."""
    levels = [list(leaf_hashes)]
    while len(levels[-1]) > 1:
        levels.append(_parent_level(levels[-1]))
    return levels


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) from the leaf hashes (RFC 9162 §2.1.1); SHA-256() for no leaves."""
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        level = _parent_level(level)
    return level[0]


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over the leaf data (RFC 9162 §2.1.1)."""
    return root_from_leaf_hashes([leaf_hash(leaf) for leaf in leaves])


def _audit_path(levels: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    path = []
    for level in levels[:-1]:
        sibling = index ^ 1
        # A last node without a sibling is carried up unchanged and adds nothing to the path.
        if sibling < len(level):
            path.append(level[sibling])
        index >>= 1
    return path


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]), the audit path from the leaf up to the root (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < len(leaf_hashes):
        raise ValueError(f"leaf index {index} is outside a tree of size {len(leaf_hashes)}")
    return _audit_path(_levels(leaf_hashes), index)


def inclusion_proofs(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """The audit path of every leaf, in leaf order (RFC 9162 §2.1.3.1).

    Builds the tree once, so proving a whole batch costs O(n log n) instead of the O(n²) of
    calling inclusion_proof for each leaf.
    """
    if not leaf_hashes:
        return []
    levels = _levels(leaf_hashes)
    return [_audit_path(levels, i) for i in range(len(leaf_hashes))]


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Check an inclusion proof with the algorithm of RFC 9162 §2.1.3.2, step by step."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(old_size, D[n]) = SUBPROOF(old_size, D[n], true) (RFC 9162 §2.1.4.1).

    The RFC's recursion is unrolled: each step narrows to one half and records the other half's
    root, and the recorded roots come out innermost first, as the recursion would emit them.
    Empty for old_size 0 or n, where there is nothing to prove.
    """
    n = len(leaf_hashes)
    if not 0 <= old_size <= n:
        raise ValueError(f"old size {old_size} is outside 0..{n}")
    if old_size in (0, n):
        return []
    m, lo, hi = old_size, 0, n
    is_old_tree = True  # the RFC's flag b: D[lo:hi] is still the whole old tree
    outer: list[bytes] = []
    while m != hi - lo:
        k = _largest_power_of_two_below(hi - lo)
        if m <= k:
            outer.append(root_from_leaf_hashes(leaf_hashes[lo + k : hi]))
            hi = lo + k
        else:
            outer.append(root_from_leaf_hashes(leaf_hashes[lo : lo + k]))
            lo, m, is_old_tree = lo + k, m - k, False
    # SUBPROOF(m, D[m], true) = {} (the verifier knows the old root); with false, MTH(D[m]).
    inner = [] if is_old_tree else [root_from_leaf_hashes(leaf_hashes[lo:hi])]
    return inner + outer[::-1]


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Check a consistency proof with the algorithm of RFC 9162 §2.1.4.2, step by step.

    The RFC defines the algorithm for 0 < old_size < new_size. At the edges: equal sizes need an
    empty proof and equal roots; old_size 0 needs an empty proof and the empty-tree root as
    old_root (any tree extends the empty one).
    """
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162 §2.1.1: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """Append-only frontier of a Merkle tree: the roots of its maximal perfect subtrees.

    A tree of n leaves decomposes, left to right, into perfect subtrees whose sizes are the set
    bits of n (the compact range [0, n) of transparency-dev/merkle); folding their roots from the
    right gives MTH(D[n]) (RFC 9162 §2.1.1). So a log can extend its tree and sign checkpoints while
    keeping at most log2(n) + 1 hashes instead of every leaf.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf, given its leaf hash."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf_hash)}")
        h = leaf_hash
        # Each trailing 1-bit of the old size is a perfect subtree the new leaf now completes.
        s = self._size
        while s & 1:
            h = node_hash(self._hashes.pop(), h)
            s >>= 1
        self._hashes.append(h)
        self._size += 1

    def root(self) -> bytes:
        """MTH of every leaf appended so far; equals root_from_leaf_hashes of them all."""
        if not self._hashes:
            return EMPTY_ROOT
        r = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            r = node_hash(h, r)
        return r

    def to_list(self) -> list[bytes]:
        """The frontier hashes, largest subtree first; persist together with ``size``."""
        return list(self._hashes)

    @classmethod
    def from_list(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Restore a range saved with ``size`` and ``to_list()``; ValueError if they disagree."""
        if size < 0:
            raise ValueError(f"size must not be negative, got {size}")
        if len(hashes) != size.bit_count():
            raise ValueError(
                f"a range of size {size} has {size.bit_count()} hashes, got {len(hashes)}"
            )
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError(f"every hash must be {HASH_SIZE} bytes")
        compact = cls()
        compact._size = size
        compact._hashes = list(hashes)
        return compact
