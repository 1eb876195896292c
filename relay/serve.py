"""The operator relay: wires the stages together and owns their lifecycle.

    ingest (HTTP) ─> WAL (group commit) ─> OpenWindows ─(window due)─> threshold
        ─> sign ─> outbox ─> shipper ─> sink

Time is read from one injectable clock so tests can move it. Sealing is the only place that
advances the chain; it runs on the event loop, with the CPU-heavy signing and proof building in a
worker thread, and the outbox commit back on the loop (SQLite is used from one thread only).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.aggregate.cells import OpenWindows, WindowState
from relay.aggregate.window import due_until, window_start
from relay.attest.batch import ZERO_HASH, SignedBatch, sign_batch
from relay.attest.checkpoint import sign_checkpoint
from relay.attest.keys import OperatorKey
from relay.attest.merkle import CompactRange, leaf_hash
from relay.attest.rotation import KeyRotation
from relay.config import ConfigError, Settings
from relay.ingest.client_config import ClientConfigDocument
from relay.ingest.models import SCHEMA_VERSION
from relay.ingest.scrub import Admission
from relay.metrics import RelayMetrics
from relay.observation import IngestRecord
from relay.outbox.outbox import ChainHead, Outbox
from relay.outbox.shipper import Shipper
from relay.privacy.contributor import WindowSalts
from relay.privacy.dp_release import DpRelease
from relay.privacy.geo import RegionResolver
from relay.privacy.threshold import apply_threshold
from relay.registry import register_own_key
from relay.sinks.base import Sink
from relay.sinks.dead_letter import DeadLetterFile
from relay.sinks.documents import Document, batch_documents
from relay.sinks.elasticsearch import ElasticsearchSink, make_client
from relay.sinks.local import NdjsonSink, StoreSink
from relay.wal.log import WriteAheadLog

__all__ = ["OperatorRelay", "load_or_create_key", "tune_gc", "wall_clock_ms"]

log = logging.getLogger(__name__)

# Rejection reasons counted in a batch's stats; `rejected` is their sum.
REJECTION_REASONS = ("invalid", "late", "too_old", "too_new")

# Readiness checks reported by /readyz that do not decide `ready`. A sink refusing our key
# (401/403) pauses shipping, not ingest: the relay keeps accepting into the outbox, and if the
# pause lasts, `outbox_below_high_water` turns readiness false in time (DESIGN §2: ready =
# accepting, WAL writable, outbox under its high-water mark). Taking a relay out of its load
# balancer for a credential problem on the lead's side would lose events instead of keeping them.
INFORMATIONAL_CHECKS = frozenset({"sink_authorized"})


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _private_dir(path: Path) -> None:
    """Create the data directory 0700, or take group and other access away from it.

    It holds the operator key, window salts and the WAL (scrubbed, but per event). Files inside
    are created 0600 by `relay serve`'s umask (relay.cli); the directory mode covers files a
    library creates with its own mode, and files from before.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("data_dir %s was mode %04o; setting 0700", path, mode)
        path.chmod(0o700)


def load_or_create_key(path: Path, origin: str) -> OperatorKey:
    """The operator key in `path`, created (mode 0600) on first start."""
    if not path.exists():
        key = OperatorKey.generate(origin)
        key.save(path)
        log.info("generated operator key %s for origin %s", key.kid, origin)
        return key
    key = OperatorKey.load(path)
    if key.origin != origin:
        raise ConfigError(
            f"{path} holds the key of origin {key.origin!r} but origin is {origin!r}; "
            "set origin to match, or move the key away to start a new chain"
        )
    return key


@dataclass(frozen=True)
class _Span:
    """A stretch of time sealed as one batch: one window, or an empty gap of several."""

    start_ms: int
    end_ms: int
    state: WindowState

    @property
    def gap(self) -> bool:
        return not self.state.accepted and not self.state.rejected


def tune_gc() -> None:
    """Collect the young generation every 50 000 allocations instead of every 700.

    A 50-event request allocates a few hundred container objects, so by default a collection ran
    on nearly every request: ~10 % of the relay's CPU (relay bench). The state that lives long
    (open windows, cells) is not cyclic garbage; the bigger young generation only delays
    reclaiming short-lived cycles (an exception's traceback, say) by a few requests. Objects from
    start-up are frozen out of every collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000)


class OperatorRelay:
    def __init__(self, settings: Settings, *, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.settings = settings
        self.clock = clock
        self.window_ms = settings.window.ms
        self.lateness_ms = settings.window.lateness_seconds * 1000
        data_dir = settings.data_dir
        _private_dir(data_dir)
        self.key = load_or_create_key(data_dir / "operator.key", settings.origin)
        if register_own_key(settings.registry_path, settings.origin, self.key.verifier.encode()):
            log.info("registered this relay's key in %s", settings.registry_path)
        # Key rotation updates only the relay's own registry; the lead's is the lead's to edit.
        own_registry = settings.registry_path if settings.lead.registry is None else None
        self.rotation = KeyRotation(data_dir, own_registry)
        self.metrics = RelayMetrics()
        self.resolver = RegionResolver(settings.privacy.geo)
        privacy = settings.privacy
        # dp mode (P7): a fixed publication with noisy counts, and a bound on cells per contributor.
        self.dp: DpRelease | None = None
        if privacy.mode == "dp":
            self.dp = DpRelease.from_config(privacy, settings.window.seconds)
            self.windows = OpenWindows(
                privacy.max_events_per_contributor,
                max_cells_per_contributor=privacy.max_cells_per_contributor,
                nodes=self.dp.nodes,
            )
        else:
            self.windows = OpenWindows(privacy.max_events_per_contributor)
        self.wal = WriteAheadLog(
            data_dir / "wal",
            apply=self.windows.apply,
            fsync=settings.wal.fsync,
            segment_bytes=settings.wal.segment_bytes,
            max_bytes=settings.wal.max_bytes,
        )
        self.admission = Admission(
            window_ms=self.window_ms,
            max_past_ms=settings.window.max_past_seconds * 1000,
            max_future_ms=settings.window.max_future_seconds * 1000,
            salts=WindowSalts(),
            persist_salt=self.wal.save_salt,
        )
        self.outbox = Outbox(data_dir / "outbox.sqlite", settings.origin)
        self.sink = self._make_sink()
        self.shipper = Shipper(
            self.outbox,
            self.sink,
            self.metrics,
            settings.outbox.ship_interval_seconds,
            retry_base=settings.sink.retry_base_seconds,
            retry_max=settings.sink.retry_max_seconds,
        )
        self.head: ChainHead | None = self.outbox.head()
        self.client_config = ClientConfigDocument(settings.client)
        self.shutting_down = False
        self._tasks: list[asyncio.Task[None]] = []
        self._seal_lock = asyncio.Lock()

    def _make_sink(self) -> Sink:
        sink = self.settings.sink
        if sink.type == "store":
            return StoreSink(self.settings.data_dir / "store.sqlite")
        if sink.type == "ndjson":
            return NdjsonSink(sink.path or self.settings.data_dir / "documents.ndjson")
        assert sink.url is not None  # SinkConfig requires it for elasticsearch
        client = make_client(
            sink.url,
            api_key=sink.api_key.get_secret_value() if sink.api_key else None,
            ca_certs=sink.ca_certs,
            request_timeout=sink.request_timeout_seconds,
        )
        dead_letters = DeadLetterFile(self.settings.data_dir / "dead-letter.ndjson")
        return ElasticsearchSink(client, dead_letters, self.metrics)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover from the WAL, seal what is due (with a gap batch for downtime), start tasks."""
        sealed_until = (
            self.head.sealed_until_ms
            if self.head is not None
            else self.outbox.genesis(window_start(self.clock(), self.window_ms))
        )
        self.windows.sealed_until_ms = sealed_until
        self.admission.closed_until_ms = sealed_until
        self.admission.restore_salts(self.wal.load_salts())
        report = self.wal.replay()
        if report.records or report.corrupt_segments:
            log.info(
                "WAL replay: %d records, corrupt segments: %s",
                report.records,
                report.corrupt_segments or "none",
            )
        self.wal.start()
        await self.seal_due()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._seal_loop(), name="sealer"),
            loop.create_task(self.shipper.run(), name="shipper"),
        ]

    async def stop(self) -> None:
        """Stop accepting, seal what is due, try to ship within the shutdown timeout, close."""
        self.shutting_down = True
        deadline = time.monotonic() + self.settings.shutdown_timeout
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.seal_due()
        remaining = max(0.0, deadline - time.monotonic())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await self.shipper.ship_pending()
        await self.wal.close()
        await self.sink.close()
        self.outbox.close()

    async def _seal_loop(self) -> None:
        while True:
            next_due = self.windows.sealed_until_ms + self.window_ms + self.lateness_ms
            await asyncio.sleep(min(1.0, max(0.05, (next_due - self.clock()) / 1000)))
            try:
                await self.seal_due()
            except Exception:
                # A failed seal leaves everything in the WAL; the next attempt starts over.
                log.exception("sealing failed; will retry")

    # -- ingest ---------------------------------------------------------------------------------

    async def commit(self, record: IngestRecord) -> None:
        """Make `record` durable and counted; raises WalUnavailableError for a 503."""
        await self.wal.append(record)

    # -- sealing --------------------------------------------------------------------------------

    async def seal_due(self) -> int:
        """Seal every window that is due now; return how many batches were written."""
        async with self._seal_lock:
            until = due_until(self.clock(), self.window_ms, self.lateness_ms)
            if until <= self.windows.sealed_until_ms:
                return 0
            # Close the windows to new events, then wait until every event admitted before
            # that is in the WAL and applied: the snapshot below then misses nothing.
            self.admission.closed_until_ms = until
            await self.wal.barrier()
            spans = self._spans(until)
            for span in spans:
                await self._seal_span(span)
            await self.wal.rotate()
            self.wal.prune(self.windows.sealed_until_ms)
            self.wal.delete_salts_before(self.windows.sealed_until_ms)
            self.admission.destroy_salts_before(self.windows.sealed_until_ms)
            self.metrics.wal_bytes.set(self.wal.size_bytes)
            self.metrics.open_windows.set(len(self.windows))
            self.metrics.update_outbox(self.outbox)
            self.shipper.wake()
            return len(spans)

    def _spans(self, until: int) -> list[_Span]:
        """Windows with data each get their own batch; a run of empty windows is one batch.

        While the relay runs, one window falls due at a time, so every window gets a batch of
        its own. After downtime, the empty stretch becomes one explicit gap batch (DESIGN §5.3).
        """
        spans: list[_Span] = []
        cursor = self.windows.sealed_until_ms
        for start in self.windows.starts():
            if start >= until:
                break
            if cursor < start:
                spans.append(_Span(cursor, start, WindowState(cursor)))
            spans.append(_Span(start, start + self.window_ms, self.windows.pop(start)))
            cursor = start + self.window_ms
        if cursor < until:
            spans.append(_Span(cursor, until, WindowState(cursor)))
        return spans

    async def _seal_span(self, span: _Span) -> None:
        started = time.perf_counter()
        head = self.head
        # Key rotation (relay/attest/rotation.py): finish one a crash interrupted, then see
        # whether this batch hands over to a waiting operator.next.key.
        self.key = self.rotation.settle(self.key, None if head is None else head.batch_hash)
        next_key = self.rotation.next_key(self.key)
        seq = 0 if head is None else head.seq + 1
        prev = ZERO_HASH if head is None else head.batch_hash
        frontier = (
            CompactRange()
            if head is None
            else CompactRange.from_list(head.log_size, head.log_frontier)
        )
        signed, documents, checkpoint, stats = await asyncio.to_thread(
            self._build_batch, span, seq, prev, frontier, next_key
        )
        new_head = ChainHead(
            seq=seq,
            batch_hash=signed.batch_hash,
            sealed_until_ms=span.end_ms,
            log_frontier=tuple(frontier.to_list()),
            checkpoint=checkpoint,
        )
        if next_key is not None:
            self.rotation.begin(self.key, next_key, seq, signed.batch_hash)
        self.outbox.commit(new_head, documents, sealed_at_ms=self.clock())
        self.head = new_head
        if next_key is not None:
            self.key = self.rotation.settle(self.key, signed.batch_hash)
        self.windows.sealed_until_ms = span.end_ms
        self.metrics.batches_signed.inc()
        self.metrics.dropped.labels("over_cap").inc(stats["over_cap"])
        self.metrics.dropped.labels("suppressed").inc(stats["suppressed_events"])
        self.metrics.suppressed_cells.inc(stats["suppressed_cells"])
        self.metrics.seal_duration.observe(time.perf_counter() - started)

    def _build_batch(
        self,
        span: _Span,
        seq: int,
        prev: bytes,
        frontier: CompactRange,
        next_key: OperatorKey | None = None,
    ) -> tuple[SignedBatch, list[Document], str, dict[str, int]]:
        """The signed batch, its documents, the checkpoint, and the exact stats (for metrics)."""
        state = span.state
        if self.dp is None:
            publication = apply_threshold(state.cells, self.settings.privacy.k)
            summaries = [
                cell.summary(key, span.start_ms, span.end_ms) for key, cell in publication.cells
            ]
            suppressed = (publication.suppressed_cells, publication.suppressed_events)
        else:
            summaries = self.dp.summaries(state.cells, span.start_ms, span.end_ms)
            suppressed = (0, state.unlisted)
        rejected = {reason: state.rejected.get(reason, 0) for reason in REJECTION_REASONS}
        stats = {
            "accepted": state.accepted,
            "rejected": sum(rejected.values()),
            **rejected,
            "over_cap": state.over_cap,
            "suppressed_cells": suppressed[0],
            "suppressed_events": suppressed[1],
            "unsupported_type": state.rejected.get("unsupported_type", 0),
        }
        extra: dict[str, Any] = {}
        if span.gap and span.end_ms - span.start_ms > self.window_ms:
            extra["gap"] = True
        if next_key is not None:
            # The last batch under this key names its successor (DESIGN §5.4).
            extra["next_kid"] = next_key.kid
        signed = sign_batch(
            self.key,
            seq=seq,
            prev=prev,
            window_start_ms=span.start_ms,
            window_end_ms=span.end_ms,
            signed_at_ms=self.clock(),
            summaries=summaries,
            schema=SCHEMA_VERSION,
            privacy=self.privacy_header(),
            # dp mode signs stats derived from the noisy summaries: exact ones would leak.
            stats=stats if self.dp is None else self.dp.stats(summaries, list(stats)),
            extra=extra,
        )
        frontier.append(leaf_hash(signed.msg))
        checkpoint = sign_checkpoint(self.key, frontier.size, frontier.root())
        documents = batch_documents(signed, summaries, checkpoint, self.settings.sink.index_prefix)
        return signed, documents, checkpoint, stats

    def privacy_header(self) -> dict[str, Any]:
        if self.dp is not None:
            return self.dp.header()
        p = self.settings.privacy
        return {
            "mode": p.mode,
            "k": p.k,
            "max_events_per_contributor": p.max_events_per_contributor,
            "geo": p.geo,
        }

    # -- views ----------------------------------------------------------------------------------

    def operator_view(self) -> dict[str, Any]:
        head = self.head
        return {
            "origin": self.key.origin,
            "kid": self.key.kid,
            "vkey": self.key.verifier.encode(),
            "head": None
            if head is None
            else {"seq": head.seq, "batch_hash": base64.b64encode(head.batch_hash).decode()},
            "checkpoint": None if head is None else head.checkpoint,
            "privacy": self.privacy_header(),
            "window_seconds": self.settings.window.seconds,
        }

    def readiness(self) -> dict[str, bool]:
        return {
            "accepting": not self.shutting_down,
            "wal_writable": self.wal.failed is None,
            "wal_below_high_water": self.wal.size_bytes < 0.9 * self.wal.max_bytes,
            "outbox_below_high_water": self.outbox.size_bytes
            < 0.9 * self.settings.outbox.max_bytes,
            "memory_below_high_water": self.windows.estimated_bytes
            < 0.9 * self.settings.window.max_memory_bytes,
            # Informational (see INFORMATIONAL_CHECKS): false while the sink refuses our key.
            "sink_authorized": not self.shipper.paused,
        }

    def is_ready(self, checks: dict[str, bool]) -> bool:
        return all(ok for name, ok in checks.items() if name not in INFORMATIONAL_CHECKS)
