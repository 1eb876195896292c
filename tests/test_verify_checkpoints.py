"""Saved checkpoints (DESIGN §5.5): an auditor keeps GET /v1/operator's checkpoint and later
detects a truncated, rewritten or forked log, even one re-signed with the operator key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.attest.checkpoint import sign_checkpoint
from relay.attest.keys import OperatorKey
from relay.attest.merkle import EMPTY_ROOT
from relay.cli import main
from relay.verify import SavedCheckpointError
from tests.conftest import RunningRelay
from tests.verify_support import (
    ORIGIN,
    codes,
    forge,
    operator_key,
    registry_of,
    run_windows,
    stored_documents,
    verify,
    without,
    write_ndjson,
)

StartRelay = Callable[..., Any]


async def saved_checkpoint(running: RunningRelay) -> str:
    """What `curl .../v1/operator | jq -r .checkpoint` saves."""
    async with running.http.get(running.url("/v1/operator")) as resp:
        checkpoint: str = (await resp.json())["checkpoint"]
    return checkpoint


async def test_auditor_walkthrough(start_relay: StartRelay, tmp_path: Path) -> None:
    running: RunningRelay = await start_relay()
    await run_windows(running, 2)
    early = tmp_path / "cp-early.txt"
    early.write_text(await saved_checkpoint(running) + "\n")  # jq -r adds a newline
    await run_windows(running, 2)
    assert await running.relay.shipper.ship_pending()
    documents = stored_documents(running.relay.settings.data_dir)
    late = tmp_path / "cp-late.txt"
    late.write_text(await saved_checkpoint(running))
    registry = str(running.relay.settings.registry_path)
    export = write_ndjson(tmp_path / "export.ndjson", documents)
    base = ["verify", "--registry", registry, "--input", str(export)]
    assert main([*base, "--checkpoint", str(early), "--checkpoint", str(late)]) == 0

    # Later the operator (or whoever holds the index) drops the last batch.
    truncated = without(documents, lambda d: d.source["seq"] == 3)
    write_ndjson(export, truncated)
    assert main(base) == 0  # nothing in the documents themselves shows it
    assert main([*base, "--checkpoint", str(early)]) == 0  # the early one is still a prefix
    assert main([*base, "--checkpoint", str(late)]) == 1
    report = verify(registry_of(running), truncated, saved_checkpoints=[late.read_text()])
    assert [(f.code, f.seq) for f in report.findings] == [("checkpoint_mismatch", 3)]
    assert "only 3 batches" in report.findings[0].message


async def test_rewritten_history_resigned_with_the_operator_key(start_relay: StartRelay) -> None:
    running: RunningRelay = await start_relay()
    await run_windows(running, 3)
    saved = await saved_checkpoint(running)
    assert await running.relay.shipper.ship_pending()
    documents = stored_documents(running.relay.settings.data_dir)
    key = operator_key(running)

    def edit(seq: int, header: dict[str, Any]) -> None:
        if seq == 1:
            header["stats"]["rejected"] += 100

    forged = forge(documents, lambda seq: key, edit=edit)
    registry = registry_of(running)
    # Self-consistent: chain, roots and stored checkpoints all agree with the forged log ...
    assert verify(registry, forged).findings == []
    # ... but not with what the auditor saved before.
    report = verify(registry, forged, saved_checkpoints=[saved])
    assert [(f.code, f.seq) for f in report.findings] == [("checkpoint_mismatch", 2)]
    assert "rewritten or forked" in report.findings[0].message
    # The forged batches are verified on their own terms; the finding concerns the log.
    assert verify(registry, documents, saved_checkpoints=[saved]).findings == []


async def test_missing_batch_before_the_saved_size(start_relay: StartRelay) -> None:
    running: RunningRelay = await start_relay()
    await run_windows(running, 3)
    saved = await saved_checkpoint(running)
    assert await running.relay.shipper.ship_pending()
    documents = without(
        stored_documents(running.relay.settings.data_dir), lambda d: d.source["seq"] == 1
    )
    report = verify(registry_of(running), documents, saved_checkpoints=[saved])
    assert codes(report) == {"seq_gap", "checkpoint_mismatch"}
    assert "batch 1 is missing" in report.findings[-1].message


async def test_saved_checkpoint_must_be_signed_by_a_registered_key(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    running: RunningRelay = await start_relay()
    await run_windows(running, 1)
    registry = registry_of(running)
    stranger = OperatorKey.generate(ORIGIN)
    forged = sign_checkpoint(stranger, 1, EMPTY_ROOT)
    with pytest.raises(SavedCheckpointError, match="does not open with any registered key"):
        verify(registry, [], saved_checkpoints=[forged])
    with pytest.raises(SavedCheckpointError, match="not in the registry"):
        verify(
            registry,
            [],
            saved_checkpoints=[sign_checkpoint(OperatorKey.generate("x"), 1, EMPTY_ROOT)],
        )
    path = tmp_path / "cp.txt"
    path.write_text(forged)
    export = write_ndjson(tmp_path / "e.ndjson", [])
    command = ["verify", "--registry", str(running.relay.settings.registry_path)]
    assert main([*command, "--input", str(export), "--checkpoint", str(path)]) == 2


async def test_saved_checkpoint_of_an_origin_without_documents(start_relay: StartRelay) -> None:
    running: RunningRelay = await start_relay()
    await run_windows(running, 1)
    report = verify(registry_of(running), [], saved_checkpoints=[await saved_checkpoint(running)])
    assert [(f.code, f.origin, f.seq) for f in report.findings] == [
        ("checkpoint_mismatch", ORIGIN, 0)
    ]
