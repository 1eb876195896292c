"""Signed period reports (`relay lead report`) and their re-check (`relay verify --report`).

A report is the lead's answer to `GET /v1/nodes` over a period (DESIGN §8, verified batches only),
computed by the lead service itself, plus the list of batches it was computed from (per origin,
seq ranges with every batch_hash), signed by the lead's key as a `relay-report/v1` statement
(relay/lead/statement.py). Markdown and CSV renderings carry the signed JSON with them.

The re-check needs no trust in the lead: it checks the signature with the lead key the auditor
was given, verifies every listed batch in the auditor's own copy of the documents (store,
Elasticsearch or NDJSON), then puts exactly the listed batches into a scratch embedded store and
asks the same lead service for the same period. Every figure must come out equal. Findings (not
the pinned batch codes of DESIGN §5.6; these are about a report):

- `report_bad_signature`: not signed by the given lead key, or not a report at all;
- `report_batch_missing`: a listed batch is not in the documents read;
- `report_batch_mismatch`: a listed batch is there with another batch_hash;
- `report_batch_unverified`: a listed batch is there but does not verify;
- `report_batch_unlisted`: a batch of the period that verifies in the auditor's copy, signed before
  the report was generated, is not listed: the report's figures leave it out (a lead that omits
  batches, or one that had not received them yet: the auditor judges which);
- `report_mismatch`: a figure differs from the recomputation (or the text from the signed JSON).
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import orjson
from pydantic import ValidationError

from relay.attest.keys import OperatorKey, VerifierKey
from relay.config import LeadThresholds
from relay.core.document import Document
from relay.core.numbers import is_int
from relay.lead.health import OUTCOMES, SIGNALS
from relay.lead.service import LeadService
from relay.lead.statement import REPORT_DOMAIN, StatementError, open_statement, sign_statement
from relay.lead.store_source import StoreSource
from relay.lead.timerange import TimeRange
from relay.lead.verification import Verification, VerificationCache
from relay.registry import Registry
from relay.sinks.documents import ChainStart
from relay.sinks.store import EmbeddedStore
from relay.verify.report import VerificationReport
from relay.verify.verifier import verify_documents

__all__ = ["ReportFinding", "build_report", "load_report", "recheck_report", "render_report"]

Format = Literal["json", "md", "csv"]
_PAGE: Final = 1000
_CSV_MARK: Final = f"# {REPORT_DOMAIN} "
_MD_OPEN: Final = "```json\n"


@dataclass(frozen=True, slots=True)
class ReportFinding:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


# -- making one -----------------------------------------------------------------------------------


async def _listed_batches(service: LeadService, time_range: TimeRange) -> list[dict[str, Any]]:
    """The verified batches of the period, as per-origin runs of consecutive seqs."""
    selection = service.verification.current.verified
    found: list[tuple[str, int, str]] = []
    offset = 0
    while True:
        page = await service.source.batches(None, time_range, selection, _PAGE, offset)
        found += [(s["origin"], s["seq"], s["batch_hash"]) for s in page.sources]
        offset += _PAGE
        if offset >= page.total:
            break
    runs: list[dict[str, Any]] = []
    for origin, seq, digest in sorted(found):
        last = runs[-1] if runs else None
        if last is not None and last["origin"] == origin and last["last_seq"] == seq - 1:
            last["last_seq"] = seq
            last["batch_hashes"].append(digest)
        else:
            runs.append(
                {"origin": origin, "first_seq": seq, "last_seq": seq, "batch_hashes": [digest]}
            )
    return runs


async def _figures(service: LeadService, time_range: TimeRange) -> dict[str, Any]:
    answer = await service.nodes(time_range, role=None, region=None, include_unverified=False)
    # Through JSON, as a reader of the report sees them (tuples become lists, and so on).
    figures: dict[str, Any] = orjson.loads(
        orjson.dumps({k: answer[k] for k in ("thresholds", "nodes", "network")})
    )
    return figures


async def build_report(
    service: LeadService, time_range: TimeRange, key: OperatorKey, now_ms: int
) -> dict[str, Any]:
    """The signed report of ``time_range`` (module docstring)."""
    body = {
        "v": 1,
        "type": "report",
        "from_ms": time_range.from_ms,
        "to_ms": time_range.to_ms,
        "generated_at_ms": now_ms,
        **await _figures(service, time_range),
        "batches": await _listed_batches(service, time_range),
    }
    return sign_statement(key, REPORT_DOMAIN, body)


# -- renderings -----------------------------------------------------------------------------------


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _number(value: Any) -> str:
    return "" if value is None else str(value)


_COLUMNS: Final = [
    *("role", "id", "status", "coverage", "requests", "success_ratio"),
    *("ttfb_p50_ms", "ttfb_p90_ms", "ttfb_p99_ms", "duration_p50_ms", "duration_p90_ms"),
    *("duration_p99_ms", "summaries", "operators"),
]


def _row(node: dict[str, Any]) -> list[str]:
    return [
        node["role"],
        node["id"],
        node["status"],
        node["coverage"],
        _number(node["requests"]),
        _number(node["success_ratio"]),
        *(_number(node["ttfb_ms"][q]) for q in ("p50", "p90", "p99")),
        *(_number(node["duration_ms"][q]) for q in ("p50", "p90", "p99")),
        _number(node["summaries"]),
        " ".join(node["operators"]),
    ]


def _counts(node: dict[str, Any]) -> list[str]:
    return [_number(node["outcomes"].get(n, 0)) for n in OUTCOMES] + [
        _number(node["signals"].get(n, 0)) for n in SIGNALS
    ]


def render_report(envelope: dict[str, Any], fmt: Format) -> str:
    """The report as JSON (the signed envelope itself), Markdown or CSV (each with it)."""
    compact = orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS).decode()
    if fmt == "json":
        return orjson.dumps(envelope, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    body = envelope["body"]
    nodes: list[dict[str, Any]] = body["nodes"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            _COLUMNS + [f"outcome_{n}" for n in OUTCOMES] + [f"signal_{n}" for n in SIGNALS]
        )
        for node in nodes:
            writer.writerow(_row(node) + _counts(node))
        return out.getvalue() + _CSV_MARK + compact + "\n"
    lines = [
        "# relay period report",
        "",
        f"Period: {_when(body['from_ms'])} to {_when(body['to_ms'])} (epoch ms "
        f"{body['from_ms']} to {body['to_ms']}), generated {_when(body['generated_at_ms'])}.",
        f"Signed by the lead key `{envelope['signer']}`. Figures are from verified batches only.",
        "",
        "## Nodes",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
        *("| " + " | ".join(_row(node)) + " |" for node in nodes),
        "",
        "## Batches",
        "",
        "| origin | seqs | batches |",
        "|---|---|---|",
        *(
            f"| {run['origin']} | {run['first_seq']}-{run['last_seq']} | "
            f"{len(run['batch_hashes'])} |"
            for run in body["batches"]
        ),
        "",
        "## Signed report",
        "",
        "Re-check: `relay verify --report FILE --lead-key KEY --registry R` and a source.",
        "",
        _MD_OPEN + compact,
        "```",
        "",
    ]
    return "\n".join(lines)


def load_report(text: str) -> tuple[object, Format | None]:
    """The signed envelope in a rendered report, and the rendering (None: not found)."""
    try:
        return orjson.loads(text), "json"
    except orjson.JSONDecodeError:
        pass
    for line in text.splitlines():
        if line.startswith(_CSV_MARK):
            return _loads(line[len(_CSV_MARK) :]), "csv"
    start = text.rfind(_MD_OPEN)
    if start >= 0:
        return _loads(text[start + len(_MD_OPEN) :].split("\n", 1)[0]), "md"
    return None, None


def _loads(text: str) -> object:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


# -- re-checking one ------------------------------------------------------------------------------


def _listed(body: dict[str, Any]) -> dict[tuple[str, int], str]:
    listed: dict[tuple[str, int], str] = {}
    for run in body["batches"]:
        seqs = range(run["first_seq"], run["last_seq"] + 1)
        for seq, digest in zip(seqs, run["batch_hashes"], strict=True):
            listed[(run["origin"], seq)] = digest
    return listed


def _differences(path: str, reported: Any, recomputed: Any) -> Iterator[str]:
    if isinstance(reported, dict) and isinstance(recomputed, dict):
        for key in sorted(reported.keys() | recomputed.keys()):
            yield from _differences(f"{path}.{key}", reported.get(key), recomputed.get(key))
    elif isinstance(reported, list) and isinstance(recomputed, list):
        if len(reported) != len(recomputed):
            yield f"{path}: {len(reported)} entries reported, {len(recomputed)} recomputed"
        for n, (a, b) in enumerate(zip(reported, recomputed, strict=False)):
            yield from _differences(f"{path}[{n}]", a, b)
    elif orjson.dumps(reported) != orjson.dumps(recomputed):
        yield f"{path}: reported {reported!r}, recomputed {recomputed!r}"


async def _recompute(
    body: dict[str, Any],
    documents: list[Document],
    verified: set[tuple[str, int]],
    registry: Registry,
    thresholds: LeadThresholds,
) -> dict[str, Any]:
    """The lead service's figures over exactly ``documents``, in a scratch embedded store."""
    with tempfile.TemporaryDirectory(prefix="relay-report-") as scratch:
        path = Path(scratch) / "store.sqlite"
        store = EmbeddedStore(path)
        try:
            store.write(documents)
        finally:
            store.close()
        source = StoreSource(path)
        try:
            report = VerificationReport(verified=verified)
            cache = VerificationCache.settled(
                source, Verification.of(report, registry, body["generated_at_ms"], 0.0)
            )
            service = LeadService(source, cache, thresholds, lambda: body["generated_at_ms"])
            return await _figures(service, TimeRange(body["from_ms"], body["to_ms"]))
        finally:
            await source.close()


@dataclass(frozen=True, slots=True)
class _PeriodBatch:
    """A batch document whose window starts in the report's period, as the auditor holds it."""

    origin: str
    seq: int
    signed_at_ms: object  # the searchable copy; trusted only once the batch verified


def _in_period(source: Mapping[str, Any], body: Mapping[str, Any]) -> _PeriodBatch | None:
    """The batch a document is, if it is a batch document of the report's period (the lead's
    own selection: window start in [from_ms, to_ms))."""
    if "att" in source:  # a summary: most documents, so decided first
        return None
    origin, seq, start = source.get("origin"), source.get("seq"), source.get("window_start_ms")
    if not isinstance(origin, str) or not is_int(seq) or not is_int(start):
        return None
    if not body["from_ms"] <= start < body["to_ms"]:
        return None
    return _PeriodBatch(origin, seq, source.get("signed_at_ms"))


def _unlisted_findings(
    period: Iterable[_PeriodBatch],
    listed: Mapping[tuple[str, int], str],
    verified: set[tuple[str, int]],
    generated_at_ms: int,
) -> list[ReportFinding]:
    """Every verified batch of the period the lead could have had, listed (completeness)."""
    findings = []
    for batch in sorted(period, key=lambda b: (b.origin, b.seq)):
        key = (batch.origin, batch.seq)
        signed_at = batch.signed_at_ms
        if key in listed or key not in verified or not is_int(signed_at):
            continue
        if signed_at <= generated_at_ms:
            findings.append(
                ReportFinding(
                    "report_batch_unlisted",
                    f"{batch.origin} seq {batch.seq}: verifies, its window is in the period and "
                    "it was signed before the report, which does not list it",
                )
            )
    return findings


def _batch_findings(
    listed: dict[tuple[str, int], str],
    stored: dict[tuple[str, int], Any],
    verified: set[tuple[str, int]],
) -> list[ReportFinding]:
    """Each listed batch is stored, with the batch_hash the report lists, and verifies."""
    findings = []
    for (origin, seq), digest in listed.items():
        where = f"{origin} seq {seq}"
        if (origin, seq) not in stored:
            findings.append(ReportFinding("report_batch_missing", f"{where}: not found"))
        elif stored[(origin, seq)] != digest:
            findings.append(
                ReportFinding(
                    "report_batch_mismatch",
                    f"{where}: batch_hash {stored[(origin, seq)]}, the report lists {digest}",
                )
            )
        elif (origin, seq) not in verified:
            findings.append(ReportFinding("report_batch_unverified", f"{where}: does not verify"))
    return findings


async def recheck_report(
    text: str,
    lead_key: VerifierKey,
    registry: Registry,
    documents: Iterable[Document],
    *,
    now_ms: int,
    chain_starts: dict[str, ChainStart] | None = None,
) -> list[ReportFinding]:
    """Findings about a rendered report (none: it is what the listed batches say)."""
    envelope, fmt = load_report(text)
    if fmt is None:
        return [ReportFinding("report_bad_signature", "no signed report found in the text")]
    try:
        body = open_statement(envelope, REPORT_DOMAIN, lead_key)
        if body.get("type") != "report":
            raise StatementError("the signed statement is not a report")
        if not all(is_int(body.get(k)) for k in ("from_ms", "to_ms", "generated_at_ms")):
            raise StatementError("the report does not state its period and generation time")
        listed = _listed(body)
        thresholds = LeadThresholds.model_validate(body["thresholds"])
    except (StatementError, KeyError, TypeError, ValueError, ValidationError) as exc:
        return [ReportFinding("report_bad_signature", str(exc))]
    assert isinstance(envelope, dict)
    findings: list[ReportFinding] = []
    if fmt != "json" and render_report(envelope, fmt) != text:
        findings.append(
            ReportFinding(
                "report_mismatch", f"the {fmt} text differs from the signed report it carries"
            )
        )
    kept: list[Document] = []
    period: list[_PeriodBatch] = []

    def keep(source: Iterable[Document]) -> Iterator[Document]:
        for doc in source:
            if (doc.source.get("origin"), doc.source.get("seq")) in listed:
                kept.append(doc)
            batch = _in_period(doc.source, body)
            if batch is not None:
                period.append(batch)
            yield doc

    verification = verify_documents(
        registry, keep(documents), now_ms=now_ms, chain_starts=chain_starts
    )
    stored = {
        (d.source["origin"], d.source["seq"]): d.source.get("batch_hash")
        for d in kept
        if "att" not in d.source
    }
    findings += _batch_findings(listed, stored, verification.verified)
    findings += _unlisted_findings(period, listed, verification.verified, body["generated_at_ms"])
    good = set(listed) & verification.verified
    recomputed = await _recompute(body, kept, good, registry, thresholds)
    for key in ("nodes", "network"):
        for difference in _differences(key, body.get(key), recomputed[key]):
            findings.append(ReportFinding("report_mismatch", difference))
    return findings
