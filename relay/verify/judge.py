"""What a new checkpoint means given an earlier one of the same log: a pure function.

The witness judges each checkpoint it polls against the trees it cosigned; `relay verify
--operator-proofs` judges an operator's current checkpoint against one the auditor saved. Kept
apart from fetching and storing so every branch can be tested without a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.attest.checkpoint import Checkpoint
from relay.attest.merkle import verify_consistency
from relay.core.b64 import b64encode

__all__ = ["Cosign", "Inconsistent", "Seen", "Unchanged", "Verdict", "judge", "needs_proof"]


@dataclass(frozen=True, slots=True)
class Seen:
    """A tree seen earlier (cosigned by the witness, or saved by an auditor): size and root."""

    size: int
    root: bytes


@dataclass(frozen=True, slots=True)
class Cosign:
    """Consistent with everything seen, and larger (or the first): a witness cosigns it."""


@dataclass(frozen=True, slots=True)
class Unchanged:
    """A tree seen already (a witness has no new statement to make)."""


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
    seen_root: bytes | None,
    proof: Sequence[bytes] | None,
) -> Verdict:
    """Judge ``new`` given the largest tree seen so far (``last``), the root of the tree of
    ``new.size`` seen earlier if any (``seen_root``) and, when ``needs_proof``, the
    operator's consistency proof from ``last.size``.

    A log only grows: a checkpoint of a size already seen must have the same root (else the
    operator shows two trees of one size), one smaller than the largest seen must be one seen
    before (else the log shrank), and one larger must come with a valid proof.
    """
    if seen_root is not None:
        if seen_root == new.root:
            return Unchanged()
        return Inconsistent(
            f"two different trees of size {new.size}: root {b64encode(new.root)} now, "
            f"{b64encode(seen_root)} seen before (a fork shown to different parties)"
        )
    if last is None:
        return Cosign()  # the first checkpoint seen of this origin: trust on first use
    if new.size < last.size:
        return Inconsistent(
            f"tree of size {new.size} presented after one of size {last.size} was seen: "
            "the log was rolled back or forked"
        )
    if new.size == last.size:
        # Unreachable with a store that keeps every cosigned tree, but judge stands alone.
        return Unchanged() if new.root == last.root else Inconsistent("different root, same size")
    if proof is None:
        raise ValueError("a consistency proof is needed to judge a larger tree")
    if not verify_consistency(last.size, new.size, last.root, new.root, proof):
        return Inconsistent(
            f"consistency proof from size {last.size} (root {b64encode(last.root)}) to size "
            f"{new.size} (root {b64encode(new.root)}) does not verify: the new tree does not "
            "extend the one seen"
        )
    return Cosign()
