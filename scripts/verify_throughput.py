"""Measure `relay verify` throughput (DESIGN §10 target: ≥ 10 000 summaries/s).

    .venv/bin/python scripts/verify_throughput.py [--batches 200] [--per-batch 100]

Builds an export of realistic summaries (every field of a published cell, three histograms of
30–60 buckets) by signing batches directly with relay.attest.batch.sign_batch and
relay.sinks.documents.batch_documents, writes it as NDJSON, then runs the command
`relay verify --registry R --input FILE --json` in-process and reports summaries per second of
wall-clock time, reading and parsing the file included. Generation is not timed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from relay.aggregate.histogram import to_document
from relay.attest.batch import ZERO_HASH, sign_batch
from relay.attest.checkpoint import sign_checkpoint
from relay.attest.keys import OperatorKey
from relay.attest.merkle import CompactRange, leaf_hash
from relay.cli import main
from relay.core.document import Document
from relay.registry import OperatorEntry, Registry, RegistryKey
from relay.sinks.documents import DOCUMENT_SCHEMA, batch_documents

ORIGIN = "bench.relay/verify"
WINDOW_MS = 300_000
T0_MS = 1_767_571_200_000


def summary(window_start: int, node: int, region: str) -> dict[str, Any]:
    return {
        "window_start_ms": window_start,
        "window_end_ms": window_start + WINDOW_MS,
        "node": {"role": "distributor", "id": str(node)},
        "region": region,
        "requests": 532,
        "outcomes": {"http_5xx": 12, "ok": 500, "timeout": 20},
        "ops": {"download": 532},
        "signals": {"playback_slow": 3},
        "assets": {"image": 132, "video": 400},
        "bytes": 123_456_789 + node,
        "ttfb_us": to_document({i: i + node % 7 for i in range(40, 80)}),
        "duration_us": to_document({i: 2 * i + 1 for i in range(60, 120)}),
        "throughput_bps": to_document({i: 3 for i in range(150, 180)}),
    }


def signed_chain(
    key: OperatorKey, first_ms: int, windows: int, nodes: int, now_ms: int | None = None
) -> Iterator[list[Document]]:
    """The documents of `windows` consecutive batches of `nodes` summaries each, signed by `key`
    as the relay signs them (each sealed a minute after its window, or at `now_ms` if earlier)."""
    prev, log = ZERO_HASH, CompactRange()
    for seq in range(windows):
        start = first_ms + seq * WINDOW_MS
        summaries = [summary(start, n, ("EU", "NA", "AS")[n % 3]) for n in range(nodes)]
        sealed_at = start + WINDOW_MS + 60_000
        signed = sign_batch(
            key,
            seq=seq,
            prev=prev,
            window_start_ms=start,
            window_end_ms=start + WINDOW_MS,
            signed_at_ms=sealed_at if now_ms is None else min(now_ms, sealed_at),
            summaries=summaries,
            schema=DOCUMENT_SCHEMA,
            privacy={"mode": "aggregate", "k": 10, "max_events_per_contributor": 50},
            stats={"accepted": 535 * nodes, "over_cap": 0, "suppressed_events": 0},
        )
        prev = signed.batch_hash
        log.append(leaf_hash(signed.msg))
        checkpoint = sign_checkpoint(key, log.size, log.root())
        yield batch_documents(signed, summaries, checkpoint, "relay-")


def write_export(path: Path, key: OperatorKey, batches: int, per_batch: int) -> int:
    with path.open("wb") as out:
        for documents in signed_chain(key, T0_MS, batches, per_batch):
            for document in documents:
                out.write(document.to_line())
    return batches * per_batch


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--per-batch", type=int, default=100)
    args = parser.parse_args()
    key = OperatorKey.generate(ORIGIN)
    with tempfile.TemporaryDirectory() as tmp:
        export, registry = Path(tmp) / "export.ndjson", Path(tmp) / "registry.yaml"
        entry = OperatorEntry(origin=ORIGIN, keys=[RegistryKey(vkey=key.verifier.encode())])
        Registry(operators=[entry]).save(registry)
        count = write_export(export, key, args.batches, args.per_batch)
        size_mib = export.stat().st_size / 2**20
        output = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(output):
            code = main(["verify", "--registry", str(registry), "--input", str(export), "--json"])
        elapsed = time.perf_counter() - started
    report = orjson.loads(output.getvalue())
    assert code == 0 and report["summaries_checked"] == count, report["findings"][:3]
    print(
        f"relay verify: {count} summaries in {args.batches} batches ({size_mib:.1f} MiB NDJSON) "
        f"in {elapsed:.2f} s: {count / elapsed:,.0f} summaries/s"
    )


if __name__ == "__main__":
    main_()
