"""Helpers for the `relay verify` tests: real exports from a real relay, and a forger.

The forger re-signs a chain with keys the test holds. It stands for an operator (or a thief of
its key) who can produce valid signatures, so what verify reports then comes from the semantic
checks (chain, windows, key validity, checkpoints), not from a broken signature.
"""

from __future__ import annotations

import base64
import copy
import itertools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from relay.attest.batch import BATCH_MSG_PREFIX, ZERO_HASH, batch_hash
from relay.attest.canonical import canonical_json, strict_loads
from relay.attest.checkpoint import sign_checkpoint
from relay.attest.keys import OperatorKey
from relay.attest.merkle import CompactRange, inclusion_proofs, leaf_hash, root
from relay.core.document import Document
from relay.registry import Registry
from relay.verify import VerificationReport, verify_documents
from tests.conftest import (
    RunningRelay,
    from_network,
    request_event,
    signal_event,
    stored_documents,
)

ORIGIN = "test.relay/one"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def run_windows(running: RunningRelay, windows: int) -> None:
    """Publish two cells (k = 3, each contributor from its own network) in each of ``windows``
    windows, sealing each one.

    The clock is inside the first open window; it is moved just past that window's seal time
    (60 s windows, 10 s lateness), so each seal makes exactly one batch.
    """
    for _ in range(windows):
        for j in range(3):
            events = [
                request_event(node, client=f"c{j}", ttfb_ms=10 * (j + 1), bytes=1000 * j)
                for node in ("d1", "d2")
            ]
            if j == 0:
                events.append(signal_event("d1", client="c0"))
            status, body = await running.post(
                "/v1/events", {"events": events}, headers=from_network(j)
            )
            assert status == 202 and body["accepted"] == len(events), body
        due_ms = running.relay.windows.sealed_until_ms + 60_000 + 10_000 + 1_000
        assert await running.seal_after((due_ms - running.clock()) / 1000) == 1


async def honest_export(running: RunningRelay, windows: int = 4) -> list[Document]:
    await run_windows(running, windows)
    assert await running.relay.shipper.ship_pending()
    return stored_documents(running.relay.settings.data_dir)


def registry_of(running: RunningRelay) -> Registry:
    return Registry.load(running.relay.settings.registry_path)


def operator_key(running: RunningRelay) -> OperatorKey:
    return OperatorKey.load(running.relay.settings.data_dir / "operator.key")


def verify(registry: Registry, documents: Iterable[Document], **kwargs: Any) -> VerificationReport:
    return verify_documents(registry, copy.deepcopy(list(documents)), **kwargs)


def codes(report: VerificationReport) -> set[str]:
    return {finding.code for finding in report.findings}


def write_ndjson(path: Path, documents: Iterable[Document]) -> Path:
    path.write_bytes(b"".join(document.to_line() for document in documents))
    return path


def is_batch(document: Document) -> bool:
    return "att" not in document.source


def seqs(documents: Iterable[Document]) -> list[int]:
    return [d.source["seq"] for d in documents if is_batch(d)]


def without(documents: list[Document], drop: Callable[[Document], bool]) -> list[Document]:
    return [d for d in documents if not drop(d)]


def with_source(document: Document, **changes: Any) -> Document:
    return Document(document.index, document.id, {**copy.deepcopy(document.source), **changes})


def header_of(document: Document) -> dict[str, Any]:
    header = strict_loads(document.source["signed"].encode().removeprefix(BATCH_MSG_PREFIX))
    assert isinstance(header, dict)
    return header


def forge(
    documents: list[Document],
    key_for: Callable[[int], OperatorKey],
    *,
    edit: Callable[[int, dict[str, Any]], None] | None = None,
    encode: Callable[[int, dict[str, Any]], bytes] | None = None,
) -> list[Document]:
    """Re-sign the whole chain: roots, proofs, prev links and checkpoints made consistent.

    ``key_for(seq)`` signs batch seq and its checkpoint; ``edit(seq, header)`` changes a header
    before it is signed; ``encode(seq, header)`` replaces RFC 8785 for the signed bytes. The
    leaves signed are what the summaries attest (`leaf_of`), or `att.leaf` when a format-2
    summary carries one beside its `leaf_hash`.
    """
    forged: list[Document] = []
    prev = ZERO_HASH
    log = CompactRange()
    groups = itertools.groupby(documents, key=lambda d: d.source["seq"])
    for seq, group in groups:
        batch, *summaries = list(group)
        key = key_for(seq)
        leaves = [leaf_of(s) for s in summaries]
        header = header_of(batch)
        header.update(
            kid=key.kid, n=len(leaves), root=b64(root(leaves)), prev=b64(prev), origin=key.origin
        )
        if edit is not None:
            edit(seq, header)
        msg = BATCH_MSG_PREFIX + (canonical_json(header) if encode is None else encode(seq, header))
        prev = batch_hash(msg)
        log.append(leaf_hash(msg))
        source = {
            **header,
            "signed": msg.decode(),
            "sig": b64(key.sign(msg)),
            "batch_hash": b64(prev),
            "checkpoint": sign_checkpoint(key, log.size, log.root()),
        }
        forged.append(Document(batch.index, batch.id, source))
        proofs = inclusion_proofs([leaf_hash(leaf) for leaf in leaves])
        for summary, leaf, proof in zip(summaries, leaves, proofs, strict=True):
            att = {**summary.source["att"], "n": len(leaves), "proof": [b64(p) for p in proof]}
            if "leaf_hash" in att:
                # Format 2: a `leaf` put beside the hash asks for those exact bytes to be signed.
                att.pop("leaf", None)
                att["leaf_hash"] = b64(leaf_hash(leaf))
            forged.append(with_source(summary, att=att))
    return forged


def fields_of(summary: Document) -> dict[str, Any]:
    """The searchable fields of a summary document: the content of its leaf."""
    return {key: value for key, value in summary.source.items() if key != "att"}


def leaf_of(summary: Document) -> bytes:
    """The leaf a summary document attests: stored (format 1), else its fields (format 2)."""
    att = summary.source["att"]
    return att["leaf"].encode() if "leaf" in att else canonical_json(fields_of(summary))


def restate(summary: Document, fields: dict[str, Any], leaf: bytes | None = None) -> Document:
    """``summary`` with new fields and an `att` that attests ``leaf`` (default: the fields) in
    the document's own format; the proof is left as it is."""
    leaf = canonical_json(fields) if leaf is None else leaf
    att = dict(summary.source["att"])
    if "leaf" in att:
        att["leaf"] = leaf.decode()
    else:
        att["leaf_hash"] = b64(leaf_hash(leaf))
    return Document(summary.index, summary.id, {**copy.deepcopy(fields), "att": att})


def as_format_1(documents: list[Document], key: OperatorKey) -> list[Document]:
    """The same history in document format 1, as relays before format 2 wrote it: `schema` 1
    in the signed header, each summary's leaf stored in `att.leaf` (re-signed with ``key``)."""
    converted = []
    for document in documents:
        att = document.source.get("att")
        if att is not None:
            leaf = leaf_of(document).decode()
            document = with_source(
                document, att={"leaf": leaf, "n": att["n"], "proof": att["proof"]}
            )
        converted.append(document)

    def edit(seq: int, header: dict[str, Any]) -> None:
        header["schema"] = 1

    return forge(converted, lambda seq: key, edit=edit)
