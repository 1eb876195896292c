"""The witness's decision on a new checkpoint, every branch, over real Merkle trees."""

from __future__ import annotations

import pytest

from relay.attest.checkpoint import Checkpoint
from relay.attest.merkle import consistency_proof, leaf_hash, root_from_leaf_hashes
from relay.verify.judge import Cosign, Inconsistent, Seen, Unchanged, judge, needs_proof

LEAVES = [leaf_hash(bytes([i])) for i in range(8)]
FORK = [*LEAVES[:3], leaf_hash(b"other"), *LEAVES[4:]]


def checkpoint(leaves: list[bytes], size: int) -> Checkpoint:
    return Checkpoint("o", size, root_from_leaf_hashes(leaves[:size]), "")


def seen(leaves: list[bytes], size: int) -> Seen:
    return Seen(size, root_from_leaf_hashes(leaves[:size]))


def test_first_checkpoint_is_cosigned() -> None:
    new = checkpoint(LEAVES, 5)
    assert not needs_proof(new, None)
    assert judge(new, None, None, None) == Cosign()


def test_a_larger_tree_with_a_valid_proof_is_cosigned() -> None:
    new, last = checkpoint(LEAVES, 7), seen(LEAVES, 3)
    assert needs_proof(new, last)
    assert judge(new, last, None, consistency_proof(LEAVES[:7], 3)) == Cosign()


def test_a_larger_tree_that_does_not_extend_the_last_is_inconsistent() -> None:
    # The fork presents its own, internally valid proof: it cannot link to the cosigned root.
    new, last = checkpoint(FORK, 7), seen(LEAVES, 5)
    verdict = judge(new, last, None, consistency_proof(FORK[:7], 5))
    assert isinstance(verdict, Inconsistent) and "does not verify" in verdict.message


def test_the_same_tree_again_is_unchanged_and_another_of_that_size_is_a_fork() -> None:
    last = seen(LEAVES, 5)
    assert judge(checkpoint(LEAVES, 5), last, last.root, None) == Unchanged()
    verdict = judge(checkpoint(FORK, 5), last, last.root, None)
    assert isinstance(verdict, Inconsistent) and "two different trees of size 5" in verdict.message
    # Also for an older size the witness cosigned earlier.
    older = seen(LEAVES, 4)
    verdict = judge(checkpoint(FORK, 4), last, older.root, None)
    assert isinstance(verdict, Inconsistent)


def test_a_smaller_tree_not_cosigned_before_means_the_log_shrank() -> None:
    verdict = judge(checkpoint(LEAVES, 2), seen(LEAVES, 5), None, None)
    assert isinstance(verdict, Inconsistent) and "rolled back" in verdict.message


def test_a_larger_tree_needs_a_proof() -> None:
    with pytest.raises(ValueError):
        judge(checkpoint(LEAVES, 6), seen(LEAVES, 5), None, None)
