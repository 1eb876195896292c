"""`relay verify`: an honest export verifies clean, and each kind of tampering is named.

The data comes from a real relay (real HTTP, WAL, sealing, signing, outbox, embedded store); the
tampering is done on the exported documents, as someone with write access to Elasticsearch (or
with the operator key, for the forger) would.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.attest.canonical import canonical_json
from relay.attest.keys import OperatorKey
from relay.attest.merkle import leaf_hash
from relay.cli import main
from relay.config import Settings
from relay.core.document import Document
from relay.core.problem import Problem
from relay.lead import es_source
from relay.lead.es_source import ElasticsearchSource
from relay.lead.server import build_service
from relay.lead.store_source import StoreSource
from relay.lead.timerange import TimeRange
from relay.registry import Registry
from relay.sinks.store import EmbeddedStore
from relay.verify import Finding, verify_documents
from relay.verify.elasticsearch import documents_from_hits, elasticsearch_documents
from tests.conftest import T0_MS, RunningRelay
from tests.fake_elasticsearch_search import SearchingElasticsearch
from tests.verify_support import (
    ORIGIN,
    as_format_1,
    b64,
    codes,
    fields_of,
    forge,
    header_of,
    honest_export,
    is_batch,
    leaf_of,
    operator_key,
    registry_of,
    restate,
    verify,
    with_source,
    without,
    write_ndjson,
)

StartRelay = Callable[..., Any]
SEQS = 4  # batches in the honest export, two summaries each


@dataclass
class Export:
    running: RunningRelay
    documents: list[Document]
    registry: Registry
    key: OperatorKey

    def batch(self, seq: int) -> Document:
        return next(d for d in self.documents if is_batch(d) and d.source["seq"] == seq)

    def summary(self, seq: int, i: int) -> Document:
        return next(
            d
            for d in self.documents
            if not is_batch(d) and d.source["seq"] == seq and d.source["i"] == i
        )

    def replace(self, old: Document, new: Document) -> list[Document]:
        return [new if d is old else d for d in self.documents]


@pytest.fixture
async def export(start_relay: StartRelay) -> Export:
    running: RunningRelay = await start_relay()
    documents = await honest_export(running, SEQS)
    return Export(running, documents, registry_of(running), operator_key(running))


@pytest.fixture(params=[2, 1], ids=["format2", "format1"])
def any_export(request: pytest.FixtureRequest, export: Export) -> Export:
    """The honest export as relay writes it (document format 2), and the same history as relays
    before format 2 wrote it (`att.leaf`, `schema` 1): readers accept both (DESIGN §2)."""
    if request.param == 2:
        return export
    documents = as_format_1(export.documents, export.key)
    return Export(export.running, documents, export.registry, export.key)


def format_of(export: Export) -> int:
    return 1 if "leaf" in export.summary(0, 0).source["att"] else 2


async def test_honest_export_verifies_clean(any_export: Export) -> None:
    export = any_export
    assert {header_of(export.batch(seq))["schema"] for seq in range(SEQS)} == {format_of(export)}
    report = verify(export.registry, export.documents)
    assert report.findings == []
    assert report.verified == {(ORIGIN, seq) for seq in range(SEQS)}
    assert (report.batches_checked, report.summaries_checked) == (SEQS, 2 * SEQS)
    head = report.heads[ORIGIN]
    last = export.batch(SEQS - 1).source
    assert (head.seq, head.batch_hash, head.checkpoint) == (
        SEQS - 1,
        last["batch_hash"],
        last["checkpoint"],
    )
    assert head.last_window_end_ms == T0_MS + SEQS * 60_000
    if format_of(export) == 1:
        return  # re-signed by the test, so the relay serves another head
    # The head checkpoint is what the relay serves to auditors.
    async with export.running.http.get(export.running.url("/v1/operator")) as resp:
        operator = await resp.json()
    assert operator["checkpoint"] == head.checkpoint
    assert report.to_dict()["origins"][ORIGIN]["batches_verified"] == SEQS


def tamper_summary_count(export: Export) -> list[Document]:
    summary = export.summary(1, 0)
    return export.replace(summary, with_source(summary, requests=summary.source["requests"] + 1))


def delete_batch(export: Export) -> list[Document]:
    return without(export.documents, lambda d: d.source["seq"] == 2)


def flip_signature(export: Export) -> list[Document]:
    batch = export.batch(1)
    sig = bytearray(orjson.loads(orjson.dumps(batch.source["sig"])).encode())
    sig[5] = ord("A") if sig[5] != ord("A") else ord("B")
    return export.replace(batch, with_source(batch, sig=sig.decode()))


def respell_signature(export: Export) -> list[Document]:
    """The same signature bytes, spelled with the unused bits of the last digit set: a lenient
    decoder reads the signature that verifies; one spelling per value makes it a bad one."""
    batch = export.batch(1)
    sig = batch.source["sig"]
    assert sig.endswith("==") and sig[-3] in "AQgw"  # 64 bytes: 4 unused bits in the last digit
    respelled = sig[:-3] + chr(ord(sig[-3]) + 1) + "=="
    return export.replace(batch, with_source(batch, sig=respelled))


def reserialise_signed_header(export: Export) -> list[Document]:
    """The operator key signs the same header with white space and reversed key order."""

    def encode(seq: int, header: dict[str, Any]) -> bytes:
        if seq != 1:
            return canonical_json(header)
        return json.dumps(dict(reversed(header.items())), indent=1).encode()

    return forge(export.documents, lambda seq: export.key, encode=encode)


def reserialise_signed_leaf(export: Export) -> list[Document]:
    """A Merkle tree built over a leaf with white space: included, signed, not canonical. In
    format 2 the fields are not that leaf (the verifier writes them canonically)."""
    summary = export.summary(2, 1)
    leaf = json.dumps(json.loads(leaf_of(summary)), indent=1)
    tampered = with_source(summary, att={**summary.source["att"], "leaf": leaf})
    return forge(export.replace(summary, tampered), lambda seq: export.key)


def remove_summary(export: Export) -> list[Document]:
    return without(export.documents, lambda d: d is export.summary(3, 1))


def rewrite_signed_leaf(export: Export) -> list[Document]:
    """A changed field with the leaf (format 2: its hash) restated to match it."""
    summary = export.summary(1, 1)
    fields = fields_of(summary)
    fields["requests"] += 5
    return export.replace(summary, restate(summary, fields))


def equivocate_in_group(export: Export) -> list[Document]:
    """A second signed batch for seq 2 beside the first (as in two monthly indices)."""
    fork = forge(export.documents, lambda seq: export.key, edit=_more_accepted_in(2))
    forked = next(d for d in fork if is_batch(d) and d.source["seq"] == 2)
    at = export.documents.index(export.batch(2)) + 1
    return [*export.documents[:at], forked, *export.documents[at:]]


def equivocate_by_concatenation(export: Export) -> list[Document]:
    """Two exports concatenated, the second with a different seq 2 and its summaries."""
    fork = forge(export.documents, lambda seq: export.key, edit=_more_accepted_in(2))
    return export.documents + [d for d in fork if d.source["seq"] == 2]


def _more_accepted_in(
    target: int, *, balanced: bool = True
) -> Callable[[int, dict[str, Any]], None]:
    """One more accepted event in batch ``target``; balanced: one that was over the cap."""

    def edit(seq: int, header: dict[str, Any]) -> None:
        if seq == target:
            header["stats"]["accepted"] += 1
            header["stats"]["over_cap"] += balanced

    return edit


def unbalance_stats(export: Export) -> list[Document]:
    """Signed stats claiming an event that no published summary counts (aggregate mode)."""
    return forge(
        export.documents, lambda seq: export.key, edit=_more_accepted_in(1, balanced=False)
    )


def sign_with_unregistered_key(export: Export) -> list[Document]:
    stranger = OperatorKey.generate(ORIGIN)
    return forge(export.documents, lambda seq: stranger if seq == 2 else export.key)


def orphan_summaries(export: Export) -> list[Document]:
    return without(export.documents, lambda d: d is export.batch(2))


def shift_window(export: Export) -> list[Document]:
    def edit(seq: int, header: dict[str, Any]) -> None:
        if seq == 2:
            header["window_start_ms"] += 1_000

    return forge(export.documents, lambda seq: export.key, edit=edit)


def break_prev_link(export: Export) -> list[Document]:
    def edit(seq: int, header: dict[str, Any]) -> None:
        if seq == 2:
            header["prev"] = b64(bytes(range(32)))

    return forge(export.documents, lambda seq: export.key, edit=edit)


def sign_in_the_future(export: Export) -> list[Document]:
    def edit(seq: int, header: dict[str, Any]) -> None:
        if seq == 3:
            header["signed_at_ms"] += 10 * 365 * 86_400_000

    return forge(export.documents, lambda seq: export.key, edit=edit)


def seal_before_window_end(export: Export) -> list[Document]:
    def edit(seq: int, header: dict[str, Any]) -> None:
        if seq == 1:
            header["signed_at_ms"] = header["window_end_ms"] - 1

    return forge(export.documents, lambda seq: export.key, edit=edit)


def swap_stored_checkpoint(export: Export) -> list[Document]:
    batch = export.batch(2)
    return export.replace(
        batch, with_source(batch, checkpoint=export.batch(1).source["checkpoint"])
    )


def edit_batch_copy(export: Export) -> list[Document]:
    batch = export.batch(0)
    return export.replace(batch, with_source(batch, n=batch.source["n"] + 1))


def sign_summary_content(
    export: Export, seq: int, change: Callable[[dict[str, Any]], None]
) -> list[Document]:
    """The registered key signs summary (seq, 0) with content relay would never publish."""
    summary = export.summary(seq, 0)
    content = fields_of(summary)
    change(content)
    return forge(export.replace(summary, restate(summary, content)), lambda seq: export.key)


MARKUP = "<script>alert(1)</script>"


def sign_markup_node_id(export: Export) -> list[Document]:
    def change(content: dict[str, Any]) -> None:
        content["node"] = {**content["node"], "id": MARKUP}

    return sign_summary_content(export, 1, change)


def sign_negative_count(export: Export) -> list[Document]:
    def change(content: dict[str, Any]) -> None:
        content["requests"] = -content["requests"]

    return sign_summary_content(export, 2, change)


TAMPERING: list[tuple[Callable[[Export], list[Document]], set[str], set[int]]] = [
    # (tampering, the codes reported, seqs no longer verified)
    (tamper_summary_count, {"leaf_mismatch"}, {1}),
    (delete_batch, {"seq_gap"}, {2, 3}),
    (flip_signature, {"bad_signature"}, {1, 2}),
    (respell_signature, {"bad_signature"}, {1, 2}),
    (reserialise_signed_header, {"non_canonical"}, {1, 2}),
    (reserialise_signed_leaf, {"leaf_mismatch"}, {2}),
    (remove_summary, {"summary_count_mismatch"}, {3}),
    (unbalance_stats, {"summary_count_mismatch"}, {1}),
    (rewrite_signed_leaf, {"bad_inclusion_proof", "root_mismatch"}, {1}),
    (equivocate_in_group, {"equivocation"}, {2}),
    (equivocate_by_concatenation, {"equivocation"}, {2}),
    (sign_with_unregistered_key, {"unknown_key"}, {2, 3}),
    (orphan_summaries, {"orphan_summary", "seq_gap"}, {2, 3}),
    (shift_window, {"window_discontinuity"}, {2}),
    (break_prev_link, {"prev_mismatch"}, {2}),
    (sign_in_the_future, {"future_timestamp"}, {3}),
    (seal_before_window_end, {"future_timestamp"}, {1}),
    (swap_stored_checkpoint, {"checkpoint_mismatch"}, {2}),
    (edit_batch_copy, {"leaf_mismatch"}, {0}),
    (sign_markup_node_id, {"invalid_leaf"}, {1}),
    (sign_negative_count, {"invalid_leaf"}, {2}),
]


# Where document format 1 (a stored leaf) names a tampering otherwise: a format-2 leaf is written
# by the verifier from the fields, canonically, so a non-canonical signed leaf is not theirs.
FORMAT_1_CODES: dict[Callable[[Export], list[Document]], set[str]] = {
    reserialise_signed_leaf: {"non_canonical"},
}


@pytest.mark.parametrize(
    ("tamper", "expected", "unverified"), TAMPERING, ids=[t[0].__name__ for t in TAMPERING]
)
async def test_tampering_is_named(
    any_export: Export,
    tamper: Callable[[Export], list[Document]],
    expected: set[str],
    unverified: set[int],
) -> None:
    export = any_export
    if format_of(export) == 1:
        expected = FORMAT_1_CODES.get(tamper, expected)
    report = verify(export.registry, tamper(export))
    assert codes(report) == expected, report.findings
    assert all(f.origin == ORIGIN and f.seq is not None for f in report.findings)
    assert report.verified == {(ORIGIN, seq) for seq in range(SEQS) if seq not in unverified}


async def test_findings_name_the_document(any_export: Export) -> None:
    export = any_export
    report = verify(export.registry, tamper_summary_count(export))
    (finding,) = report.findings
    # With the leaf stored (format 1) the differing fields can be named; with its hash, not.
    message = {
        1: "searchable fields ['requests'] differ from the signed leaf",
        2: "searchable fields differ from the signed leaf: their RFC 8785 form does not hash to "
        "att.leaf_hash, which the proof leads to the signed root",
    }[format_of(export)]
    assert finding == Finding("leaf_mismatch", ORIGIN, 1, f"{ORIGIN}|s|1|0", message)
    assert finding.to_dict()["doc_id"] == f"{ORIGIN}|s|1|0"


async def test_key_used_outside_its_registry_validity(export: Export) -> None:
    registry = export.registry.model_copy(deep=True)
    registry.operators[0].keys[0].valid_until_seq = 1
    report = verify(registry, export.documents)
    assert [(f.code, f.seq) for f in report.findings] == [
        ("key_not_valid_for_seq", 2),
        ("key_not_valid_for_seq", 3),
    ]


async def test_unregistered_origin_reports_unknown_key(export: Export) -> None:
    report = verify(Registry(), export.documents)
    assert [(f.code, f.seq) for f in report.findings] == [("unknown_key", s) for s in range(SEQS)]
    assert report.summaries_checked == 0 and report.verified == set()


async def test_future_timestamp_against_the_auditor_clock(export: Export) -> None:
    # The batches were signed 70 to 250 s after T0; the auditor allows 5 minutes of clock skew.
    behind = verify(export.registry, export.documents, now_ms=T0_MS - 3_600_000)
    assert [(f.code, f.seq) for f in behind.findings] == [
        ("future_timestamp", s) for s in range(SEQS)
    ]
    assert verify(export.registry, export.documents, now_ms=T0_MS).findings == []


async def test_elasticsearch_hits_seam(export: Export) -> None:
    hits = [
        {"_index": d.index, "_id": d.id, "_source": d.source, "sort": []} for d in export.documents
    ]
    report = verify_documents(export.registry, documents_from_hits(hits))
    assert report.findings == [] and len(report.verified) == SEQS


# -- the command ------------------------------------------------------------------------------


async def test_cli_exit_codes_and_json(
    export: Export, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = str(export.running.relay.settings.registry_path)
    data_dir = str(export.running.relay.settings.data_dir)
    honest = write_ndjson(tmp_path / "honest.ndjson", export.documents)
    tampered = write_ndjson(tmp_path / "tampered.ndjson", delete_batch(export))

    assert main(["verify", "--registry", registry, "--input", str(honest)]) == 0
    assert main(["verify", "--registry", registry, "--store", data_dir]) == 0
    assert "no findings" in capsys.readouterr().out

    assert main(["verify", "--registry", registry, "--input", str(tampered)]) == 1
    assert capsys.readouterr().out.startswith(
        f"seq_gap: {ORIGIN} seq 3 ({ORIGIN}|b|3): batch 2 is missing before seq 3\n"
    )
    assert main(["verify", "--registry", registry, "--input", str(tampered), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert [f["code"] for f in report["findings"]] == ["seq_gap"]
    assert report["findings"][0] == {
        "code": "seq_gap",
        "origin": ORIGIN,
        "seq": 3,
        "doc_id": f"{ORIGIN}|b|3",
        "message": "batch 2 is missing before seq 3",
    }
    summary = report["origins"][ORIGIN]
    assert (summary["batches"], summary["summaries_checked"]) == (SEQS - 1, 2 * (SEQS - 1))
    assert summary["head"]["seq"] == SEQS - 1

    # Could not run: 2.
    bad_registry = tmp_path / "registry.yaml"
    bad_registry.write_text("operators: [{origin: x, keys: [{vkey: nonsense}]}]\n")
    assert main(["verify", "--registry", str(bad_registry), "--input", str(honest)]) == 2
    assert main(["verify", "--registry", registry, "--input", str(tmp_path / "none")]) == 2
    assert main(["verify", "--registry", registry, "--store", str(tmp_path / "none")]) == 2
    (tmp_path / "broken.ndjson").write_bytes(honest.read_bytes()[:-20] + b"\n")
    assert main(["verify", "--registry", registry, "--input", str(tmp_path / "broken.ndjson")]) == 2
    assert "relay verify:" in capsys.readouterr().err


async def test_cli_in_a_subprocess(export: Export, tmp_path: Path) -> None:
    registry = str(export.running.relay.settings.registry_path)
    honest = write_ndjson(tmp_path / "honest.ndjson", export.documents)
    command = [sys.executable, "-m", "relay", "verify", "--registry", registry, "--input", "-"]
    run = subprocess.run(command, input=honest.read_text(), capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines() == [
        f"{ORIGIN}: {SEQS} batches ({SEQS} verified), {2 * SEQS} summaries checked, "
        f"head seq {SEQS - 1} {export.batch(SEQS - 1).source['batch_hash']}",
        "no findings",
    ]


async def test_equivocating_batches_at_a_page_boundary_are_both_read(
    export: Export, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drift 2 of issue 14: both readers see both batches of an equivocation.

    The two seq 2 batches (one in a later monthly index) tie on (origin, seq, i); the page
    ends between them, where a `search_after` with no tiebreaker skips the second.
    """
    documents = equivocate_in_group(export)
    forked = next(
        d for d in documents if is_batch(d) and d.source["seq"] == 2 and d is not export.batch(2)
    )
    later = Document(re.sub(r"\d{4}\.\d{2}$", "2099.01", forked.index), forked.id, forked.source)
    assert later.index != forked.index
    documents = [later if d is forked else d for d in documents]
    page = sum(1 for d in documents if d.source["seq"] < 2) + 1  # the page ends after the first
    expected = verify(export.registry, documents, now_ms=T0_MS)
    assert "equivocation" in codes(expected)

    es = SearchingElasticsearch()
    await es.start()
    try:
        for d in documents:
            es.indices.setdefault(d.index, {})[d.id] = d.source
        monkeypatch.setattr(es_source, "READ_PAGE", page)
        lead = ElasticsearchSource(es.url, api_key=None, index_prefix="relay-", ca_certs=None)
        try:
            by_lead = await lead.verify(export.registry, T0_MS)
        finally:
            await lead.close()
        assert by_lead.findings == expected.findings
        read = await asyncio.to_thread(
            lambda: list(elasticsearch_documents(es.url, page_size=page))
        )
        assert es.pits == {}  # both closed their point in time
    finally:
        await es.close()
    assert sorted((d.index, d.id) for d in read) == sorted((d.index, d.id) for d in documents)
    by_command = verify(export.registry, read, now_ms=T0_MS)
    assert by_command.findings == expected.findings


async def test_a_summary_stored_twice_is_counted_once(export: Export) -> None:
    duplicate = export.summary(2, 0)
    at = export.documents.index(duplicate) + 1
    documents = [*export.documents[:at], duplicate, *export.documents[at:]]
    report = verify(export.registry, documents)
    assert report.findings == [] and len(report.verified) == SEQS


async def test_signed_content_outside_the_summary_schema_is_not_verified_data(
    export: Export, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = export.running.relay.settings.registry_path
    markup = sign_markup_node_id(export)
    negative = sign_negative_count(Export(export.running, markup, export.registry, export.key))
    assert (
        main(
            [
                "verify",
                "--registry",
                str(registry),
                "--input",
                str(write_ndjson(tmp_path / "signed.ndjson", negative)),
                "--json",
            ]
        )
        == 1
    )
    report = json.loads(capsys.readouterr().out)
    findings = [(f["code"], f["doc_id"]) for f in report["findings"]]
    assert findings == [("invalid_leaf", f"{ORIGIN}|s|1|0"), ("invalid_leaf", f"{ORIGIN}|s|2|0")]
    messages = [f["message"] for f in report["findings"]]
    assert "node.id" in messages[0] and "requests" in messages[1]
    assert MARKUP not in json.dumps(report)  # the value itself is never repeated

    # The lead over these documents: the summaries are not shown as verified data.
    settings = Settings(data_dir=tmp_path / "lead", lead={"registry": registry})
    settings.data_dir.mkdir()
    store = EmbeddedStore(settings.data_dir / "store.sqlite")
    try:
        assert store.write(negative) == []
    finally:
        store.close()
    lead = await build_service(
        settings, StoreSource(settings.data_dir / "store.sqlite"), lambda: T0_MS + 86_400_000
    )
    try:
        assert lead.verification.current.report.verified == {(ORIGIN, 0), (ORIGIN, 3)}
        every_window = TimeRange(T0_MS - 86_400_000, T0_MS + 86_400_000)
        nodes = await lead.nodes(every_window, role=None, region=None, include_unverified=False)
        assert MARKUP not in json.dumps(nodes)
        for seq in (1, 2):
            with pytest.raises(Problem) as hidden:
                await lead.summary(ORIGIN, seq, 0, include_unverified=False)
            assert (hidden.value.status, hidden.value.slug) == (404, "unverified")
        shown = await lead.summary(ORIGIN, 1, 0, include_unverified=True)
        assert shown["verified"] is False
        assert [f["code"] for f in shown["findings"]] == ["invalid_leaf"]
    finally:
        await lead.source.close()


FORMAT_1 = Path(__file__).resolve().parent / "data" / "format-1"


async def test_documents_of_format_1_verify_and_the_lead_reads_them(tmp_path: Path) -> None:
    """Documents as relay wrote them before document format 2 (three windows of `run_windows`,
    written by commit 61fdbe6 and kept byte for byte): `schema` 1, `att.leaf`. Stores and
    Elasticsearch indices hold such documents after an upgrade (DESIGN §2: readers accept both)."""
    registry = Registry.load(FORMAT_1 / "registry.yaml")
    lines = (FORMAT_1 / "export.ndjson").read_bytes().splitlines()
    documents = [Document.from_line(line) for line in lines]
    summaries = [d for d in documents if not is_batch(d)]
    assert len(summaries) == 6
    assert all(set(d.source["att"]) == {"leaf", "n", "proof"} for d in summaries)
    assert {header_of(d)["schema"] for d in documents if is_batch(d)} == {1}

    report = verify(registry, documents)
    assert report.findings == []
    assert report.verified == {(ORIGIN, seq) for seq in range(3)}
    first = summaries[0]
    tampered = [
        with_source(d, requests=d.source["requests"] + 1) if d is first else d for d in documents
    ]
    assert [(f.code, f.doc_id, f.message) for f in verify(registry, tampered).findings] == [
        ("leaf_mismatch", first.id, "searchable fields ['requests'] differ from the signed leaf")
    ]

    settings = Settings(data_dir=tmp_path / "lead", lead={"registry": FORMAT_1 / "registry.yaml"})
    settings.data_dir.mkdir()
    store = EmbeddedStore(settings.data_dir / "store.sqlite")
    try:
        assert store.write(documents) == []
    finally:
        store.close()
    lead = await build_service(
        settings, StoreSource(settings.data_dir / "store.sqlite"), lambda: T0_MS + 86_400_000
    )
    try:
        assert lead.verification.current.report.verified == {(ORIGIN, seq) for seq in range(3)}
        every_window = TimeRange(T0_MS - 86_400_000, T0_MS + 86_400_000)
        nodes = await lead.nodes(every_window, role=None, region=None, include_unverified=False)
        assert sum(node["requests"] for node in nodes["nodes"]) == sum(
            d.source["requests"] for d in summaries
        )
        shown = await lead.summary(ORIGIN, 0, 0, include_unverified=False)
        leaf = first.source["att"]["leaf"].encode()
        assert shown["inclusion"]["leaf_hash"] == b64(leaf_hash(leaf))
    finally:
        await lead.source.close()
