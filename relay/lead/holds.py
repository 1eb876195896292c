"""Holds: batches that are evidence in a dispute, kept past retention (`relay hold`).

A hold names an origin and an inclusive seq range of verified batches, with the batch_hash of each
and the `prev` of the first (so the held range verifies on its own: sinks.documents.ChainStart), a
reason and a time. It is a statement signed by the lead's key (relay/lead/statement.py,
`relay-hold/v1`), so an auditor can tell who held what and why; releasing it is another signed
statement naming the hold. Both are kept in the lead's own SQLite file, `<data_dir>/holds.sqlite`.

What a hold protects: on the embedded store, retention stops at a held batch
(relay/sinks/retention.py); on Elasticsearch the held batches and their summaries are copied into
`<prefix>holds`, an index no ILM policy manages (relay/lead/hold_copy.py).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from relay.attest.keys import OperatorKey, VerifierKey
from relay.core.b64 import b64decode
from relay.lead.service import LeadService
from relay.lead.statement import (
    HOLD_DOMAIN,
    StatementError,
    open_statement,
    sign_statement,
    signed_message,
)
from relay.sinks.documents import ChainStart

__all__ = [
    "Hold",
    "HoldBook",
    "HoldError",
    "check_hold",
    "held_batches",
    "hold_id",
    "make_hold",
    "parse_seqs",
]

#: A hold covers at most this many batches (a day of 1-minute windows is 1440).
MAX_HELD_BATCHES = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS holds (
    id TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    hold BLOB NOT NULL,      -- the signed hold statement (JSON envelope)
    release BLOB             -- the signed release statement, once released
);
"""


class HoldError(Exception):
    """A hold that cannot be made, found or released; the message says why."""


def parse_seqs(text: str) -> tuple[int, int]:
    """`A-B` (inclusive) or a single `A`."""
    match = re.fullmatch(r"([0-9]{1,15})(?:-([0-9]{1,15}))?", text)
    if match is None:
        raise HoldError(f"--seqs must be A-B or A (whole numbers), got {text!r}")
    first = int(match.group(1))
    last = int(match.group(2) or first)
    if last < first:
        raise HoldError(f"--seqs {text}: the range ends before it starts")
    if last - first + 1 > MAX_HELD_BATCHES:
        raise HoldError(f"--seqs {text}: more than {MAX_HELD_BATCHES} batches in one hold")
    return first, last


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    envelope: dict[str, Any]
    release: dict[str, Any] | None

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = self.envelope["body"]
        return body

    @property
    def origin(self) -> str:
        return str(self.body["origin"])

    @property
    def seqs(self) -> range:
        return range(self.body["first_seq"], self.body["last_seq"] + 1)

    @property
    def batch_hashes(self) -> list[str]:
        return list(self.body["batch_hashes"])

    @property
    def chain_start(self) -> ChainStart:
        """The held range as a chain of its own (its first batch links to `prev`)."""
        return ChainStart(self.body["first_seq"], b64decode(self.body["prev"]), None)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "hold": self.envelope, "release": self.release}


def hold_id(envelope: dict[str, Any]) -> str:
    """`h-` and 16 hex digits of SHA-256 over the signed message: names the statement itself."""
    digest = hashlib.sha256(signed_message(HOLD_DOMAIN, envelope["body"])).hexdigest()
    return f"h-{digest[:16]}"


async def held_batches(
    service: LeadService, origin: str, first: int, last: int
) -> tuple[str, list[str]]:
    """(prev of `first`, batch_hash of each seq) for a range of verified batches; HoldError if
    one is missing or did not verify (only verified evidence is held)."""
    verification = service.verification.current
    hashes, prev = [], None
    for seq in range(first, last + 1):
        doc = await service.source.batch(origin, seq)
        if doc is None:
            raise HoldError(f"{origin} seq {seq}: no such batch")
        if not verification.is_verified(origin, seq):
            raise HoldError(f"{origin} seq {seq}: the batch did not verify; only verified are held")
        hashes.append(str(doc.source["batch_hash"]))
        if seq == first:
            prev = str(doc.source["prev"])
    assert prev is not None
    return prev, hashes


def make_hold(
    key: OperatorKey,
    *,
    origin: str,
    first: int,
    last: int,
    prev: str,
    batch_hashes: list[str],
    reason: str,
    now_ms: int,
) -> Hold:
    body = {
        "v": 1,
        "type": "hold",
        "origin": origin,
        "first_seq": first,
        "last_seq": last,
        "prev": prev,
        "batch_hashes": batch_hashes,
        "reason": reason,
        "held_at_ms": now_ms,
    }
    envelope = sign_statement(key, HOLD_DOMAIN, body)
    return Hold(hold_id(envelope), envelope, None)


class HoldBook:
    """The lead's holds, in `<data_dir>/holds.sqlite`."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        if readonly:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.executescript(_SCHEMA)

    @classmethod
    def active_in(cls, path: Path) -> set[tuple[str, int]]:
        """Every (origin, seq) under an active hold; none if there is no holds file."""
        if not path.exists():
            return set()
        book = cls(path, readonly=True)
        try:
            return {(h.origin, seq) for h in book.holds() if h.release is None for seq in h.seqs}
        finally:
            book.close()

    def close(self) -> None:
        self._db.close()

    def record(self, hold: Hold) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO holds VALUES (?, ?, ?, ?, ?, NULL)",
            (
                hold.id,
                hold.origin,
                hold.seqs.start,
                hold.seqs.stop - 1,
                orjson.dumps(hold.envelope),
            ),
        )

    def release(self, key: OperatorKey, hold_id_: str, reason: str, now_ms: int) -> Hold:
        hold = self.get(hold_id_)
        if hold.release is not None:
            raise HoldError(f"hold {hold_id_} is released already")
        body = {
            "v": 1,
            "type": "release",
            "hold": hold.id,
            "reason": reason,
            "released_at_ms": now_ms,
        }
        envelope = sign_statement(key, HOLD_DOMAIN, body)
        self._db.execute(
            "UPDATE holds SET release = ? WHERE id = ?", (orjson.dumps(envelope), hold.id)
        )
        return Hold(hold.id, hold.envelope, envelope)

    def get(self, hold_id_: str) -> Hold:
        for hold in self.holds():
            if hold.id == hold_id_:
                return hold
        raise HoldError(f"no hold {hold_id_}")

    def holds(self) -> Iterator[Hold]:
        for hold_id_, envelope, release in self._db.execute(
            "SELECT id, hold, release FROM holds ORDER BY origin, first_seq, id"
        ):
            yield Hold(
                hold_id_, orjson.loads(envelope), None if release is None else orjson.loads(release)
            )


def check_hold(hold: Hold, vkey: VerifierKey) -> None:
    """StatementError unless ``vkey`` signed the hold (and its release, if any)."""
    open_statement(hold.envelope, HOLD_DOMAIN, vkey)
    if hold.release is not None:
        body = open_statement(hold.release, HOLD_DOMAIN, vkey)
        if body.get("hold") != hold.id:
            raise StatementError(f"the release names hold {body.get('hold')}, not {hold.id}")
