"""The outbox gives back exactly the documents it was given, in order, and those of older relays."""

from __future__ import annotations

from pathlib import Path

import orjson

from relay.aggregate.cells import Cell
from relay.attest import ZERO_HASH
from relay.attest.batch import sign_batch
from relay.attest.canonical import canonical_json
from relay.attest.keys import OperatorKey
from relay.core.document import Document
from relay.outbox.outbox import ChainHead, Outbox
from relay.sinks.documents import batch_documents


def _documents() -> tuple[list[Document], bytes]:
    key = OperatorKey.generate("test.relay/outbox")
    summaries = []
    for n in range(5):
        cell = Cell()
        cell.tally[("request", "ok", "download")] = 10 + n
        cell.tally[("signal", "playback_slow", None)] = n
        cell.ttfb = {20: 3, 40 + n: 7}
        cell.assets = {"video": 10}
        cell.bytes_total = 12_345 * n
        summaries.append(cell.summary(("distributor", f"d{n}", "EU"), 0, 300_000))
    signed = sign_batch(
        key,
        seq=0,
        prev=ZERO_HASH,
        window_start_ms=0,
        window_end_ms=300_000,
        signed_at_ms=1,
        summaries=summaries,
        schema=2,
        privacy={"mode": "aggregate", "k": 10, "max_events_per_contributor": 50, "geo": "region"},
        stats={"accepted": 60},
    )
    return batch_documents(signed, summaries, "checkpoint", "relay-"), signed.batch_hash


def test_documents_come_back_unchanged(tmp_path: Path) -> None:
    documents, batch_hash = _documents()
    outbox = Outbox(tmp_path / "outbox.sqlite", "test.relay/outbox")
    head = ChainHead(0, batch_hash, 300_000, (), "checkpoint")
    outbox.commit(head, documents, log_leaf=bytes(32), sealed_at_ms=1)
    oldest = outbox.oldest()
    assert oldest is not None
    seq, stored = oldest
    assert seq == 0
    assert stored == documents
    # Format 2 keeps a summary's fields once already: the outbox stores what will ship.
    assert outbox.size_bytes == sum(len(orjson.dumps(doc.source)) for doc in documents)
    outbox.close()


def test_a_row_written_with_the_whole_source_is_read_as_is(tmp_path: Path) -> None:
    # Rows of a relay from before the compact form, still waiting to ship after an upgrade.
    documents, batch_hash = _documents()
    outbox = Outbox(tmp_path / "outbox.sqlite", "test.relay/outbox")
    outbox.commit(
        ChainHead(0, batch_hash, 300_000, (), "checkpoint"), [], log_leaf=bytes(32), sealed_at_ms=1
    )
    for ord_, doc in enumerate(documents):
        outbox._db.execute(
            "INSERT INTO pending VALUES (0, ?, ?, ?, ?, 1)",
            (ord_, doc.index, doc.id, orjson.dumps(doc.source)),
        )
    oldest = outbox.oldest()
    assert oldest is not None and oldest[1] == documents
    outbox.close()


def test_a_format_1_summary_kept_as_its_att_comes_back_whole(tmp_path: Path) -> None:
    # Relays before document format 2 kept a summary as `{"att": {"leaf", "n", "proof"}}`, its
    # fields being in the leaf; such rows still waiting after an upgrade ship as they were.
    documents, batch_hash = _documents()
    format_1 = [documents[0]]
    for doc in documents[1:]:
        fields = {key: value for key, value in doc.source.items() if key != "att"}
        att = {"leaf": canonical_json(fields).decode(), **doc.source["att"]}
        del att["leaf_hash"]
        format_1.append(Document(doc.index, doc.id, {**fields, "att": att}))
    outbox = Outbox(tmp_path / "outbox.sqlite", "test.relay/outbox")
    outbox.commit(
        ChainHead(0, batch_hash, 300_000, (), "checkpoint"), [], log_leaf=bytes(32), sealed_at_ms=1
    )
    for ord_, doc in enumerate(format_1):
        kept = {"att": doc.source["att"]} if "att" in doc.source else doc.source
        outbox._db.execute(
            "INSERT INTO pending VALUES (0, ?, ?, ?, ?, 1)",
            (ord_, doc.index, doc.id, orjson.dumps(kept)),
        )
    oldest = outbox.oldest()
    assert oldest is not None and oldest[1] == format_1
    outbox.close()
