"""The result of a verification run, and its machine-readable form (`relay verify --json`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relay.verify.findings import Finding

__all__ = ["OriginHead", "OriginTotals", "VerificationReport"]


@dataclass(frozen=True, slots=True)
class OriginHead:
    """The last batch of an origin's chain whose signature verified."""

    seq: int
    batch_hash: str  # standard base64, as in documents and GET /v1/operator
    checkpoint: str | None  # its stored checkpoint note, if that opened with the batch's key
    last_window_end_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "batch_hash": self.batch_hash,
            "checkpoint": self.checkpoint,
            "last_window_end_ms": self.last_window_end_ms,
        }


@dataclass(slots=True)
class OriginTotals:
    """Per-origin counts: batch documents read, summary documents checked, batches verified."""

    batches: int = 0
    summaries: int = 0
    verified: int = 0


@dataclass(slots=True)
class VerificationReport:
    findings: list[Finding] = field(default_factory=list)
    #: (origin, seq) of every batch whose signature, chain position, root and summaries all held.
    verified: set[tuple[str, int]] = field(default_factory=set)
    heads: dict[str, OriginHead] = field(default_factory=dict)
    summaries_checked: int = 0
    batches_checked: int = 0
    origins: dict[str, OriginTotals] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """The `--json` report: findings, totals, and per origin its counts and chain head."""
        origins: dict[str, Any] = {}
        for origin in sorted(self.origins):
            totals = self.origins[origin]
            head = self.heads.get(origin)
            origins[origin] = {
                "batches": totals.batches,
                "batches_verified": totals.verified,
                "summaries_checked": totals.summaries,
                "head": None if head is None else head.to_dict(),
            }
        return {
            "ok": self.ok,
            "findings": [finding.to_dict() for finding in self.findings],
            "batches_checked": self.batches_checked,
            "summaries_checked": self.summaries_checked,
            "origins": origins,
        }
