"""The streaming auditor: every check of DESIGN §5.6 over documents in (origin, seq) order.

Documents are read once. Consecutive documents with the same (origin, seq) form a group: the batch
document(s) of that seq and its summaries, in any order within the group. A group is checked as a
whole and then dropped, so memory is one batch plus, per origin, 32 bytes per batch (the hashes
that expose equivocation when a seq comes back later, as in concatenated NDJSON files) and the
O(log n) frontier of the log of batch messages.

Per group: each batch document is opened (key, signature, canonical form, searchable copies,
timestamps: relay/verify/batches.py); a new seq is placed in the chain (seq_gap, prev_mismatch,
window_discontinuity, key handover), its message is appended to the log and its stored checkpoint
compared with it (DESIGN §5.5); then every summary is checked against the signed root
(relay/verify/leaves.py), and the summaries against the signed count and root.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from relay.attest.batch import ZERO_HASH
from relay.attest.checkpoint import open_checkpoint
from relay.attest.cosignature import CosignerKey, cosigned_at
from relay.attest.errors import CheckpointError
from relay.attest.merkle import EMPTY_ROOT, CompactRange, leaf_hash
from relay.core.b64 import b64decode, b64encode
from relay.core.clock import wall_clock_ms
from relay.core.document import Document
from relay.core.numbers import is_int
from relay.registry import Registry
from relay.sinks.documents import ChainStart
from relay.verify.batches import Emit, OpenedBatch, open_batch
from relay.verify.checkpoints import SavedCheckpoint, open_saved_checkpoint
from relay.verify.findings import Code, Finding
from relay.verify.keyring import Keyring
from relay.verify.leaves import BatchTree, SummaryLeaf, check_summary, read_summary
from relay.verify.report import OriginHead, OriginTotals, VerificationReport

__all__ = ["ChainStart", "Verifier", "verify_documents"]

_HASH = 32


def verify_documents(
    registry: Registry,
    documents: Iterable[Document],
    *,
    now_ms: int | None = None,
    saved_checkpoints: Sequence[str] = (),
    witness_keys: Sequence[CosignerKey] = (),
    chain_starts: Mapping[str, ChainStart] | None = None,
) -> VerificationReport:
    """Check ``documents`` (ordered by origin, seq; batch first, then summaries by i) and report.

    ``now_ms`` is the auditor's clock for `future_timestamp` (default: the wall clock).
    ``saved_checkpoints`` are signed checkpoint notes kept from earlier (DESIGN §5.5); each must
    carry a cosignature of every one of ``witness_keys`` (`missing_cosignature`). Raises
    RegistryError for a registry key that cannot be parsed, SavedCheckpointError for a saved
    checkpoint no registered key signed, and whatever reading ``documents`` raises.
    """
    verifier = Verifier(
        registry,
        now_ms=wall_clock_ms() if now_ms is None else now_ms,
        saved_checkpoints=saved_checkpoints,
        witness_keys=witness_keys,
        chain_starts=chain_starts,
    )
    for document in documents:
        verifier.feed(document)
    return verifier.finish()


class _Chain:
    """What the auditor keeps about one origin between groups."""

    __slots__ = (
        "hashes",
        "last",
        "log",
        "log_broken_at",
        "log_diverged",
        "next_seq",
        "saved",
        "start",
    )

    def __init__(self, start: ChainStart | None) -> None:
        self.start = start
        self.next_seq = 0 if start is None else start.seq  # one past the highest seq placed
        # batch_hash of each placed seq whose signature verified; 32 zero bytes otherwise.
        self.hashes = bytearray(ZERO_HASH * self.next_seq)
        self.last: OpenedBatch | None = None  # batch next_seq − 1, if it was present
        self.log: CompactRange | None = CompactRange()  # None once a batch is missing
        self.log_broken_at: int | None = None
        if start is not None:
            log = start.log
            self.log = None if log is None else CompactRange.from_list(log.size, log.to_list())
            self.log_broken_at = None if log is not None else start.seq
        self.log_diverged = False  # a stored checkpoint disagreed with the log already
        self.saved: dict[int, list[SavedCheckpoint]] = {}  # unconfirmed saved ones, by size

    def trusted_hash(self, seq: int) -> bytes | None:
        digest = bytes(self.hashes[seq * _HASH : (seq + 1) * _HASH])
        return digest if digest and digest != ZERO_HASH else None

    def place(self, seq: int, batch: OpenedBatch) -> None:
        if seq > self.next_seq:
            self.last = None
            if self.log is not None:
                self.log, self.log_broken_at = None, self.next_seq
        self.hashes.extend(ZERO_HASH * (seq - self.next_seq))
        self.hashes.extend(batch.batch_hash if batch.header is not None else ZERO_HASH)
        if self.log is not None:
            self.log.append(leaf_hash(batch.msg))
        self.next_seq = seq + 1
        self.last = batch


class Verifier:
    """Feed documents one at a time, then ``finish()`` for the report."""

    def __init__(
        self,
        registry: Registry,
        *,
        now_ms: int,
        saved_checkpoints: Sequence[str] = (),
        witness_keys: Sequence[CosignerKey] = (),
        chain_starts: Mapping[str, ChainStart] | None = None,
    ) -> None:
        self._keyring = Keyring(registry)
        self._starts = dict(chain_starts or {})
        self._now_ms = now_ms
        self.report = VerificationReport()
        self._chains: dict[str, _Chain] = {}
        self._group: tuple[str, int] | None = None
        self._batch_docs: list[Document] = []
        self._summary_docs: list[Document] = []
        self._witness_keys = tuple(witness_keys)
        for text in saved_checkpoints:
            self._add_saved(open_saved_checkpoint(text, self._keyring))

    # -- input ----------------------------------------------------------------------------------

    def feed(self, document: Document) -> None:
        source = document.source
        origin, seq = source.get("origin"), source.get("seq")
        if not isinstance(origin, str) or not is_int(seq) or seq < 0:
            self._malformed(document, origin, seq)
            return
        if self._group != (origin, seq):
            self._flush()
            self._group = (origin, seq)
        (self._summary_docs if "att" in source else self._batch_docs).append(document)

    def finish(self) -> VerificationReport:
        self._flush()
        for origin, chain in self._chains.items():
            for size, saved in sorted(chain.saved.items()):
                for _ in saved:
                    self._emit(
                        Code.CHECKPOINT_MISMATCH,
                        origin,
                        size - 1,
                        None,
                        f"saved checkpoint of size {size} cannot be confirmed: "
                        + _why_unconfirmed(chain, size),
                    )
            chain.saved.clear()
        for origin, _ in self.report.verified:
            self._totals(origin).verified += 1
        return self.report

    def _malformed(self, document: Document, origin: object, seq: object) -> None:
        code = Code.ORPHAN_SUMMARY if "att" in document.source else Code.BAD_SIGNATURE
        self._emit(
            code,
            origin if isinstance(origin, str) else None,
            seq if is_int(seq) else None,
            document.id,
            "document has no valid origin and seq, so it cannot belong to a signed batch",
        )

    # -- one (origin, seq) group ----------------------------------------------------------------

    def _flush(self) -> None:
        if self._group is None:
            return
        (origin, seq), batch_docs, summary_docs = self._group, self._batch_docs, self._summary_docs
        self._group, self._batch_docs, self._summary_docs = None, [], []
        chain = self._chain(origin)
        totals = self._totals(origin)
        findings_before = len(self.report.findings)

        def emit(code: Code, message: str, doc_id: str | None) -> None:
            self._emit(code, origin, seq, doc_id, message)

        opened: list[OpenedBatch] = []
        for document in batch_docs:
            self.report.batches_checked += 1
            totals.batches += 1
            batch = open_batch(document, origin, seq, self._keyring, self._now_ms, emit)
            if batch is not None:
                opened.append(batch)
        trusted = _distinct(b for b in opened if b.header is not None)

        confirmed = False
        if seq < chain.next_seq:
            primary = self._revisit(chain, seq, trusted, emit)
        else:
            primary = self._choose(chain, seq, trusted) or (opened[0] if opened else None)
            for other in trusted:
                if primary is not None and other is not primary:
                    emit(Code.EQUIVOCATION, _equivocation(seq, primary.batch_hash), other.doc_id)
            if primary is not None:
                confirmed = self._place(chain, origin, seq, primary, emit)

        if not batch_docs:
            for document in summary_docs:
                emit(Code.ORPHAN_SUMMARY, "no batch document of this seq was read", document.id)
        elif primary is not None and primary.header is not None:
            others = [b for b in trusted if b is not primary]
            self._check_summaries(origin, primary, others, summary_docs, emit)
        # Summaries of a batch whose signature failed are not checked: nothing vouches for them.

        # A problem anywhere in the group (also a later one, for a seq read again) voids it.
        if len(self.report.findings) > findings_before:
            self.report.verified.discard((origin, seq))
        elif confirmed:
            self.report.verified.add((origin, seq))

    def _choose(self, chain: _Chain, seq: int, trusted: list[OpenedBatch]) -> OpenedBatch | None:
        """Of several signed batches for a new seq, the one that links to the chain, else the
        first."""
        if not trusted:
            return None
        if seq == 0:
            expected: bytes | None = ZERO_HASH
        else:
            expected = chain.last.batch_hash if chain.last and seq == chain.next_seq else None
        if expected is not None:
            for batch in trusted:
                assert batch.header is not None
                if batch.header["prev"] == b64encode(expected):
                    return batch
        return trusted[0]

    def _revisit(
        self, chain: _Chain, seq: int, trusted: list[OpenedBatch], emit: Emit
    ) -> OpenedBatch | None:
        """A seq read again later (e.g. two exports concatenated): equal batches are duplicates,
        a different signed one is equivocation."""
        known = chain.trusted_hash(seq)
        if known is None:
            return trusted[0] if trusted else None
        same = None
        for batch in trusted:
            if batch.batch_hash == known:
                same = same or batch
            else:
                emit(Code.EQUIVOCATION, _equivocation(seq, known), batch.doc_id)
        return same or (trusted[0] if trusted else None)

    def _place(self, chain: _Chain, origin: str, seq: int, batch: OpenedBatch, emit: Emit) -> bool:
        """Append ``batch`` to the chain and the log; True if its position is confirmed: it
        verified and links to seq − 1 (itself verified), or it is seq 0."""
        if seq > chain.next_seq:
            missing = (
                f"batch {chain.next_seq} is"
                if seq - chain.next_seq == 1
                else f"batches {chain.next_seq}..{seq - 1} are"
            )
            emit(Code.SEQ_GAP, f"{missing} missing before seq {seq}", batch.doc_id)
        confirmed = batch.header is not None and self._check_link(chain, seq, batch, emit)
        chain.place(seq, batch)
        if chain.log is not None:
            self._check_saved(chain, origin, seq)
        if batch.header is not None:
            self.report.heads[origin] = OriginHead(
                seq=seq,
                batch_hash=b64encode(batch.batch_hash),
                checkpoint=self._check_stored_checkpoint(chain, seq, batch, emit),
                last_window_end_ms=batch.header["window_end_ms"],
            )
        return confirmed

    def _check_link(self, chain: _Chain, seq: int, batch: OpenedBatch, emit: Emit) -> bool:
        """DESIGN §5.3 chain and windows, §5.4 handover; False if there is nothing to link to."""
        header = batch.header
        assert header is not None
        start, end = header["window_start_ms"], header["window_end_ms"]
        if end <= start:
            emit(Code.WINDOW_DISCONTINUITY, f"window [{start}, {end}) is empty", batch.doc_id)
        if seq == 0:
            if header["prev"] != b64encode(ZERO_HASH):
                emit(Code.PREV_MISMATCH, "seq 0 must have prev = 32 zero bytes", batch.doc_id)
            return True
        last = chain.last if seq == chain.next_seq else None
        if last is None:
            return self._check_start(chain, seq, batch, emit)
        if header["prev"] != b64encode(last.batch_hash):
            emit(
                Code.PREV_MISMATCH,
                f"prev {header['prev']} is not the batch_hash {b64encode(last.batch_hash)} of seq "
                f"{seq - 1}",
                batch.doc_id,
            )
        before = last.header
        if before is None:
            return False
        if start != before["window_end_ms"]:
            emit(
                Code.WINDOW_DISCONTINUITY,
                f"window starts at {start}, but seq {seq - 1} ended at {before['window_end_ms']}",
                batch.doc_id,
            )
        announced: Any = before.get("next_kid")
        if announced is not None and header["kid"] != announced:
            emit(
                Code.KEY_NOT_VALID_FOR_SEQ,
                f"seq {seq - 1} handed over to key {announced!r}, but this batch is signed by "
                f"{header['kid']}",
                batch.doc_id,
            )
        elif announced is None and header["kid"] != before["kid"]:
            emit(
                Code.KEY_NOT_VALID_FOR_SEQ,
                f"key changed from {before['kid']} to {header['kid']} without a next_kid "
                f"handover in seq {seq - 1}",
                batch.doc_id,
            )
        return True

    def _check_start(self, chain: _Chain, seq: int, batch: OpenedBatch, emit: Emit) -> bool:
        """The first batch after a ChainStart links to the marker's prev instead of a batch."""
        start = chain.start
        if start is None or seq != start.seq:
            return False
        assert batch.header is not None
        if batch.header["prev"] != b64encode(start.prev):
            emit(
                Code.PREV_MISMATCH,
                f"prev {batch.header['prev']} is not {b64encode(start.prev)}, the batch_hash of "
                f"seq {seq - 1} recorded when the batches before seq {seq} were deleted",
                batch.doc_id,
            )
        return True

    # -- checkpoints (DESIGN §5.5) --------------------------------------------------------------

    def _check_stored_checkpoint(
        self, chain: _Chain, seq: int, batch: OpenedBatch, emit: Emit
    ) -> str | None:
        """The note stored with batch ``seq``, signed by the batch's key over the log 0..seq;
        returned if it is that, None (with a finding) if not."""
        assert batch.vkey is not None
        text = batch.checkpoint
        if not isinstance(text, str):
            emit(Code.CHECKPOINT_MISMATCH, "batch document has no checkpoint", batch.doc_id)
            return None
        try:
            checkpoint = open_checkpoint(text, batch.vkey)
        except CheckpointError as exc:
            emit(
                Code.CHECKPOINT_MISMATCH,
                f"stored checkpoint does not open with the batch's key {batch.vkey.kid}: {exc}",
                batch.doc_id,
            )
            return None
        if checkpoint.size != seq + 1:
            emit(
                Code.CHECKPOINT_MISMATCH,
                f"stored checkpoint has size {checkpoint.size}, not {seq + 1} (batches 0..{seq})",
                batch.doc_id,
            )
            return None
        if chain.log is None or chain.log_diverged or checkpoint.root == chain.log.root():
            return text
        chain.log_diverged = True
        emit(
            Code.CHECKPOINT_MISMATCH,
            f"stored checkpoint root {b64encode(checkpoint.root)} is not the root "
            f"{b64encode(chain.log.root())} of the batch messages read; later stored checkpoints "
            "of this origin are not compared",
            batch.doc_id,
        )
        return None

    def _add_saved(self, saved: SavedCheckpoint) -> None:
        checkpoint, signer = saved.checkpoint, saved.signer
        origin, size = checkpoint.origin, checkpoint.size
        for witness in self._witness_keys:
            if cosigned_at(checkpoint.text, witness) is None:
                self._emit(
                    Code.MISSING_COSIGNATURE,
                    origin,
                    size - 1 if size else None,
                    None,
                    f"saved checkpoint of size {size} has no valid cosignature by witness "
                    f"{witness.name}+{witness.key_id.hex()}",
                )
        if size > 0 and not self._keyring.valid_for(signer, size - 1):
            self._emit(
                Code.KEY_NOT_VALID_FOR_SEQ,
                origin,
                size - 1,
                None,
                f"saved checkpoint of size {size} is signed by {signer.kid}, which the registry "
                f"allows for seqs {self._keyring.validity(signer)} only",
            )
        if size == 0:
            if checkpoint.root != EMPTY_ROOT:
                self._emit(
                    Code.CHECKPOINT_MISMATCH,
                    origin,
                    None,
                    None,
                    "saved checkpoint of size 0 does not have the empty tree's root",
                )
            return
        chain = self._chain(origin)
        start = chain.start
        if start is not None and start.log is not None and size == start.seq:
            # Of the retention marker's size: the marker's log is that tree.
            if checkpoint.root != start.log.root():
                self._emit(
                    Code.CHECKPOINT_MISMATCH,
                    origin,
                    size - 1,
                    None,
                    f"saved checkpoint of size {size} has root {b64encode(checkpoint.root)}, but "
                    f"the retention marker's log of that size has {b64encode(start.log.root())}",
                )
            return
        same_size = chain.saved.setdefault(size, [])
        for other in same_size:
            if other.checkpoint.root != checkpoint.root:
                self._emit(
                    Code.INCONSISTENT_CHECKPOINT,
                    origin,
                    size - 1,
                    None,
                    f"two saved checkpoints of size {size} have different roots "
                    f"({b64encode(other.checkpoint.root)}, {b64encode(checkpoint.root)}): the "
                    "operator showed different logs to different parties",
                )
                break
        same_size.append(saved)

    def _check_saved(self, chain: _Chain, origin: str, seq: int) -> None:
        """Saved checkpoints of size seq + 1 against the log just extended to that size."""
        assert chain.log is not None
        for saved in chain.saved.pop(seq + 1, ()):
            if saved.checkpoint.root != chain.log.root():
                self._emit(
                    Code.CHECKPOINT_MISMATCH,
                    origin,
                    seq,
                    None,
                    f"saved checkpoint of size {seq + 1} has root "
                    f"{b64encode(saved.checkpoint.root)}, but the batches read give "
                    f"{b64encode(chain.log.root())}: the log was rewritten or forked",
                )

    # -- summaries (DESIGN §5.2) ----------------------------------------------------------------

    def _check_summaries(
        self,
        origin: str,
        primary: OpenedBatch,
        others: list[OpenedBatch],
        documents: list[Document],
        emit: Emit,
    ) -> None:
        header = primary.header
        assert header is not None
        n, root = header["n"], b64decode(header["root"])
        totals = self._totals(origin)
        self.report.summaries_checked += len(documents)
        totals.summaries += len(documents)
        leaves = [read_summary(document.source) for document in documents]
        present = {leaf.i for leaf in leaves if leaf.i is not None}
        first: dict[int, bytes] = {}
        for leaf in leaves:
            if leaf.i is not None and leaf.hash is not None:
                first.setdefault(leaf.i, leaf.hash)
        complete = all(i in first for i in range(n))
        tree = BatchTree([first[i] for i in range(n)]) if complete else None
        rebuilt = tree if tree is not None and tree.root == root else None
        published: int | None = 0  # events in the summaries that checked out, once per i
        counted: set[int] = set()
        for document, leaf in zip(documents, leaves, strict=True):
            problem = check_summary(document.source, leaf, n, root, rebuilt)
            if problem is None and leaf.i not in counted:
                assert leaf.i is not None
                counted.add(leaf.i)
                events = _events(document.source)
                published = None if published is None or events is None else published + events
            elif problem is not None and not self._belongs_to_another(document, leaf, others):
                code, message = problem
                emit(code, message, document.id)
                published = None
        missing = [i for i in range(n) if i not in present]
        unexpected = sorted(i for i in present if i >= n)
        if missing or unexpected:
            detail = "".join(
                f", {label} i = {_few(values)}"
                for label, values in (("missing", missing), ("unexpected", unexpected))
                if values
            )
            emit(
                Code.SUMMARY_COUNT_MISMATCH,
                f"the signed batch has n = {n} summaries{detail}",
                primary.doc_id,
            )
        elif complete and rebuilt is None:
            emit(
                Code.ROOT_MISMATCH,
                "the summaries' leaves do not hash to the signed root",
                primary.doc_id,
            )
        elif header["privacy"].get("mode") == "aggregate":
            self._check_balance(header, published, primary.doc_id, emit)

    @staticmethod
    def _check_balance(
        header: dict[str, Any], published: int | None, doc_id: str, emit: Emit
    ) -> None:
        """DESIGN §5.3, aggregate mode: Σ over the summaries of (requests + Σ signals) =
        accepted − over_cap − suppressed_events. Not checked once a summary had a finding."""
        stats = header["stats"]
        if published is None or not {"accepted", "over_cap", "suppressed_events"} <= stats.keys():
            return
        signed = stats["accepted"] - stats["over_cap"] - stats["suppressed_events"]
        if published != signed:
            emit(
                Code.SUMMARY_COUNT_MISMATCH,
                f"the summaries count {published} events (requests + signals), the signed stats "
                f"{signed} (accepted − over_cap − suppressed_events)",
                doc_id,
            )

    @staticmethod
    def _belongs_to_another(
        document: Document, leaf: SummaryLeaf, others: list[OpenedBatch]
    ) -> bool:
        """A summary of an equivocating batch of the same seq is not a problem of the primary
        one (the equivocation is reported already)."""
        for other in others:
            assert other.header is not None
            n, root = other.header["n"], b64decode(other.header["root"])
            if check_summary(document.source, leaf, n, root, None) is None:
                return True
        return False

    # -- helpers --------------------------------------------------------------------------------

    def _chain(self, origin: str) -> _Chain:
        chain = self._chains.get(origin)
        if chain is None:
            chain = self._chains[origin] = _Chain(self._starts.get(origin))
            self._totals(origin)
        return chain

    def _totals(self, origin: str) -> OriginTotals:
        return self.report.origins.setdefault(origin, OriginTotals())

    def _emit(
        self, code: Code, origin: str | None, seq: int | None, doc_id: str | None, message: str
    ) -> None:
        self.report.findings.append(Finding(code.value, origin, seq, doc_id, message))


def _events(source: Mapping[str, Any]) -> int | None:
    """requests + Σ signals of a summary, or None if they are not counts."""
    requests, signals = source.get("requests"), source.get("signals")
    if not is_int(requests) or not isinstance(signals, dict):
        return None
    counts = list(signals.values())
    return requests + sum(counts) if all(is_int(c) for c in counts) else None


def _why_unconfirmed(chain: _Chain, size: int) -> str:
    if chain.start is not None and size < chain.start.seq:
        return f"the batches before seq {chain.start.seq} were deleted (retention or a hold)"
    if size > chain.next_seq:
        return f"the log read has only {chain.next_seq} batches (it was truncated)"
    return f"batch {chain.log_broken_at} is missing, so the log cannot be rebuilt to that size"


def _equivocation(seq: int, other_hash: bytes) -> str:
    return f"another signed batch with seq {seq} exists (batch_hash {b64encode(other_hash)})"


def _distinct(batches: Iterable[OpenedBatch]) -> list[OpenedBatch]:
    """First of each batch_hash: the same batch stored twice is not equivocation."""
    seen: dict[bytes, OpenedBatch] = {}
    for batch in batches:
        seen.setdefault(batch.batch_hash, batch)
    return list(seen.values())


def _few(values: list[int]) -> str:
    shown = ", ".join(map(str, values[:10]))
    return shown + (f" … ({len(values)} in all)" if len(values) > 10 else "")
