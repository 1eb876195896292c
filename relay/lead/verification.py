"""Which batches count: `relay verify` over the lead's source, kept current.

The lead verifies every stored document against the registry at start, before it answers, and
again whenever the source or the registry changes: a background task compares the source's change
token (the embedded store's data version, or Elasticsearch's document count and newest batch)
every `lead.verify_interval_seconds`, and verifies in full at least once an hour in any case (an
Elasticsearch document edited in place changes neither). While a run is under way the previous
result stays in force, so answers never wait for it.

Each result is kept in a checkpoint file beside the lead's rollups (embedded store only). A
restart on a source whose `state` and registry are those of the checkpoint takes the kept result
instead of verifying again; the hourly full run still checks everything (a document edited in
place leaves the state as it was). A source that changed while the lead was down is verified in
full before the lead answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from relay.lead.source import Source
from relay.lead.tally import BatchSelection
from relay.registry import Registry, RegistryError
from relay.verify import Finding, VerificationReport
from relay.verify.report import OriginHead, OriginTotals

__all__ = [
    "CHECKPOINT_FILE",
    "FORCED_REFRESH_SECONDS",
    "Verification",
    "VerificationCache",
    "report_from_dict",
    "report_to_dict",
]

log = logging.getLogger(__name__)

FORCED_REFRESH_SECONDS = 3600.0
#: The checkpoint's file name, in the lead's data_dir.
CHECKPOINT_FILE = "lead-verification.json"


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


def report_to_dict(report: VerificationReport) -> dict[str, Any]:
    """Everything of a report, for the checkpoint (verified batches as seq ranges)."""
    return {
        "findings": [finding.to_dict() for finding in report.findings],
        "verified": BatchSelection.of(report.verified, include=True).ranges,
        "heads": {origin: head.to_dict() for origin, head in report.heads.items()},
        "summaries_checked": report.summaries_checked,
        "batches_checked": report.batches_checked,
        "origins": {
            origin: [totals.batches, totals.summaries, totals.verified]
            for origin, totals in report.origins.items()
        },
    }


def report_from_dict(data: dict[str, Any]) -> VerificationReport:
    return VerificationReport(
        findings=[Finding(**finding) for finding in data["findings"]],
        verified={
            (origin, seq) for origin, lo, hi in data["verified"] for seq in range(lo, hi + 1)
        },
        heads={origin: OriginHead(**head) for origin, head in data["heads"].items()},
        summaries_checked=data["summaries_checked"],
        batches_checked=data["batches_checked"],
        origins={origin: OriginTotals(*totals) for origin, totals in data["origins"].items()},
    )


class VerificationCache:
    def __init__(
        self,
        source: Source,
        registry_path: Path,
        *,
        clock: Callable[[], int],
        interval_seconds: float,
        checkpoint: Path | None = None,
    ) -> None:
        self._source = source
        self._registry_path = registry_path
        self._clock = clock
        self._interval = interval_seconds
        self._checkpoint = checkpoint
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

    def _registry_digest(self) -> str | None:
        path = self._registry_path
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None

    async def _kept(self, registry: Registry) -> Verification | None:
        """The checkpoint's result, if it was of the source and registry as they are now."""
        if self._checkpoint is None or not self._checkpoint.exists():
            return None
        try:
            kept = orjson.loads(self._checkpoint.read_bytes())
            if kept["state"] != await self._source.state():
                return None
            if kept["registry"] != self._registry_digest():
                return None
            report = report_from_dict(kept["report"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("verification checkpoint %s unreadable; verifying", self._checkpoint)
            return None
        return Verification.of(report, registry, kept["checked_at_ms"], 0.0)

    async def _keep(self, v: Verification, state: str) -> None:
        if self._checkpoint is None:
            return
        kept = {
            "state": state,
            "registry": self._registry_digest(),
            "checked_at_ms": v.checked_at_ms,
            "report": report_to_dict(v.report),
        }
        partial = self._checkpoint.with_name(self._checkpoint.name + ".tmp")
        partial.write_bytes(orjson.dumps(kept))
        os.replace(partial, self._checkpoint)

    async def refresh(self, *, force: bool = False) -> Verification:
        """Verify again if anything changed (or if forced); return the result in force."""
        async with self._lock:
            token, registry = await self._inputs()
            if self._current is not None and token == self._token and not force:
                return self._current
            kept = None if self._current is not None or force else await self._kept(registry)
            if kept is not None:  # a restart on what was verified already
                await self._source.track(kept.report.verified)
                self._current, self._token = kept, token
                log.info(
                    "kept the verification of %d batches made at %d: the source has not "
                    "changed since",
                    len(kept.report.verified),
                    kept.checked_at_ms,
                )
                return kept
            # Taken before verifying: documents added meanwhile make a restart verify them.
            state = await self._source.state() if self._checkpoint is not None else ""
            started = time.perf_counter()
            now_ms = self._clock()
            report = await self._source.verify(registry, now_ms)
            seconds = time.perf_counter() - started
            # The source's index (rollups) first: the new result then reads from it at once.
            await self._source.track(report.verified)
            rolled = time.perf_counter() - started - seconds
            self._current = Verification.of(report, registry, now_ms, seconds)
            self._token = token
            await self._keep(self._current, state)
            log.info(
                "verified %d batches and %d summaries in %.2f s: %d verified, %d findings; "
                "rolled up in %.2f s",
                report.batches_checked,
                report.summaries_checked,
                seconds,
                len(report.verified),
                len(report.findings),
                rolled,
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
