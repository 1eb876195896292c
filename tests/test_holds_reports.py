"""Holds, retention and signed period reports (issue 17, parts 3 and 4).

Real relays build the store (tests/test_lead_data.py: origins a and b, seqs 0 and 1 each, in two
one-minute windows after T0); retention runs on real SQLite, and on the fake Elasticsearch
(tests/fake_elasticsearch_search.py) ILM is simulated by deleting the indices its policy deletes.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.attest.keys import OperatorKey
from relay.cli import main
from relay.config import Settings
from relay.lead.commands import hold_add, holds_path, make_report
from relay.lead.hold_copy import check_held, held_documents, holds_index
from relay.lead.holds import Hold, HoldBook, HoldError, check_hold
from relay.lead.report import recheck_report
from relay.lead.statement import (
    HOLD_DOMAIN,
    REPORT_DOMAIN,
    StatementError,
    open_statement,
    sign_statement,
)
from relay.registry import Registry
from relay.sinks.elasticsearch import make_client
from relay.sinks.retention import DAY_MS, apply_retention
from relay.sinks.store import EmbeddedStore
from relay.verify import verify_documents
from relay.verify.sources import store_documents
from tests.conftest import T0_MS
from tests.fake_elasticsearch_search import SearchingElasticsearch
from tests.test_lead_api import tamper
from tests.test_lead_data import (
    NOW_MS,
    ORIGIN_A,
    ORIGIN_B,
    WINDOW_MS,
    build_store,
    lead_service,
    lead_settings,
)
from tests.test_lead_elasticsearch import ship_store

FROM, TO = str(T0_MS), str(T0_MS + 2 * WINDOW_MS)
#: Both windows are older than a one-day retention then.
LATER_MS = T0_MS + 3 * DAY_MS


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("built")
    asyncio.run(build_store(root))
    return root


@pytest.fixture
def settings(built: Path, tmp_path: Path) -> Settings:
    """A fresh copy of the built store, with a lead key."""
    root = tmp_path / "root"
    shutil.copytree(built, root)
    settings = lead_settings(root)
    OperatorKey.generate("dao.lead").save(settings.lead_key_path)
    return settings


def lead_key(settings: Settings) -> OperatorKey:
    return OperatorKey.load(settings.lead_key_path)


def registry(settings: Settings) -> Registry:
    return Registry.load(settings.registry_path)


def store_path(settings: Settings) -> Path:
    return settings.data_dir / "store.sqlite"


def retain(settings: Settings) -> list[Any]:
    store = EmbeddedStore(store_path(settings))
    try:
        return apply_retention(
            store,
            now_ms=LATER_MS,
            retention_days=1,
            held=HoldBook.active_in(holds_path(settings)),
        )
    finally:
        store.close()


def chain_starts(settings: Settings) -> dict[str, Any]:
    store = EmbeddedStore(store_path(settings), readonly=True)
    try:
        return store.chain_starts()
    finally:
        store.close()


def verify_store(settings: Settings, **kwargs: Any) -> Any:
    return verify_documents(
        registry(settings), store_documents(store_path(settings)), now_ms=NOW_MS, **kwargs
    )


def ids(settings: Settings) -> set[str]:
    return {doc.id for doc in store_documents(store_path(settings))}


def only_hold(settings: Settings) -> Hold:
    book = HoldBook(holds_path(settings), readonly=True)
    try:
        (hold,) = book.holds()
        return hold
    finally:
        book.close()


ZERO_B64 = base64.b64encode(bytes(32)).decode()


def forge_marker(settings: Settings, origin: str, column: str, value: str) -> None:
    """Make the retention marker of ``origin`` state ``value`` as its ``column`` (log, prev)."""
    db = sqlite3.connect(store_path(settings))
    try:
        db.execute(f"UPDATE retained SET {column} = ? WHERE origin = ?", (value, origin))
        db.commit()
    finally:
        db.close()


# -- holds and retention on the embedded store ----------------------------------------------------


async def test_retention_keeps_a_held_batch_which_still_verifies(settings: Settings) -> None:
    held = await hold_add(settings, ORIGIN_A, "1", "dispute 7: node d1", clock=lambda: NOW_MS)
    assert held["documents_copied"] is None  # the embedded store keeps it where it is
    hold = only_hold(settings)
    check_hold(hold, lead_key(settings).verifier)  # signed by the lead

    results = {r.origin: r for r in retain(settings)}
    assert results[ORIGIN_A].first_seq == 1 and results[ORIGIN_A].stopped_by_hold == 1
    assert results[ORIGIN_B].first_seq == 2  # nothing held: all of b's old batches went
    left = ids(settings)
    assert f"{ORIGIN_A}|b|1" in left and f"{ORIGIN_A}|b|0" not in left
    # Never a batch without its summaries, nor summaries without their batch.
    assert {i.split("|")[2] for i in left} == {"1"} and all(i.startswith(ORIGIN_A) for i in left)

    report = verify_store(settings, chain_starts=chain_starts(settings))
    assert report.findings == []
    assert report.verified == {(ORIGIN_A, 1)}
    # The lead verifies the pruned store the same way.
    service = await lead_service(settings)
    try:
        assert service.verification.current.report.findings == []
        assert service.verification.current.report.verified == {(ORIGIN_A, 1)}
    finally:
        await service.source.close()
    assert check_held(store_documents(store_path(settings)), hold, registry(settings), NOW_MS) == []
    # The marker is what keeps that from being a gap: without it, seq 0 is missing.
    without = verify_store(settings)
    assert "seq_gap" in {f.code for f in without.findings}


async def test_a_released_hold_no_longer_stops_retention(settings: Settings) -> None:
    await hold_add(settings, ORIGIN_A, "1", "dispute 7", clock=lambda: NOW_MS)
    hold = only_hold(settings)
    book = HoldBook(holds_path(settings))
    try:
        released = book.release(lead_key(settings), hold.id, "settled", NOW_MS)
    finally:
        book.close()
    check_hold(released, lead_key(settings).verifier)
    retain(settings)
    assert ids(settings) == set()
    assert chain_starts(settings)[ORIGIN_A].seq == 2


async def test_only_verified_batches_can_be_held(settings: Settings) -> None:
    tamper(settings, f"{ORIGIN_B}|s|0|0", requests=900, outcomes={"ok": 900})
    with pytest.raises(HoldError, match="did not verify"):
        await hold_add(settings, ORIGIN_B, "0-1", "x", clock=lambda: NOW_MS)
    with pytest.raises(HoldError, match="no such batch"):
        await hold_add(settings, ORIGIN_A, "1-2", "x", clock=lambda: NOW_MS)


async def test_a_forged_marker_log_shows_as_checkpoint_mismatch(settings: Settings) -> None:
    await hold_add(settings, ORIGIN_A, "1", "dispute 7", clock=lambda: NOW_MS)
    retain(settings)
    assert verify_store(settings, chain_starts=chain_starts(settings)).findings == []
    forge_marker(settings, ORIGIN_A, "log", f'["{ZERO_B64}"]')
    codes = {f.code for f in verify_store(settings, chain_starts=chain_starts(settings)).findings}
    assert codes == {"checkpoint_mismatch"}
    forge_marker(settings, ORIGIN_A, "prev", ZERO_B64)
    codes = {f.code for f in verify_store(settings, chain_starts=chain_starts(settings)).findings}
    assert "prev_mismatch" in codes


def test_saved_checkpoints_after_retention(settings: Settings) -> None:
    store = EmbeddedStore(store_path(settings), readonly=True)
    try:
        notes = {
            d.source["seq"]: d.source["checkpoint"]
            for d in store.documents(ORIGIN_A)
            if "att" not in d.source
        }
    finally:
        store.close()
    retain(settings)  # a's seqs 0 and 1 both go: the marker stands at size 2
    assert chain_starts(settings)[ORIGIN_A].seq == 2
    # Of the marker's size: compared with the marker's log, and it agrees.
    report = verify_store(
        settings, chain_starts=chain_starts(settings), saved_checkpoints=[notes[1]]
    )
    assert report.findings == []
    # Older ones cannot be confirmed any more, and the finding says why.
    older = verify_store(
        settings, chain_starts=chain_starts(settings), saved_checkpoints=[notes[0]]
    )
    (finding,) = older.findings
    assert finding.code == "checkpoint_mismatch" and "deleted" in finding.message
    # A marker that lies about the deleted log disagrees with the auditor's saved checkpoint.
    forge_marker(settings, ORIGIN_A, "log", f'["{ZERO_B64}"]')
    lying = verify_store(
        settings, chain_starts=chain_starts(settings), saved_checkpoints=[notes[1]]
    )
    (finding,) = lying.findings
    assert finding.code == "checkpoint_mismatch" and "retention marker" in finding.message


# -- holds on Elasticsearch -----------------------------------------------------------------------


@pytest.fixture
async def es(settings: Settings, tmp_path: Path) -> AsyncIterator[SearchingElasticsearch]:
    fake = SearchingElasticsearch()
    await fake.start()
    await ship_store(store_path(settings), fake, tmp_path)
    yield fake
    await fake.close()


async def test_a_held_batch_survives_ilm_deletion_on_elasticsearch(
    settings: Settings, es: SearchingElasticsearch
) -> None:
    on_es = lead_settings(settings.data_dir.parent, source={"type": "elasticsearch", "url": es.url})
    held = await hold_add(on_es, ORIGIN_A, "0-1", "dispute 8", clock=lambda: NOW_MS)
    # a's two batches and their summaries
    assert held["documents_copied"] == len([i for i in ids(settings) if i.startswith(ORIGIN_A)])
    hold = only_hold(settings)

    deleted = es.run_ilm_deletion()
    assert deleted and not any(name.startswith("relay-batches") for name in es.indices)
    assert list(es.indices) == ["relay-holds"]

    client = make_client(es.url)
    try:
        documents = [d async for d in held_documents(client, holds_index("relay-"), hold)]
    finally:
        await client.close()
    assert check_held(documents, hold, registry(settings), NOW_MS) == []
    # And the check can fail: a held copy edited in place no longer verifies.
    summary = next(d for d in documents if "att" in d.source)
    summary.source["requests"] += 1
    assert check_held(documents, hold, registry(settings), NOW_MS) != []


async def test_a_copy_that_differs_is_refused(
    settings: Settings, es: SearchingElasticsearch
) -> None:
    on_es = lead_settings(settings.data_dir.parent, source={"type": "elasticsearch", "url": es.url})
    # Someone put another document under one of the ids first.
    es.indices["relay-holds"] = {f"{ORIGIN_A}|b|0": {"origin": ORIGIN_A, "seq": 0}}
    with pytest.raises(HoldError, match="differs"):
        await hold_add(on_es, ORIGIN_A, "0-1", "dispute 8", clock=lambda: NOW_MS)
    assert not holds_path(on_es).exists() or list(HoldBook(holds_path(on_es)).holds()) == []


# -- signed period reports ------------------------------------------------------------------------


async def report(settings: Settings, fmt: Any) -> str:
    return await make_report(settings, FROM, TO, fmt, clock=lambda: NOW_MS)


async def recheck(settings: Settings, text: str, **kwargs: Any) -> set[str]:
    findings = await recheck_report(
        text,
        lead_key(settings).verifier,
        registry(settings),
        store_documents(store_path(settings)),
        now_ms=NOW_MS,
        **kwargs,
    )
    return {f.code for f in findings}


@pytest.mark.parametrize("fmt", ["md", "csv", "json"])
async def test_a_report_rechecks(settings: Settings, fmt: str) -> None:
    text = await report(settings, fmt)
    assert await recheck(settings, text) == set()
    assert "41" in text  # not vacuous: d1's requests (tests/test_lead_data.py)


async def test_changing_any_number_is_detected(settings: Settings) -> None:
    md = await report(settings, "md")
    table_row = next(line for line in md.splitlines() if "| d1 |" in line)
    edited = md.replace(table_row, table_row.replace("| 41 |", "| 42 |"))
    assert edited != md
    assert await recheck(settings, edited) == {"report_mismatch"}

    envelope = orjson.loads(await report(settings, "json"))
    envelope["body"]["nodes"][0]["requests"] += 1
    assert await recheck(settings, orjson.dumps(envelope).decode()) == {"report_bad_signature"}

    # A lead that signs wrong numbers: the recomputation from the listed batches disagrees.
    lying = sign_statement(lead_key(settings), REPORT_DOMAIN, envelope["body"])
    assert await recheck(settings, orjson.dumps(lying).decode()) == {"report_mismatch"}

    # Another key than the lead's.
    other = sign_statement(OperatorKey.generate("dao.lead"), REPORT_DOMAIN, envelope["body"])
    assert await recheck(settings, orjson.dumps(other).decode()) == {"report_bad_signature"}


async def test_listed_batches_must_be_there_and_verify(settings: Settings) -> None:
    text = await report(settings, "json")
    tamper(settings, f"{ORIGIN_B}|s|0|0", requests=900, outcomes={"ok": 900})
    assert "report_batch_unverified" in await recheck(settings, text)
    drop_origin(store_path(settings), ORIGIN_B)
    assert "report_batch_missing" in await recheck(settings, text)


def drop_origin(path: Path, origin: str) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute("DELETE FROM documents WHERE origin = ?", (origin,))
        db.commit()
    finally:
        db.close()


async def test_a_report_that_leaves_out_batches_is_detected(settings: Settings) -> None:
    """A lead that reports from fewer batches than it holds: figures and list agree with each
    other, so only completeness against the auditor's own copy shows it."""
    full = store_path(settings).with_name("full.sqlite")
    shutil.copyfile(store_path(settings), full)
    drop_origin(store_path(settings), ORIGIN_B)
    text = await report(settings, "json")
    assert ORIGIN_B not in {run["origin"] for run in orjson.loads(text)["body"]["batches"]}
    assert await recheck(settings, text) == set()  # against the lead's own (partial) copy
    shutil.copyfile(full, store_path(settings))
    assert await recheck(settings, text) == {"report_batch_unlisted"}

    # A batch signed after the report was generated could not have been in it.
    body = orjson.loads(text)["body"]
    signed_at = [
        doc.source["signed_at_ms"]
        for doc in store_documents(store_path(settings))
        if doc.source.get("origin") == ORIGIN_B and "att" not in doc.source
    ]
    body["generated_at_ms"] = min(signed_at) - 1
    earlier = sign_statement(lead_key(settings), REPORT_DOMAIN, body)
    assert "report_batch_unlisted" not in await recheck(settings, orjson.dumps(earlier).decode())


async def test_a_report_without_its_period_is_refused(settings: Settings) -> None:
    body = orjson.loads(await report(settings, "json"))["body"]
    del body["from_ms"]
    envelope = sign_statement(lead_key(settings), REPORT_DOMAIN, body)
    assert await recheck(settings, orjson.dumps(envelope).decode()) == {"report_bad_signature"}


def test_relay_verify_report_on_the_command_line(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "report.csv"
    path.write_text(asyncio.run(report(settings, "csv")))
    args = [
        "verify",
        "--report",
        str(path),
        "--lead-key",
        lead_key(settings).verifier.encode(),
        "--registry",
        str(settings.registry_path),
        "--store",
        str(settings.data_dir),
    ]
    assert main(args) == 0
    lines = path.read_text().splitlines()
    (row,) = [n for n, line in enumerate(lines) if line.startswith("distributor,d1,")]
    assert ",41," in lines[row]
    lines[row] = lines[row].replace(",41,", ",40,")
    path.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(args) == 1
    assert "report_mismatch" in capsys.readouterr().out


def test_statements_of_one_kind_do_not_pass_for_another(settings: Settings) -> None:
    key = lead_key(settings)
    hold = sign_statement(key, HOLD_DOMAIN, {"type": "report"})
    with pytest.raises(StatementError):
        open_statement(hold, REPORT_DOMAIN, key.verifier)


def test_hold_and_retention_on_the_command_line(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "lead.yaml"
    config.write_text(
        f"data_dir: {settings.data_dir}\n"
        f"lead: {{registry: {settings.registry_path}}}\n"
        "store: {retention_days: 1}\n"
    )
    hold = ["hold", "add", "--config", str(config), "--origin", ORIGIN_A, "--seqs", "1"]
    assert main([*hold, "--reason", "dispute 9"]) == 0
    hold_id = orjson.loads(capsys.readouterr().out)["id"]
    assert main(["hold", "list", "--config", str(config)]) == 0
    (listed,) = orjson.loads(capsys.readouterr().out)["holds"]
    assert listed["id"] == hold_id and listed["signature"] == "ok"
    # The fixture's windows are in January 2026: more than a day before the wall clock.
    assert main(["retention", "--config", str(config)]) == 0
    assert "stopped at held seq 1" in capsys.readouterr().out
    assert {i.split("|")[1:3] == ["b", "1"] for i in ids(settings) if "|b|" in i} == {True}
    assert main(["hold", "release", "--config", str(config), hold_id, "--reason", "done"]) == 0
    assert main(["retention", "--config", str(config)]) == 0
    assert ids(settings) == set()


async def test_a_hold_checks_by_hand_as_the_readme_says(settings: Settings) -> None:
    """docs/auditors.md "For auditors": PyNaCl and rfc8785 alone, with the published lead key."""
    import nacl.exceptions
    import rfc8785
    from nacl.signing import VerifyKey

    await hold_add(settings, ORIGIN_A, "0-1", "dispute 7", clock=lambda: NOW_MS)
    hold = orjson.loads(orjson.dumps(only_hold(settings).envelope))  # as saved from `hold list`
    vkey = lead_key(settings).verifier.encode()
    raw = base64.b64decode(vkey.split("+", 2)[2])
    assert raw[0] == 1
    message = b"relay-hold/v1\n" + rfc8785.dumps(hold["body"])
    VerifyKey(raw[1:]).verify(message, base64.b64decode(hold["sig"]))
    hold["body"]["reason"] = "something else"
    with pytest.raises(nacl.exceptions.BadSignatureError):
        VerifyKey(raw[1:]).verify(
            b"relay-hold/v1\n" + rfc8785.dumps(hold["body"]), base64.b64decode(hold["sig"])
        )


def test_relay_lead_report_on_the_command_line(settings: Settings, tmp_path: Path) -> None:
    config = tmp_path / "lead.yaml"
    config.write_text(
        f"data_dir: {settings.data_dir}\nlead: {{registry: {settings.registry_path}}}\n"
    )
    out = tmp_path / "report.json"
    report_args = ["--config", str(config), "--from", FROM, "--to", TO, "--format", "json"]
    assert main(["lead", "report", *report_args, "--out", str(out)]) == 0
    assert orjson.loads(out.read_text())["body"]["from_ms"] == T0_MS
    check = ["verify", "--report", str(out), "--lead-key", lead_key(settings).verifier.encode()]
    sources = ["--registry", str(settings.registry_path), "--store", str(settings.data_dir)]
    assert main([*check, *sources]) == 0
    assert main([*check[:-1], OperatorKey.generate("dao.lead").verifier.encode(), *sources]) == 1
