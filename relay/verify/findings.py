"""What `relay verify` reports: findings with the pinned codes of DESIGN §5.6."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Code", "Finding"]


class Code(StrEnum):
    """The pinned finding codes (DESIGN §5.6); their values are the machine-readable codes."""

    UNKNOWN_KEY = "unknown_key"
    KEY_NOT_VALID_FOR_SEQ = "key_not_valid_for_seq"
    BAD_SIGNATURE = "bad_signature"
    NON_CANONICAL = "non_canonical"
    SEQ_GAP = "seq_gap"
    EQUIVOCATION = "equivocation"
    PREV_MISMATCH = "prev_mismatch"
    WINDOW_DISCONTINUITY = "window_discontinuity"
    ROOT_MISMATCH = "root_mismatch"
    SUMMARY_COUNT_MISMATCH = "summary_count_mismatch"
    LEAF_MISMATCH = "leaf_mismatch"
    BAD_INCLUSION_PROOF = "bad_inclusion_proof"
    ORPHAN_SUMMARY = "orphan_summary"
    FUTURE_TIMESTAMP = "future_timestamp"
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    INVALID_LEAF = "invalid_leaf"
    INCONSISTENT_CHECKPOINT = "inconsistent_checkpoint"
    MISSING_COSIGNATURE = "missing_cosignature"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: its pinned code, where it is (origin, seq, document id) and a sentence."""

    code: str
    origin: str | None
    seq: int | None
    doc_id: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "origin": self.origin,
            "seq": self.seq,
            "doc_id": self.doc_id,
            "message": self.message,
        }
