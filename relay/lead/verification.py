"""Which batches count: `relay verify` over the lead's source, kept current.

The lead verifies every stored document against the registry at start, before it answers, and
again whenever the source or the registry changes: a background task compares the source's change
token (the embedded store's data version, or Elasticsearch's document count and newest batch)
every `lead.verify_interval_seconds`, and verifies in full at least once an hour in any case (an
Elasticsearch document edited in place changes neither). While a run is under way the previous
result stays in force, so answers never wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from relay.lead.source import Source
from relay.lead.tally import BatchSelection
from relay.registry import Registry, RegistryError
from relay.verify import Finding, VerificationReport

__all__ = ["FORCED_REFRESH_SECONDS", "Verification", "VerificationCache"]

log = logging.getLogger(__name__)

FORCED_REFRESH_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Verification:
    """One verification run and what follows from it."""

    report: VerificationReport
    registry: Registry
    checked_at_ms: int
    seconds: float
    #: The batches that count, and all others (as filters for the source).
    verified: BatchSelection
    unverified: BatchSelection
    findings_by_batch: dict[tuple[str, int], list[Finding]]

    def is_verified(self, origin: str, seq: int) -> bool:
        return (origin, seq) in self.report.verified

    @classmethod
    def of(
        cls, report: VerificationReport, registry: Registry, checked_at_ms: int, seconds: float
    ) -> Verification:
        by_batch: dict[tuple[str, int], list[Finding]] = {}
        for finding in report.findings:
            if finding.origin is not None and finding.seq is not None:
                by_batch.setdefault((finding.origin, finding.seq), []).append(finding)
        verified = BatchSelection.of(report.verified, include=True)
        unverified = BatchSelection(verified.ranges, include=False)
        return cls(report, registry, checked_at_ms, seconds, verified, unverified, by_batch)


class VerificationCache:
    def __init__(
        self,
        source: Source,
        registry_path: Path,
        *,
        clock: Callable[[], int],
        interval_seconds: float,
    ) -> None:
        self._source = source
        self._registry_path = registry_path
        self._clock = clock
        self._interval = interval_seconds
        self._lock = asyncio.Lock()
        self._token: Hashable = None
        self._current: Verification | None = None
        self._registry: Registry | None = None

    @classmethod
    def settled(cls, source: Source, verification: Verification) -> VerificationCache:
        """A cache holding one given result and never refreshed: the re-check of a period
        report (relay/lead/report.py) decides itself which batches count."""
        cache = cls(source, Path(), clock=lambda: verification.checked_at_ms, interval_seconds=0)
        cache._current = verification
        return cache

    @property
    def has_run(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> Verification:
        if self._current is None:
            raise RuntimeError("verification has not run yet: call refresh() first")
        return self._current

    async def _inputs(self) -> tuple[Hashable, Registry]:
        mtime = self._registry_path.stat().st_mtime_ns if self._registry_path.exists() else None
        token = (await self._source.change_token(), mtime)
        try:
            self._registry = Registry.load(self._registry_path)
        except RegistryError:
            if self._registry is None:
                raise
            log.exception("registry unreadable; verifying with the last one read")
        return token, self._registry

    async def refresh(self, *, force: bool = False) -> Verification:
        """Verify again if anything changed (or if forced); return the result in force."""
        async with self._lock:
            token, registry = await self._inputs()
            if self._current is not None and token == self._token and not force:
                return self._current
            started = time.perf_counter()
            now_ms = self._clock()
            report = await self._source.verify(registry, now_ms)
            seconds = time.perf_counter() - started
            self._current = Verification.of(report, registry, now_ms, seconds)
            self._token = token
            log.info(
                "verified %d batches and %d summaries in %.2f s: %d verified, %d findings",
                report.batches_checked,
                report.summaries_checked,
                seconds,
                len(report.verified),
                len(report.findings),
            )
            return self._current

    async def run(self) -> None:
        """Refresh on change every interval, and in full every FORCED_REFRESH_SECONDS."""
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(self._interval)
            force = time.monotonic() - last_full >= FORCED_REFRESH_SECONDS
            try:
                await self.refresh(force=force)
            except Exception:
                log.exception("verification failed; the previous result stays in force")
                continue
            if force:
                last_full = time.monotonic()
