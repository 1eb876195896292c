"""From window state to a signed batch: pure functions, no I/O, no clock.

`plan_spans` cuts the due stretch of time into the spans that become batches; `seal_span`
turns one span, the chain head it extends and the key into the signed batch, its documents and
the checkpoint after it. Given the same inputs (and, in dp mode, the same noise) it builds the
same batch, which is what lets a failed commit be retried with the batch it failed to store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from relay.aggregate.cells import Stats, WindowState
from relay.attest.batch import ZERO_HASH, SignedBatch, sign_batch
from relay.attest.checkpoint import sign_checkpoint
from relay.attest.keys import OperatorKey
from relay.attest.merkle import CompactRange, leaf_hash
from relay.core.document import Document
from relay.outbox.outbox import ChainHead
from relay.seal.release import ReleasePolicy
from relay.sinks.documents import DOCUMENT_SCHEMA, batch_documents

__all__ = ["SealedBatch", "Span", "plan_spans", "seal_span"]


@dataclass(frozen=True)
class Span:
    """A stretch of time sealed as one batch: one window, or an empty gap of several."""

    start_ms: int
    end_ms: int
    state: WindowState

    @property
    def gap(self) -> bool:
        return not self.state.accepted and not self.state.rejected


@dataclass(frozen=True)
class SealedBatch:
    """A batch ready for the outbox: its documents and the chain head once it is stored."""

    span: Span
    signed: SignedBatch
    documents: list[Document]
    head: ChainHead
    exact_stats: Stats  # for the operator's metrics
    kid: str
    next_kid: str | None


def plan_spans(
    states: Iterable[WindowState], sealed_until_ms: int, until_ms: int, window_ms: int
) -> list[Span]:
    """The spans from `sealed_until_ms` to `until_ms`, given the open windows' states.

    Windows with data each get their own batch; a run of empty windows is one batch. While the
    relay runs, one window falls due at a time, so every window gets a batch of its own. After
    downtime, the empty stretch becomes one explicit gap batch (DESIGN §5.3).
    """
    spans: list[Span] = []
    cursor = sealed_until_ms
    for state in sorted(states, key=lambda s: s.start_ms):
        start = state.start_ms
        if start >= until_ms:
            break
        if cursor < start:
            spans.append(Span(cursor, start, WindowState(cursor)))
        spans.append(Span(start, start + window_ms, state))
        cursor = start + window_ms
    if cursor < until_ms:
        spans.append(Span(cursor, until_ms, WindowState(cursor)))
    return spans


def seal_span(
    span: Span,
    head: ChainHead | None,
    key: OperatorKey,
    policy: ReleasePolicy,
    *,
    signed_at_ms: int,
    window_ms: int,
    index_prefix: str,
    next_key: OperatorKey | None = None,
) -> SealedBatch:
    """The batch after `head` for `span`, signed with `key` (naming `next_key` if handing over)."""
    seq = 0 if head is None else head.seq + 1
    prev = ZERO_HASH if head is None else head.batch_hash
    frontier = (
        CompactRange() if head is None else CompactRange.from_list(head.log_size, head.log_frontier)
    )
    release = policy.release(span.state, span.start_ms, span.end_ms)
    signed = sign_batch(
        key,
        seq=seq,
        prev=prev,
        window_start_ms=span.start_ms,
        window_end_ms=span.end_ms,
        signed_at_ms=signed_at_ms,
        summaries=release.summaries,
        schema=DOCUMENT_SCHEMA,
        privacy=policy.header(),
        stats=release.signed_stats,
        gap=span.gap and span.end_ms - span.start_ms > window_ms,
        # The last batch under this key names its successor (DESIGN §5.4).
        next_kid=None if next_key is None else next_key.kid,
    )
    frontier.append(leaf_hash(signed.msg))
    checkpoint = sign_checkpoint(key, frontier.size, frontier.root())
    documents = batch_documents(signed, release.summaries, checkpoint, index_prefix)
    new_head = ChainHead(
        seq=seq,
        batch_hash=signed.batch_hash,
        sealed_until_ms=span.end_ms,
        log_frontier=tuple(frontier.to_list()),
        checkpoint=checkpoint,
    )
    return SealedBatch(
        span=span,
        signed=signed,
        documents=documents,
        head=new_head,
        exact_stats=release.exact_stats,
        kid=key.kid,
        next_kid=None if next_key is None else next_key.kid,
    )
