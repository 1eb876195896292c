"""Retention of the embedded store (`store.retention_days`), the equivalent of ILM on Elasticsearch.

Per origin it deletes the oldest batches, each with its summaries, while their window ended more
than `retention_days` ago. It deletes a prefix of the chain only, and stops at the first batch
under a hold (relay/lead/holds.py): that batch and every later one stay, so what is kept is one
unbroken chain from a known start, never a chain with holes.

What was deleted is summed up in a retention marker (the `retained` table; relay/sinks/store.py):
the first seq kept, the batch_hash of the one before it, and the frontier of the log of batch
messages up to there. `relay verify` starts the chain there (verifier.ChainStart), so a pruned
store reports no `seq_gap`; the first batch kept must link to the marker's hash, and every stored
checkpoint (signed by the operator over the log from seq 0) is still checked against the log the
marker continues, so a marker that lies about what was deleted shows as `checkpoint_mismatch`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass

from relay.attest.batch import batch_hash
from relay.attest.merkle import CompactRange, leaf_hash
from relay.sinks.documents import ChainStart
from relay.sinks.store import EmbeddedStore

__all__ = ["DAY_MS", "RetentionResult", "apply_retention", "describe"]

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class RetentionResult:
    origin: str
    first_seq: int  # the first seq kept from now on
    documents_deleted: int
    stopped_by_hold: int | None  # the held seq that stopped it, if one did


def apply_retention(
    store: EmbeddedStore,
    *,
    now_ms: int,
    retention_days: int,
    held: Collection[tuple[str, int]],
) -> list[RetentionResult]:
    """Delete what is older than ``retention_days`` and not held (module docstring)."""
    cutoff = now_ms - retention_days * DAY_MS
    starts = store.chain_starts()
    results = []
    for origin in store.origins():
        start = starts.get(origin)
        first = seq = 0 if start is None else start.seq
        prev = b"" if start is None else start.prev
        log = CompactRange() if start is None or start.log is None else start.log
        stopped = None
        # Closed on break: the read must end before delete_before writes on the same connection.
        with contextlib.closing(store.batches(origin, seq)) as batches:
            for found_seq, source in batches:
                signed, end = source.get("signed"), source.get("window_end_ms")
                if found_seq != seq or not isinstance(signed, str) or not isinstance(end, int):
                    break  # a gap or a malformed batch: left for verify to report
                if end > cutoff:
                    break
                if (origin, seq) in held:
                    stopped = seq
                    break
                msg = signed.encode()
                log.append(leaf_hash(msg))
                prev = batch_hash(msg)
                seq += 1
        if seq == first:
            if stopped is not None:
                results.append(RetentionResult(origin, seq, 0, stopped))
            continue
        deleted = store.delete_before(origin, ChainStart(seq, prev, log), now_ms)
        results.append(RetentionResult(origin, seq, deleted, stopped))
    return results


def describe(result: RetentionResult) -> str:
    held = (
        "" if result.stopped_by_hold is None else f"; stopped at held seq {result.stopped_by_hold}"
    )
    return (
        f"{result.origin}: deleted {result.documents_deleted} documents, chain now starts at seq "
        f"{result.first_seq}{held}"
    )
