"""The seal stage: due windows become batches in the outbox, and only then leave the relay.

Order per span (DESIGN §6): build and sign the batch (in a worker thread), commit it to the
outbox in the transaction that records the WAL position consumed (`sealed_until_ms` in the chain
head), and only after that commit drop the window's state from memory; the WAL segments are
pruned after the whole run of spans. A failure anywhere before the commit leaves memory, the WAL
and the outbox as they were. The spans planned and the batch built are kept, so the retry seals
the same spans into the same batch (same seq, same bytes, `signed_at_ms` included) instead of
planning again from a changed clock; in dp mode this also keeps a retry from drawing, and
spending budget on, a second noisy release of the same window.

While sealing fails, `failing` is true (readiness turns false) and every failure is counted;
ingest goes on buffering into the WAL and open windows up to their byte caps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from relay.aggregate.cells import OpenWindows
from relay.aggregate.window import due_until
from relay.attest.keys import OperatorKey
from relay.attest.merkle import leaf_hash
from relay.attest.rotation import KeyRotation
from relay.ingest.scrub import Admission
from relay.metrics import RelayMetrics
from relay.outbox.outbox import ChainHead, Outbox
from relay.seal.batch import SealedBatch, Span, plan_spans, seal_span
from relay.seal.release import ReleasePolicy
from relay.wal.log import WriteAheadLog

__all__ = ["SealStage"]

log = logging.getLogger(__name__)

# How long the seal loop waits before retrying a failed seal.
RETRY_SECONDS = 1.0


class SealStage:
    def __init__(
        self,
        *,
        key: OperatorKey,
        head: ChainHead | None,
        policy: ReleasePolicy,
        rotation: KeyRotation,
        windows: OpenWindows,
        wal: WriteAheadLog,
        admission: Admission,
        outbox: Outbox,
        metrics: RelayMetrics,
        clock: Callable[[], int],
        window_ms: int,
        lateness_ms: int,
        index_prefix: str,
        on_sealed: Callable[[], None],
    ) -> None:
        self.key = key
        self.head = head
        self._policy = policy
        self._rotation = rotation
        self._windows = windows
        self._wal = wal
        self._admission = admission
        self._outbox = outbox
        self._metrics = metrics
        self._clock = clock
        self._window_ms = window_ms
        self._lateness_ms = lateness_ms
        self._index_prefix = index_prefix
        self._on_sealed = on_sealed
        self._lock = asyncio.Lock()
        self._plan: list[Span] = []
        # The batch built for the plan's first span and not yet committed.
        self.pending: SealedBatch | None = None
        self.failing = False

    async def run(self) -> None:
        """Seal each window as it falls due; retry a failed seal until it succeeds."""
        while True:
            next_due = self._windows.sealed_until_ms + self._window_ms + self._lateness_ms
            wait = min(1.0, max(0.05, (next_due - self._clock()) / 1000))
            await asyncio.sleep(RETRY_SECONDS if self.failing else wait)
            try:
                await self.seal_due()
            except Exception:
                log.exception("sealing failed; the windows stay in memory and the WAL, retrying")

    async def seal_due(self) -> int:
        """Seal every window that is due now; return how many batches were committed.

        Raises what made a seal fail, after counting it; what was not committed stays as it was.
        """
        async with self._lock:
            try:
                sealed = await self._seal_due()
            except Exception:
                self.failing = True
                self._metrics.seal_failures.inc()
                raise
            self.failing = False
            return sealed

    async def _seal_due(self) -> int:
        until = due_until(self._clock(), self._window_ms, self._lateness_ms)
        windows = self._windows
        if until <= windows.sealed_until_ms:
            return 0
        # Close the windows to new events, then wait until every event admitted before that is
        # in the WAL and applied: the state sealed below then misses nothing.
        self._admission.closed_until_ms = max(self._admission.closed_until_ms, until)
        await self._wal.barrier()
        sealed = 0
        while windows.sealed_until_ms < until:
            if not self._plan:
                states = [windows.window(start) for start in windows.starts()]
                self._plan = plan_spans(states, windows.sealed_until_ms, until, self._window_ms)
            await self._seal_next()
            sealed += 1
        await self._wal.rotate()
        sealed_until = windows.sealed_until_ms
        self._wal.prune(sealed_until)
        self._wal.delete_salts_before(sealed_until)
        self._admission.destroy_salts_before(sealed_until)
        self._on_sealed()
        return sealed

    async def _seal_next(self) -> None:
        """Seal the plan's first span."""
        started = time.perf_counter()
        span = self._plan[0]
        head = self.head
        # Key rotation (relay/attest/rotation.py): finish one a crash or a failed seal
        # interrupted, then see whether this batch hands over to a waiting operator.next.key.
        self.key = self._rotation.settle(self.key, None if head is None else head.batch_hash)
        next_key = self._rotation.next_key(self.key)
        batch = self.pending
        if batch is None or not _extends(batch, span, head, self.key, next_key):
            batch = await asyncio.to_thread(
                seal_span,
                span,
                head,
                self.key,
                self._policy,
                signed_at_ms=self._clock(),
                window_ms=self._window_ms,
                index_prefix=self._index_prefix,
                next_key=next_key,
            )
            self.pending = batch
        if next_key is not None:
            self._rotation.begin(self.key, next_key, batch.head.seq, batch.signed.batch_hash)
        self._outbox.commit(
            batch.head,
            batch.documents,
            log_leaf=leaf_hash(batch.signed.msg),
            sealed_at_ms=self._clock(),
        )
        # Committed: only now may the window's state leave memory (and its WAL, at the end).
        del self._plan[0]
        self.pending = None
        self.head = batch.head
        self._windows.sealed_until_ms = span.end_ms
        self._windows.pop(span.start_ms)
        stats = batch.exact_stats
        self._metrics.batches_signed.inc()
        self._metrics.dropped.labels("over_cap").inc(stats["over_cap"] - stats["over_budget"])
        self._metrics.dropped.labels("over_budget").inc(stats["over_budget"])
        self._metrics.dropped.labels("suppressed").inc(stats["suppressed_events"])
        self._metrics.suppressed_cells.inc(stats["suppressed_cells"])
        self._metrics.seal_duration.observe(time.perf_counter() - started)
        if next_key is not None:
            # Should this fail, the batch is stored all the same; the next seal finishes it.
            self.key = self._rotation.settle(self.key, batch.signed.batch_hash)


def _extends(
    batch: SealedBatch,
    span: Span,
    head: ChainHead | None,
    key: OperatorKey,
    next_key: OperatorKey | None,
) -> bool:
    """Whether `batch` is still the batch for `span` after `head` (built by an attempt that
    failed to commit it), with the same key and handover."""
    prev_seq = -1 if head is None else head.seq
    return (
        batch.span is span
        and batch.head.seq == prev_seq + 1
        and batch.kid == key.kid
        and batch.next_kid == (None if next_key is None else next_key.kid)
    )
