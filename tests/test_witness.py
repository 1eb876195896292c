"""A witness over real operator relays: it cosigns a growing log and catches a fork.

The forking operator is two real relays with one key and one origin: they share a prefix of
batches and then seal different batches at the same seq, one shown to each party.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from relay.attest.checkpoint import Checkpoint, open_checkpoint
from relay.attest.cosignature import CosignerKey, cosigned_at
from relay.attest.keys import OperatorKey
from relay.cli import main
from relay.registry import OperatorEntry, Registry, RegistryKey
from relay.witness.store import WitnessStore
from relay.witness.witness import Witness
from tests.conftest import RunningRelay
from tests.test_proof_consistency import current, operator_view
from tests.verify_support import ORIGIN, run_windows, stored_documents, write_ndjson

StartRelay = Callable[..., Any]
WITNESS_NAME = "witness.test/w1"


async def seal_to(running: RunningRelay, size: int) -> None:
    """Seal what is due on ``running``, which must then have ``size`` batches.

    The relay's own seal loop may have sealed them first, at the same (test) clock: the batches
    are the same either way.
    """
    await running.relay.seal_due()
    assert (await current(running)).size == size


async def seal_empty(*relays: RunningRelay) -> None:
    """Seal the first window, empty, on every relay at the same clock: identical batches."""
    first = relays[0]
    due_ms = first.relay.windows.sealed_until_ms + 60_000 + 10_000 + 1_000
    first.clock.advance((due_ms - first.clock()) / 1000)
    for running in relays:
        await seal_to(running, 1)


async def fork(start_relay: StartRelay, tmp_path: Path) -> tuple[RunningRelay, RunningRelay]:
    """Two relays with one key: both seal batch 0 alike, then batch 1 differs (data on A only)."""
    a: RunningRelay = await start_relay(data_dir=str(tmp_path / "a"))
    b_dir = tmp_path / "b"
    b_dir.mkdir(mode=0o700)
    shutil.copy2(a.relay.settings.data_dir / "operator.key", b_dir / "operator.key")
    b: RunningRelay = await start_relay(data_dir=str(b_dir))
    assert b.relay.sealer.key.verifier == a.relay.sealer.key.verifier
    await seal_empty(a, b)
    assert (await current(a)) == (await current(b))
    return a, b


def write_registry(path: Path, running: RunningRelay) -> None:
    vkey = running.relay.sealer.key.verifier.encode()
    entry = OperatorEntry(origin=ORIGIN, keys=[RegistryKey(vkey=vkey)], url=running.url(""))
    Registry(operators=[entry]).save(path)


def make_witness(tmp_path: Path) -> Witness:
    key_path = tmp_path / "witness.key"
    if not key_path.exists():
        OperatorKey.generate(WITNESS_NAME).save(key_path)
    store = WitnessStore(tmp_path / "witness.sqlite")
    return Witness(OperatorKey.load(key_path), store, tmp_path / "registry.yaml", timeout_seconds=5)


async def poll(witness: Witness, pointed_at: RunningRelay, tmp_path: Path) -> list[str]:
    """Point the registry entry at one relay and let the witness poll once; the finding codes."""
    write_registry(tmp_path / "registry.yaml", pointed_at)
    async with witness.session() as session:
        return [finding.code for finding in await witness.poll_once(session)]


# -- the witness ---------------------------------------------------------------------------------


async def test_witness_catches_two_trees_of_one_size(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    a, b = await fork(start_relay, tmp_path)
    witness = make_witness(tmp_path)
    assert await poll(witness, a, tmp_path) == []  # size 1, the shared batch
    await run_windows(a, 1)  # A seals batch 1 with data ...
    await seal_to(b, 2)  # ... B the same window, empty
    assert (await current(a)).size == 2
    assert await poll(witness, a, tmp_path) == []  # what the lead's Elasticsearch gets
    assert await poll(witness, b, tmp_path) == ["inconsistent_checkpoint"]  # the auditor's view
    # The witness remembers across restarts, and cosigned only A's tree.
    witness = make_witness(tmp_path)
    assert await poll(witness, b, tmp_path) == ["inconsistent_checkpoint"]
    store = WitnessStore(tmp_path / "witness.sqlite")
    [finding] = store.findings()  # recorded once however often it is seen
    assert (finding.code, finding.origin, finding.size) == ("inconsistent_checkpoint", ORIGIN, 2)
    assert "two different trees of size 2" in finding.message
    note = store.latest_note(ORIGIN)
    assert note is not None and open_checkpoint(note, a.relay.sealer.key.verifier) == Checkpoint(
        ORIGIN, 2, (await current(a)).root, note
    )


async def test_witness_catches_a_larger_tree_that_does_not_extend_the_cosigned_one(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    a, b = await fork(start_relay, tmp_path)
    witness = make_witness(tmp_path)
    await run_windows(a, 1)
    await seal_to(b, 2)
    assert await poll(witness, a, tmp_path) == []  # cosigns A at size 2
    await run_windows(b, 1)  # B moves on to size 3 on its own branch
    assert (await current(b)).size == 3
    assert await poll(witness, b, tmp_path) == ["inconsistent_checkpoint"]
    [finding] = WitnessStore(tmp_path / "witness.sqlite").findings()
    assert "consistency proof from size 2" in finding.message


async def test_auditor_requires_the_witness_cosignature(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    running: RunningRelay = await start_relay()
    witness = make_witness(tmp_path)
    for _ in range(3):
        await run_windows(running, 1)
        assert await poll(witness, running, tmp_path) == []
    assert await running.relay.shipper.ship_pending()
    cosigner = CosignerKey.of(witness.key)
    store = WitnessStore(tmp_path / "witness.sqlite")
    cosigned_note = store.latest_note(ORIGIN)
    assert cosigned_note is not None and cosigned_at(cosigned_note, cosigner) is not None
    cosigned = tmp_path / "cosigned.txt"
    cosigned.write_text(cosigned_note)
    plain = tmp_path / "plain.txt"
    plain.write_text((await operator_view(running))["checkpoint"])
    export = write_ndjson(tmp_path / "e.ndjson", stored_documents(running.relay.settings.data_dir))
    base = ["verify", "--registry", str(tmp_path / "registry.yaml"), "--input", str(export)]
    required = ["--witness-key", cosigner.encode()]
    assert main([*base, "--checkpoint", str(cosigned), *required]) == 0
    assert main([*base, "--checkpoint", str(plain)]) == 0
    assert main([*base, "--checkpoint", str(plain), *required, "--json"]) == 1
    assert main([*base, *required]) == 2  # nothing to check the cosignatures of
    assert main([*base, "--checkpoint", str(cosigned), "--witness-key", "junk"]) == 2


async def test_two_saved_checkpoints_of_one_size_are_inconsistent(
    start_relay: StartRelay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = await fork(start_relay, tmp_path)
    await run_windows(a, 1)
    await seal_to(b, 2)
    notes = [(await operator_view(r))["checkpoint"] for r in (a, b)]
    paths = []
    for n, note in enumerate(notes):
        path = tmp_path / f"cp{n}.txt"
        path.write_text(note)
        paths += ["--checkpoint", str(path)]
    assert await a.relay.shipper.ship_pending()
    export = write_ndjson(tmp_path / "e.ndjson", stored_documents(a.relay.settings.data_dir))
    registry = str(a.relay.settings.registry_path)
    capsys.readouterr()
    assert main(["verify", "--registry", registry, "--input", str(export), *paths]) == 1
    out = capsys.readouterr().out
    assert "inconsistent_checkpoint" in out


async def test_relay_witness_command(start_relay: StartRelay, tmp_path: Path) -> None:
    running: RunningRelay = await start_relay()
    await run_windows(running, 1)
    write_registry(tmp_path / "registry.yaml", running)
    config = tmp_path / "witness.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "wdata"),
                "lead": {"registry": str(tmp_path / "registry.yaml")},
                "witness": {"name": WITNESS_NAME},
            }
        )
    )
    base = ["witness", "--config", str(config)]
    # main() runs its own event loop, so it runs in a thread of its own here.
    assert await asyncio.to_thread(main, [*base, "--once"]) == 0
    assert await asyncio.to_thread(main, [*base, "--latest", "nobody"]) == 1
    assert await asyncio.to_thread(main, [*base, "--latest", ORIGIN]) == 0
    assert await asyncio.to_thread(main, [*base, "--print-key"]) == 0
    key = OperatorKey.load(tmp_path / "wdata" / "witness" / "witness.key")
    assert key.origin == WITNESS_NAME


async def test_witness_skips_what_it_cannot_check_and_keeps_running(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    running: RunningRelay = await start_relay()
    await run_windows(running, 1)
    witness = make_witness(tmp_path)
    # Unreachable, and signed by a key the registry does not have: logged, nothing cosigned.
    stranger = OperatorKey.generate(ORIGIN).verifier.encode()
    entries = [
        OperatorEntry(origin="gone.relay/x", keys=[], url="http://127.0.0.1:9/"),
        OperatorEntry(origin=ORIGIN, keys=[RegistryKey(vkey=stranger)], url=running.url("")),
    ]
    Registry(operators=entries).save(tmp_path / "registry.yaml")
    async with witness.session() as session:
        assert await witness.poll_once(session) == []
    store = WitnessStore(tmp_path / "witness.sqlite")
    assert store.latest(ORIGIN) is None and store.findings() == []
    # A registry that cannot be read skips a round of the loop instead of ending it.
    (tmp_path / "registry.yaml").write_text("operators: [")
    task = asyncio.get_running_loop().create_task(witness.run(0.01))
    await asyncio.sleep(0.1)
    assert not task.done()
    write_registry(tmp_path / "registry.yaml", running)
    for _ in range(100):
        if store.latest(ORIGIN) is not None:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert store.latest(ORIGIN) is not None


async def test_auditor_asks_the_operator_for_a_consistency_proof(
    start_relay: StartRelay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = await fork(start_relay, tmp_path)
    await run_windows(a, 1)
    await seal_to(b, 2)
    saved = tmp_path / "saved.txt"
    saved.write_text((await operator_view(a))["checkpoint"])  # the auditor was shown A
    await run_windows(a, 1)  # both move on to size 3, each on its own branch
    await seal_to(b, 3)
    assert await a.relay.shipper.ship_pending()
    export = write_ndjson(tmp_path / "e.ndjson", stored_documents(a.relay.settings.data_dir))
    registry = tmp_path / "registry.yaml"
    command = ["verify", "--registry", str(registry), "--input", str(export), "--json"]
    command += ["--checkpoint", str(saved), "--operator-proofs"]
    write_registry(registry, a)
    capsys.readouterr()
    # main() blocks on HTTP to relays served by this event loop: it runs in a thread.
    assert await asyncio.to_thread(main, command) == 0
    capsys.readouterr()
    write_registry(registry, b)  # the same origin and key, the other branch
    assert await asyncio.to_thread(main, command) == 1
    [finding] = orjson.loads(capsys.readouterr().out)["findings"]
    assert (finding["code"], finding["seq"]) == ("inconsistent_checkpoint", 1)
    assert "consistency proof from size 2" in finding["message"]
    vkey = a.relay.sealer.key.verifier.encode()
    Registry(operators=[OperatorEntry(origin=ORIGIN, keys=[RegistryKey(vkey=vkey)])]).save(registry)
    assert await asyncio.to_thread(main, command) == 2  # no url: no operator to ask
