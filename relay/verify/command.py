"""`relay verify` (DESIGN §2, pinned): exit 0 = no findings, 1 = findings, 2 = could not run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import sys
from collections.abc import Coroutine, Generator, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from relay.attest.cosignature import CosignerKey
from relay.attest.errors import AttestError, InvalidVerifierKeyError
from relay.attest.keys import VerifierKey
from relay.core.clock import wall_clock_ms
from relay.core.document import Document
from relay.registry import Registry, RegistryError
from relay.sinks.documents import ChainStart
from relay.verify.consistency import operator_proof_findings
from relay.verify.elasticsearch import elasticsearch_documents
from relay.verify.errors import SourceError, VerifyError
from relay.verify.report import VerificationReport
from relay.verify.sources import ndjson_documents, store_chain_starts, store_documents
from relay.verify.verifier import verify_documents

__all__ = ["add_verify_command"]


class ReportFinding(Protocol):
    @property
    def code(self) -> str: ...

    @property
    def message(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class RecheckReport(Protocol):
    """Re-checks a period report of the lead (relay.lead.report.recheck_report), passed in by
    the CLI so that verification does not depend on the lead."""

    def __call__(
        self,
        text: str,
        lead_key: VerifierKey,
        registry: Registry,
        documents: Iterable[Document],
        *,
        now_ms: int,
        chain_starts: dict[str, ChainStart] | None = None,
    ) -> Coroutine[Any, Any, Sequence[ReportFinding]]: ...


def add_verify_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], recheck_report: RecheckReport
) -> None:
    verify = commands.add_parser(
        "verify",
        help="check signed batches and summaries against an operator registry",
        description="Check every batch and summary against the registry (DESIGN §5.6). "
        "Exit status: 0 no findings, 1 findings, 2 could not run.",
    )
    verify.add_argument("--registry", type=Path, required=True, help="operator registry YAML")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--store", type=Path, help="embedded store: store.sqlite, or the data_dir holding it"
    )
    source.add_argument("--es", metavar="URL", help="Elasticsearch holding the documents")
    source.add_argument(
        "--input", metavar="FILE.ndjson", help="`relay export` output ('-' for stdin)"
    )
    verify.add_argument("--es-api-key", metavar="KEY", help="Elasticsearch API key (read access)")
    verify.add_argument(
        "--index-prefix", default="relay-", help="Elasticsearch index prefix (default: relay-)"
    )
    verify.add_argument("--json", action="store_true", help="print a machine-readable report")
    verify.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a checkpoint note saved earlier (GET /v1/operator .checkpoint); repeatable",
    )
    verify.add_argument(
        "--witness-key",
        action="append",
        default=[],
        metavar="VKEY",
        help="a witness's key (<name>+<kid>+<base64>): every --checkpoint must carry its "
        "cosignature (missing_cosignature otherwise); repeatable",
    )
    verify.add_argument(
        "--operator-proofs",
        action="store_true",
        help="also ask each --checkpoint's operator (its registry url) for its current "
        "checkpoint and a consistency proof from the saved one (inconsistent_checkpoint)",
    )
    verify.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="re-check a period report (`relay lead report`, md, csv or json) against the "
        "documents instead: signature by --lead-key, listed batches, every figure",
    )
    verify.add_argument(
        "--lead-key", metavar="VKEY", help="the lead's verifier key string (with --report)"
    )
    verify.set_defaults(run=functools.partial(_run, recheck_report=recheck_report))


def _run(args: argparse.Namespace, *, recheck_report: RecheckReport) -> int:
    if args.report is not None:
        return _run_report(args, recheck_report)
    try:
        registry = Registry.load(args.registry)
        saved = [_read_note(path) for path in args.checkpoint]
        witnesses = [_witness_key(text) for text in args.witness_key]
        if (witnesses or args.operator_proofs) and not saved:
            raise VerifyError("--witness-key and --operator-proofs check --checkpoint notes")
        with contextlib.closing(_documents(args)) as documents:
            report = verify_documents(
                registry,
                documents,
                saved_checkpoints=saved,
                witness_keys=witnesses,
                chain_starts=_chain_starts(args),
            )
        if args.operator_proofs:
            report.findings.extend(operator_proof_findings(saved, registry))
    except (RegistryError, VerifyError) as exc:
        print(f"relay verify: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_text(report)
    return 0 if report.ok else 1


def _witness_key(text: str) -> CosignerKey:
    try:
        return CosignerKey.parse(text)
    except InvalidVerifierKeyError as exc:
        raise VerifyError(f"--witness-key {text!r}: {exc}") from exc


def _run_report(args: argparse.Namespace, recheck_report: RecheckReport) -> int:
    if args.lead_key is None:
        print("relay verify: --report needs --lead-key", file=sys.stderr)
        return 2
    try:
        lead_key = VerifierKey.parse(args.lead_key)
        registry = Registry.load(args.registry)
        text = args.report.read_text(encoding="utf-8")
        with contextlib.closing(_documents(args)) as documents:
            findings = asyncio.run(
                recheck_report(
                    text,
                    lead_key,
                    registry,
                    documents,
                    now_ms=wall_clock_ms(),
                    chain_starts=_chain_starts(args),
                )
            )
    except (RegistryError, VerifyError, AttestError, OSError, UnicodeDecodeError) as exc:
        print(f"relay verify: {exc}", file=sys.stderr)
        return 2
    if args.json:
        result = {"ok": not findings, "findings": [f.to_dict() for f in findings]}
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        for finding in findings:
            print(f"{finding.code}: {finding.message}")
        print(f"{len(findings)} report findings" if findings else "report re-checked: no findings")
    return 1 if findings else 0


def _chain_starts(args: argparse.Namespace) -> dict[str, ChainStart]:
    """Where retention left each chain of an embedded store (none for other sources)."""
    return {} if args.store is None else store_chain_starts(args.store)


def _read_note(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VerifyError(f"cannot read checkpoint {path}: {exc}") from exc
    # `jq -r` and editors add a final newline after the note's own; a note ends in exactly one.
    return text.rstrip("\n") + "\n"


def _documents(args: argparse.Namespace) -> Generator[Document, None, None]:
    if args.store is not None:
        yield from store_documents(args.store)
    elif args.es is not None:
        yield from elasticsearch_documents(
            args.es, api_key=args.es_api_key, index_prefix=args.index_prefix
        )
    elif args.input == "-":
        yield from ndjson_documents(sys.stdin.buffer, "<stdin>")
    else:
        try:
            with Path(args.input).open("rb") as stream:
                yield from ndjson_documents(stream, args.input)
        except OSError as exc:  # opening it; read errors are SourceErrors already
            raise SourceError(f"cannot open {args.input}: {exc}") from exc


def _print_text(report: VerificationReport) -> None:
    for finding in report.findings:
        where = " ".join(
            part
            for part in (
                finding.origin,
                None if finding.seq is None else f"seq {finding.seq}",
                None if finding.doc_id is None else f"({finding.doc_id})",
            )
            if part
        )
        print(f"{finding.code}: {where}: {finding.message}")
    for origin, totals in sorted(report.origins.items()):
        head = report.heads.get(origin)
        at = "no verified head" if head is None else f"head seq {head.seq} {head.batch_hash}"
        print(
            f"{origin}: {totals.batches} batches ({totals.verified} verified), "
            f"{totals.summaries} summaries checked, {at}"
        )
    count = len(report.findings)
    print(f"{count} finding{'' if count == 1 else 's'}" if count else "no findings")
