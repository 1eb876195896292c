"""What a witness makes of a new checkpoint, given what it saw before: a pure function.

Kept apart from fetching and storing so every branch can be tested without a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.attest._b64 import b64encode
from relay.attest.checkpoint import Checkpoint
from relay.attest.merkle import verify_consistency

__all__ = ["Cosign", "Inconsistent", "Seen", "Unchanged", "Verdict", "judge", "needs_proof"]


@dataclass(frozen=True, slots=True)
class Seen:
    """A tree the witness cosigned: its size and root."""

    size: int
    root: bytes


@dataclass(frozen=True, slots=True)
class Cosign:
    """Consistent with everything seen, and larger (or the first): cosign it."""


@dataclass(frozen=True, slots=True)
class Unchanged:
    """A tree the witness cosigned already (no new statement to make)."""


@dataclass(frozen=True, slots=True)
class Inconsistent:
    """Not consistent with what the witness saw: `inconsistent_checkpoint`."""

    message: str


Verdict = Cosign | Unchanged | Inconsistent


def needs_proof(new: Checkpoint, last: Seen | None) -> bool:
    """True if judging ``new`` needs a consistency proof from ``last.size`` to ``new.size``."""
    return last is not None and new.size > last.size


def judge(
    new: Checkpoint,
    last: Seen | None,
    cosigned_root: bytes | None,
    proof: Sequence[bytes] | None,
) -> Verdict:
    """Judge ``new`` given the largest tree cosigned so far (``last``), the root of the tree of
    ``new.size`` cosigned earlier if any (``cosigned_root``) and, when ``needs_proof``, the
    operator's consistency proof from ``last.size``.

    A log only grows: a checkpoint of a size already cosigned must have the same root (else the
    operator shows two trees of one size), one smaller than the largest cosigned must be one the
    witness cosigned (else the log shrank), and one larger must come with a valid proof.
    """
    if cosigned_root is not None:
        if cosigned_root == new.root:
            return Unchanged()
        return Inconsistent(
            f"two different trees of size {new.size}: root {_b64(new.root)} now, "
            f"{_b64(cosigned_root)} cosigned before (a fork shown to different parties)"
        )
    if last is None:
        return Cosign()  # the first checkpoint seen of this origin: trust on first use
    if new.size < last.size:
        return Inconsistent(
            f"tree of size {new.size} presented after one of size {last.size} was cosigned: "
            "the log was rolled back or forked"
        )
    if new.size == last.size:
        # Unreachable with a store that keeps every cosigned tree, but judge stands alone.
        return Unchanged() if new.root == last.root else Inconsistent("different root, same size")
    if proof is None:
        raise ValueError("a consistency proof is needed to judge a larger tree")
    if not verify_consistency(last.size, new.size, last.root, new.root, proof):
        return Inconsistent(
            f"consistency proof from size {last.size} (root {_b64(last.root)}) to size "
            f"{new.size} (root {_b64(new.root)}) does not verify: the new tree does not extend "
            "the one cosigned"
        )
    return Cosign()


def _b64(root: bytes) -> str:
    return b64encode(root)
