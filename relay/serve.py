"""The operator relay: wires the stages together and owns their lifecycle.

    ingest (HTTP) ─> WAL (group commit) ─> OpenWindows ─(window due)─> seal stage
        (release policy ─> sign ─> outbox) ─> shipper ─> sink

Time is read from one injectable clock so tests can move it. The seal stage (relay/seal/) is
the only place that advances the chain; `Backpressure` is the one reading of the buffers' limits
that ingest's 503s, /readyz and the gauges share.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import stat
import time
from collections.abc import Callable
from pathlib import Path

from relay.aggregate.observation import IngestRecord
from relay.aggregate.window import window_start
from relay.attest.keys import OperatorKey
from relay.attest.rotation import KeyRotation
from relay.backpressure import Backpressure
from relay.config import ConfigError, IngestConfig, Settings
from relay.core.b64 import b64encode
from relay.core.clock import wall_clock_ms
from relay.ingest.boundary import OperatorView, Refusal
from relay.ingest.client_config import RenderedClientConfig
from relay.ingest.scrub import Admission
from relay.metrics import RelayMetrics
from relay.outbox.outbox import Outbox
from relay.outbox.shipper import Shipper
from relay.privacy.contributor import WindowSalts
from relay.privacy.geo import RegionResolver
from relay.registry import register_own_key
from relay.seal.release import release_policy
from relay.seal.stage import SealStage
from relay.sinks.factory import make_sink
from relay.wal.log import WalFullError, WalUnavailableError, WriteAheadLog

__all__ = ["OperatorRelay", "load_or_create_key", "tune_gc"]

log = logging.getLogger(__name__)


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
        data_dir = settings.data_dir
        _private_dir(data_dir)
        key = load_or_create_key(data_dir / "operator.key", settings.origin)
        if register_own_key(settings.registry_path, settings.origin, key.verifier.encode()):
            log.info("registered this relay's key in %s", settings.registry_path)
        self.metrics = RelayMetrics()
        self.resolver = RegionResolver(settings.privacy.geo)
        self.policy = release_policy(settings.privacy, settings.window)
        self.windows = self.policy.open_windows()
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
        self.sink = make_sink(settings, self.metrics)
        self.shipper = Shipper(
            self.outbox,
            self.sink,
            self.metrics,
            settings.outbox.ship_interval_seconds,
            retry_base=settings.sink.retry_base_seconds,
            retry_max=settings.sink.retry_max_seconds,
        )
        self.sealer = self._seal_stage(key)
        self.backpressure = Backpressure(
            settings,
            wal=self.wal,
            outbox=self.outbox,
            windows=self.windows,
            sealer=self.sealer,
            shipper=self.shipper,
            metrics=self.metrics,
        )
        self.client_config = RenderedClientConfig(settings.client)
        self._tasks: list[asyncio.Task[None]] = []

    def _seal_stage(self, key: OperatorKey) -> SealStage:
        settings, data_dir = self.settings, self.settings.data_dir
        return SealStage(
            key=key,
            head=self.outbox.head(),
            policy=self.policy,
            # Key rotation updates only the relay's own registry; the lead's is the lead's to edit.
            rotation=KeyRotation(
                data_dir, settings.registry_path if settings.lead.registry is None else None
            ),
            windows=self.windows,
            wal=self.wal,
            admission=self.admission,
            outbox=self.outbox,
            metrics=self.metrics,
            clock=self.clock,
            window_ms=self.window_ms,
            lateness_ms=settings.window.lateness_seconds * 1000,
            index_prefix=settings.sink.index_prefix,
            on_sealed=self._sealed,
        )

    @property
    def shutting_down(self) -> bool:
        return self.backpressure.shutting_down

    @shutting_down.setter
    def shutting_down(self, value: bool) -> None:
        self.backpressure.shutting_down = value

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover from the WAL, seal what is due (with a gap batch for downtime), start tasks."""
        head = self.sealer.head
        sealed_until = (
            head.sealed_until_ms
            if head is not None
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
        await self._seal_logged()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.sealer.run(), name="sealer"),
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
        await self._seal_logged()
        remaining = max(0.0, deadline - time.monotonic())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await self.shipper.ship_pending()
        await self.wal.close()
        await self.sink.close()
        self.outbox.close()

    async def seal_due(self) -> int:
        """Seal every window that is due now (relay/seal/stage.py); raises if a seal fails."""
        return await self.sealer.seal_due()

    async def _seal_logged(self) -> None:
        try:
            await self.sealer.seal_due()
        except Exception:
            # Nothing is lost: what was not sealed stays in the WAL for the seal loop or the
            # next start; readiness says sealing fails meanwhile.
            log.exception("sealing failed; the windows stay in the WAL")

    def _sealed(self) -> None:
        self.backpressure.update_gauges()
        self.shipper.wake()

    # -- ingest ---------------------------------------------------------------------------------

    async def commit(self, record: IngestRecord) -> None:
        """Make `record` durable and counted; raises WalUnavailableError for a 503."""
        await self.wal.append(record)

    async def accept(self, record: IngestRecord) -> Refusal | None:
        """`commit`, with the WAL's refusals as ingest answers them (relay.ingest.boundary)."""
        try:
            await self.commit(record)
        except WalFullError:
            return Refusal("wal-full", "Relay is at capacity; retry later")
        except WalUnavailableError:
            return Refusal("wal-unavailable", "Relay cannot store events right now")
        return None

    @property
    def ingest_config(self) -> IngestConfig:
        return self.settings.ingest

    def log_size(self) -> int:
        head = self.sealer.head
        return 0 if head is None else head.log_size

    def log_leaves(self, size: int) -> list[bytes] | None:
        return self.outbox.log_leaves(size)

    # -- views ----------------------------------------------------------------------------------

    def operator_view(self) -> OperatorView:
        head, key = self.sealer.head, self.sealer.key
        return {
            "origin": key.origin,
            "kid": key.kid,
            "vkey": key.verifier.encode(),
            "head": None
            if head is None
            else {"seq": head.seq, "batch_hash": b64encode(head.batch_hash)},
            "checkpoint": None if head is None else head.checkpoint,
            "privacy": self.policy.header(),
            "window_seconds": self.settings.window.seconds,
        }
