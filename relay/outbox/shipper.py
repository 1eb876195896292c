"""Drains the outbox into the sink in seq order, retrying with jittered exponential backoff.

Retries never stop: the outbox byte cap (503 to apps past it) bounds how long a sink may be away,
not an attempt count. A sink that refuses the relay's credentials pauses shipping: the relay
alerts (log, `relay_sink_paused`, `sink_authorized` in /readyz) and probes at the capped delay
until the credentials work again. A sink holding another document at one of the batch's ids
(someone took the id first) stops shipping the same way: the batch is never dropped or skipped,
and the relay alerts (log, `relay_sink_conflict`, `sink_content_matches` in /readyz) until a
person removes the other document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from relay.metrics import RelayMetrics
from relay.outbox.outbox import Outbox
from relay.sinks.base import Sink, SinkConflictError, SinkError, SinkUnauthorizedError

__all__ = ["Shipper"]

log = logging.getLogger(__name__)


class Shipper:
    def __init__(
        self,
        outbox: Outbox,
        sink: Sink,
        metrics: RelayMetrics,
        interval: float,
        *,
        retry_base: float,
        retry_max: float,
    ) -> None:
        self._outbox = outbox
        self._sink = sink
        self._metrics = metrics
        self._interval = interval
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._wake = asyncio.Event()
        self._failures = 0
        self.paused = False
        self.conflicted = False
        # One drain at a time: the loop and a shutdown flush must not ship the same batch at once.
        self._lock = asyncio.Lock()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self.ship_pending()
            delay = self._interval if self._failures == 0 else self._backoff()
            # asyncio.timeout, not wait_for: on 3.11 a cancel that lands as wait_for times out
            # comes back as TimeoutError, which this suppress would swallow, and the task
            # would never stop (seen as a hang at shutdown).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()

    def _backoff(self) -> float:
        ceiling = min(self._retry_max, self._retry_base * 2 ** min(self._failures, 16))
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
            except SinkUnauthorizedError as exc:
                self._failures += 1
                self._metrics.ship_attempts.labels(self._sink.name, "unauthorized").inc()
                self._pause(exc)
                return False
            except SinkConflictError as exc:
                self._failures += 1
                self._metrics.ship_attempts.labels(self._sink.name, "conflict").inc()
                self._conflict(seq, exc)
                return False
            except SinkError as exc:
                self._failures += 1
                self._metrics.ship_attempts.labels(self._sink.name, "error").inc()
                log.warning(
                    "shipping batch %d to %s failed (%s); will retry", seq, self._sink.name, exc
                )
                return False
            except Exception:
                # An error the sink did not foresee (an odd answer, a database error) must not end
                # the shipping task for good: the batch stays and is tried again like any failure.
                self._failures += 1
                self._metrics.ship_attempts.labels(self._sink.name, "error").inc()
                log.exception("shipping batch %d to %s failed; will retry", seq, self._sink.name)
                return False
            self._failures = 0
            self._resume()
            self._resolved()
            self._metrics.ship_attempts.labels(self._sink.name, "ok").inc()
            self._metrics.ship_latency.observe(time.perf_counter() - started)
            self._outbox.shipped(seq)
            self._metrics.update_outbox(*self._outbox.depth(), self._outbox.size_bytes)
        return True

    def _pause(self, exc: SinkUnauthorizedError) -> None:
        if not self.paused:
            # Once per pause: the condition needs a person, and repeating it every probe is noise.
            log.error(
                "%s refuses the relay's credentials (%s): shipping paused, nothing is dropped; "
                "fix sink.api_key or the key's privileges (retrying, backoff up to %.0f s)",
                self._sink.name,
                exc,
                self._retry_max,
            )
        self.paused = True
        self._metrics.sink_paused.set(1)

    def _resume(self) -> None:
        if self.paused:
            log.info("%s accepts the relay's credentials again: shipping resumed", self._sink.name)
            self.paused = False
            self._metrics.sink_paused.set(0)

    def _conflict(self, seq: int, exc: SinkConflictError) -> None:
        if not self.conflicted:
            log.error(
                "batch %d cannot be shipped to %s: %s. Someone who can write there took those "
                "ids first; nothing is dropped, shipping waits at this batch (retrying, backoff up "
                "to %.0f s) until those documents are removed from the sink.",
                seq,
                self._sink.name,
                exc,
                self._retry_max,
            )
        self.conflicted = True
        self._metrics.sink_conflict.set(1)

    def _resolved(self) -> None:
        if self.conflicted:
            log.info("%s holds our documents again: shipping resumed", self._sink.name)
            self.conflicted = False
            self._metrics.sink_conflict.set(0)
