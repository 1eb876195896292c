"""Key rotation (DESIGN §5.4): a real relay hands over to operator.next.key mid-run, verify
accepts the handover, and flags keys used outside it."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.attest.checkpoint import open_checkpoint
from relay.attest.keys import OperatorKey
from relay.attest.rotation import KeyRotation
from relay.cli import main
from relay.core.document import Document
from relay.registry import Registry, RegistryKey, register_own_key
from tests.conftest import RunningRelay
from tests.verify_support import (
    ORIGIN,
    forge,
    header_of,
    is_batch,
    operator_key,
    registry_of,
    run_windows,
    stored_documents,
    verify,
    write_ndjson,
)

StartRelay = Callable[..., Any]
HANDOVER = 2  # seq of the last batch under the old key


async def rotated_export(start_relay: StartRelay) -> tuple[RunningRelay, list[Document]]:
    running: RunningRelay = await start_relay()
    data_dir = running.relay.settings.data_dir
    await run_windows(running, HANDOVER)
    next_path = data_dir / "operator.next.key"
    assert main(["keygen", "--origin", ORIGIN, "--out", str(next_path)]) == 0
    await run_windows(running, 3)
    assert await running.relay.shipper.ship_pending()
    return running, stored_documents(data_dir)


async def test_rotation_mid_run_verifies_clean(start_relay: StartRelay, tmp_path: Path) -> None:
    running, documents = await rotated_export(start_relay)
    data_dir = running.relay.settings.data_dir
    new = operator_key(running)
    (old_path,) = data_dir.glob("operator.key.retired-*")
    old = OperatorKey.load(old_path)  # refuses anything but mode 0600
    assert old_path.name == f"operator.key.retired-{old.kid}"
    assert stat.S_IMODE(old_path.stat().st_mode) == 0o600
    assert not (data_dir / "operator.next.key").exists()

    headers = [header_of(d) for d in documents if is_batch(d)]
    assert [h["kid"] for h in headers] == [old.kid] * (HANDOVER + 1) + [new.kid] * 2
    assert [h.get("next_kid") for h in headers] == [None, None, new.kid, None, None]
    # Every checkpoint is signed by the key of its batch.
    for document, header in zip((d for d in documents if is_batch(d)), headers, strict=True):
        key = old if header["kid"] == old.kid else new
        assert (
            open_checkpoint(document.source["checkpoint"], key.verifier).size == header["seq"] + 1
        )

    registry = registry_of(running)
    assert registry.operators[0].keys == [
        RegistryKey(vkey=old.verifier.encode(), valid_from_seq=0, valid_until_seq=HANDOVER),
        RegistryKey(vkey=new.verifier.encode(), valid_from_seq=HANDOVER + 1, valid_until_seq=None),
    ]
    report = verify(registry, documents)
    assert report.findings == []
    assert len(report.verified) == 5
    async with running.http.get(running.url("/v1/operator")) as resp:
        assert (await resp.json())["kid"] == new.kid

    export = write_ndjson(tmp_path / "export.ndjson", documents)
    registry_path = str(running.relay.settings.registry_path)
    assert main(["verify", "--registry", registry_path, "--input", str(export)]) == 0


def _keys(running: RunningRelay) -> tuple[OperatorKey, OperatorKey]:
    data_dir = running.relay.settings.data_dir
    (old_path,) = data_dir.glob("operator.key.retired-*")
    return OperatorKey.load(old_path), operator_key(running)


def _registry(*grants: tuple[OperatorKey, int, int | None]) -> Registry:
    keys = [
        {"vkey": key.verifier.encode(), "valid_from_seq": start, "valid_until_seq": until}
        for key, start, until in grants
    ]
    return Registry.model_validate({"operators": [{"origin": ORIGIN, "keys": keys}]})


async def test_wrong_handovers_are_flagged(start_relay: StartRelay) -> None:
    running, documents = await rotated_export(start_relay)
    old, new = _keys(running)
    after = HANDOVER + 1

    # A third key, registered from seq 3, takes over although seq 2 named the new key.
    third = OperatorKey.generate(ORIGIN)
    usurped = forge(documents, lambda seq: old if seq <= HANDOVER else third)
    report = verify(_registry((old, 0, HANDOVER), (third, after, None)), usurped)
    assert [(f.code, f.seq) for f in report.findings] == [("key_not_valid_for_seq", after)]
    assert f"handed over to key '{new.kid}'" in report.findings[0].message

    # The old key keeps signing after its handover, with a registry that still allows it.
    lingering = forge(documents, lambda seq: old)
    report = verify(_registry((old, 0, None), (new, after, None)), lingering)
    assert [(f.code, f.seq) for f in report.findings] == [("key_not_valid_for_seq", after)]

    # The key changes without a handover in the last batch of the old key.
    def drop_next_kid(seq: int, header: dict[str, Any]) -> None:
        header.pop("next_kid", None)

    unannounced = forge(documents, lambda seq: old if seq <= HANDOVER else new, edit=drop_next_kid)
    report = verify(registry_of(running), unannounced)
    assert [(f.code, f.seq) for f in report.findings] == [("key_not_valid_for_seq", after)]
    assert "without a next_kid handover" in report.findings[0].message

    # A registry in which the new key starts one seq too late.
    report = verify(_registry((old, 0, None), (new, after + 1, None)), documents)
    assert [(f.code, f.seq) for f in report.findings] == [("key_not_valid_for_seq", after)]


# -- crash safety of the rotation files ---------------------------------------------------------


@pytest.fixture
def keys_on_disk(tmp_path: Path) -> tuple[OperatorKey, OperatorKey, Path]:
    old, new = OperatorKey.generate(ORIGIN), OperatorKey.generate(ORIGIN)
    old.save(tmp_path / "operator.key")
    new.save(tmp_path / "operator.next.key")
    registry = tmp_path / "registry.yaml"
    register_own_key(registry, ORIGIN, old.verifier.encode())
    return old, new, registry


def test_crash_before_the_handover_commit_signs_it_again(
    keys_on_disk: tuple[OperatorKey, OperatorKey, Path], tmp_path: Path
) -> None:
    old, new, registry = keys_on_disk
    rotation = KeyRotation(tmp_path, registry)
    waiting = rotation.next_key(old)
    assert waiting is not None and waiting.kid == new.kid
    rotation.begin(old, new, 7, b"h" * 32)
    # Restart: the outbox head is still the batch before the handover.
    restarted = KeyRotation(tmp_path, registry)
    assert restarted.settle(old, b"p" * 32) is old
    assert OperatorKey.load(tmp_path / "operator.key").kid == old.kid
    assert restarted.next_key(old) is not None  # the handover is signed again
    assert Registry.load(registry).operators[0].keys[0].valid_until_seq is None


def test_crash_after_the_handover_commit_finishes_the_rotation(
    keys_on_disk: tuple[OperatorKey, OperatorKey, Path], tmp_path: Path
) -> None:
    old, new, registry = keys_on_disk
    KeyRotation(tmp_path, registry).begin(old, new, 7, b"h" * 32)
    restarted = KeyRotation(tmp_path, registry)
    key = restarted.settle(old, b"h" * 32)
    assert key.kid == new.kid == OperatorKey.load(tmp_path / "operator.key").kid
    assert OperatorKey.load(tmp_path / f"operator.key.retired-{old.kid}").kid == old.kid
    assert not (tmp_path / "operator.next.key").exists()
    assert [
        (k.valid_from_seq, k.valid_until_seq) for k in Registry.load(registry).operators[0].keys
    ] == [
        (0, 7),
        (8, None),
    ]
    assert restarted.settle(key, b"h" * 32) is key  # nothing left to do
    assert restarted.next_key(key) is None


def test_lead_registry_is_left_to_the_lead(
    keys_on_disk: tuple[OperatorKey, OperatorKey, Path], tmp_path: Path
) -> None:
    old, new, registry = keys_on_disk
    before = registry.read_text()
    rotation = KeyRotation(tmp_path, None)
    rotation.begin(old, new, 3, b"h" * 32)
    assert rotation.settle(old, b"h" * 32).kid == new.kid
    assert registry.read_text() == before


def test_unusable_next_key_is_not_rotated_to(tmp_path: Path) -> None:
    current = OperatorKey.generate(ORIGIN)
    rotation = KeyRotation(tmp_path, None)
    OperatorKey.generate("other.origin/x").save(tmp_path / "operator.next.key")
    assert rotation.next_key(current) is None
    (tmp_path / "operator.next.key").unlink()
    OperatorKey.generate(ORIGIN).save(tmp_path / "operator.next.key")
    (tmp_path / "operator.next.key").chmod(0o644)
    assert rotation.next_key(current) is None
