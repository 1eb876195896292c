"""Checkpoints an auditor saved earlier (DESIGN §5.5), opened with the registry's keys.

A saved checkpoint says "the log of batch messages of <origin> had <size> leaves and <root>". It is
checked later, while the verifier rebuilds that log from the documents it reads: the rebuilt tree
at <size> must have <root>. Rebuilding the prefix is the direct form of what an RFC 9162 §2.1.4
consistency proof from the saved size to the current one shows, so a truncated log (fewer than
<size> batches), a rewritten one (different root at <size>) and a fork all fail it.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.attest.checkpoint import Checkpoint, open_checkpoint
from relay.attest.errors import CheckpointError
from relay.attest.keys import VerifierKey
from relay.verify.errors import SavedCheckpointError
from relay.verify.keyring import Keyring

__all__ = ["SavedCheckpoint", "open_saved_checkpoint"]


@dataclass(frozen=True, slots=True)
class SavedCheckpoint:
    checkpoint: Checkpoint
    signer: VerifierKey


def open_saved_checkpoint(text: str, keyring: Keyring) -> SavedCheckpoint:
    """Open a saved note with the registered key that signed it.

    Raises SavedCheckpointError if its origin is not registered or no registered key of that
    origin signed it: then it is not evidence about that log, and the run cannot use it.
    """
    # The first line names the origin; it only selects keys to try, each of which checks it.
    origin = text.split("\n", 1)[0]
    keys = keyring.keys(origin)
    if not keys:
        raise SavedCheckpointError(
            f"saved checkpoint is for origin {origin!r}, not in the registry"
        )
    errors = []
    for vkey in keys:
        try:
            return SavedCheckpoint(open_checkpoint(text, vkey), vkey)
        except CheckpointError as exc:
            errors.append(f"{vkey.kid}: {exc}")
    raise SavedCheckpointError(
        f"saved checkpoint of {origin} does not open with any registered key ({'; '.join(errors)})"
    )
