"""Drains the outbox into the sink in seq order, retrying with jittered exponential backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from relay.metrics import RelayMetrics
from relay.outbox.outbox import Outbox
from relay.sinks.base import Sink, SinkError

__all__ = ["Shipper"]

log = logging.getLogger(__name__)

_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 60.0


class Shipper:
    def __init__(self, outbox: Outbox, sink: Sink, metrics: RelayMetrics, interval: float) -> None:
        self._outbox = outbox
        self._sink = sink
        self._metrics = metrics
        self._interval = interval
        self._wake = asyncio.Event()
        self._failures = 0
        # One drain at a time: the loop and a shutdown flush must not ship the same batch at once.
        self._lock = asyncio.Lock()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self.ship_pending()
            delay = self._interval if self._failures == 0 else self._backoff()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()

    def _backoff(self) -> float:
        ceiling = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** min(self._failures, 16))
        return random.uniform(ceiling / 2, ceiling)

    async def ship_pending(self) -> bool:
        """Ship batches until the outbox is empty or the sink fails; True if it emptied."""
        async with self._lock:
            return await self._drain()

    async def _drain(self) -> bool:
        while (batch := self._outbox.oldest()) is not None:
            seq, documents = batch
            started = time.perf_counter()
            try:
                await self._sink.ship(documents)
            except SinkError as exc:
                self._failures += 1
                self._metrics.ship_attempts.labels(self._sink.name, "error").inc()
                log.warning(
                    "shipping batch %d to %s failed (%s); will retry", seq, self._sink.name, exc
                )
                return False
            self._failures = 0
            self._metrics.ship_attempts.labels(self._sink.name, "ok").inc()
            self._metrics.ship_latency.observe(time.perf_counter() - started)
            self._outbox.shipped(seq)
            self._metrics.update_outbox(self._outbox)
        return True
