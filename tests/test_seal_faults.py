"""A failed seal never loses an acknowledged event (DESIGN §6), with real faults.

Each test acknowledges events, makes the seal fail for real (SQLite out of pages, a full
filesystem, a key rotation whose files cannot be written, a WAL segment on a full device), lets
the relay retry while the fault holds, clears the fault, and then checks that every acknowledged
event is published exactly once and that `relay verify` finds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.attest.keys import OperatorKey
from relay.registry import Registry
from relay.verify import verify_documents
from tests.conftest import RunningRelay, request_event, signal_event, stored_documents


def events_for(nodes: int = 8) -> list[dict[str, Any]]:
    """`nodes` cells of three contributors each (k = 3 publishes them) and one signal: a batch
    of some 10 kB, more than the free space of the outbox file's pages."""
    events = [
        request_event(f"d{n}", client=f"c{j}", ttfb_ms=10 * (j + 1))
        for n in range(1, nodes + 1)
        for j in range(3)
    ]
    events.append(signal_event("d1", client="c0"))
    return events


async def acknowledge(running: RunningRelay, events: list[dict[str, Any]]) -> int:
    # Each client from its own network, so that cells are published (P5).
    answer = await running.post_per_client("/v1/events", events)
    assert answer["accepted"] == len(events), answer
    return len(events)


def move_past_due(running: RunningRelay) -> None:
    """Move the clock just past the seal time of the oldest open window (60 s + 10 s)."""
    due_ms = running.relay.windows.sealed_until_ms + 60_000 + 10_000 + 1_000
    running.clock.advance((due_ms - running.clock()) / 1000)


async def seal_all(running: RunningRelay) -> None:
    """Move the clock past the seal time of the window it is in, and seal."""
    now = running.clock()
    running.clock.advance((now - now % 60_000 + 71_000 - now) / 1000)
    await running.relay.seal_due()


async def assert_published_exactly_once(running: RunningRelay, acknowledged: int) -> None:
    """Every acknowledged event is in exactly one batch's stats and in its summaries; verify is
    clean; and the chain is contiguous (no window sealed twice)."""
    relay = running.relay
    assert await relay.shipper.ship_pending()
    docs = stored_documents(relay.settings.data_dir)
    chain = [d.source for d in docs if "att" not in d.source]
    assert [b["seq"] for b in chain] == list(range(len(chain)))
    accepted = sum(b["stats"]["accepted"] for b in chain)
    published = sum(
        s.source["requests"] + sum(s.source["signals"].values()) for s in docs if "att" in s.source
    )
    assert accepted == acknowledged
    assert published == acknowledged  # nothing over the cap or suppressed in these tests
    report = verify_documents(Registry.load(relay.settings.registry_path), docs)
    assert report.ok, [f.code for f in report.findings]


def seal_failures(running: RunningRelay) -> float:
    value = running.relay.metrics.registry.get_sample_value("relay_seal_failures_total")
    return value or 0.0


# -- the outbox commit fails --------------------------------------------------------------------


@contextlib.contextmanager
def outbox_out_of_pages(running: RunningRelay) -> Iterator[None]:
    """SQLite refuses to grow the outbox file: every insert fails with SQLITE_FULL ("database
    or disk is full"), the error a full disk gives, raised by SQLite itself."""
    db: sqlite3.Connection = running.relay.outbox._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    default = db.execute("PRAGMA max_page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    try:
        yield
    finally:
        db.execute(f"PRAGMA max_page_count = {default}")


async def test_failed_outbox_commit_is_retried_and_loses_nothing(
    relay_server: RunningRelay,
) -> None:
    running = relay_server
    acknowledged = await acknowledge(running, events_for())
    move_past_due(running)
    with outbox_out_of_pages(running):
        for _ in range(2):
            with pytest.raises(sqlite3.OperationalError, match="full"):
                await running.relay.seal_due()
        # While sealing fails: not ready, failures counted, ingest still buffering.
        assert running.relay.backpressure.checks()["sealing"] is False
        assert not running.relay.backpressure.ready
        assert seal_failures(running) >= 2
        acknowledged += await acknowledge(running, events_for())
    assert await running.relay.seal_due() >= 1
    assert running.relay.backpressure.checks()["sealing"] is True
    await seal_all(running)
    await assert_published_exactly_once(running, acknowledged)


async def test_retried_seal_yields_the_same_batch(relay_server: RunningRelay) -> None:
    """The batch that finally commits is the one the failed attempt built: same seq, same
    signed bytes (signed_at_ms included), so a retry can never publish something else."""
    running = relay_server
    await acknowledge(running, events_for())
    move_past_due(running)
    with outbox_out_of_pages(running):
        with pytest.raises(sqlite3.OperationalError):
            await running.relay.seal_due()
        attempted = running.relay.sealer.pending
        assert attempted is not None
        running.clock.advance(30)  # a later retry must not re-sign with a later time
    await running.relay.seal_due()
    assert running.relay.outbox.head() == attempted.head
    assert await running.relay.shipper.ship_pending()
    stored = stored_documents(running.relay.settings.data_dir)[0].source
    assert stored["signed"] == attempted.signed.msg.decode()


# -- a full filesystem --------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    """A size-limited tmpfs at `path`: a real filesystem that fills up. Root only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem answers ENOSPC; return it (delete it to free space)."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
                f.flush()
        # Whatever the buffer still holds cannot be written either.
        with contextlib.suppress(OSError):
            f.close()
    with pytest.raises(OSError) as full:
        (directory / "probe").write_bytes(chunk)
    assert full.value.errno == errno.ENOSPC
    return filler


async def test_full_disk_during_seal_loses_nothing(
    tmp_path: Path, start_relay: Any, make_settings: Any
) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        running: RunningRelay = await start_relay(make_settings(data_dir=str(disk / "data")))
        try:
            acknowledged = await acknowledge(running, events_for())
            move_past_due(running)
            filler = fill(disk)
            for _ in range(2):
                with pytest.raises((sqlite3.Error, OSError)):
                    await running.relay.seal_due()
            assert running.relay.backpressure.checks()["sealing"] is False
            filler.unlink()
            (disk / "probe").unlink(missing_ok=True)
            assert await running.relay.seal_due() >= 1
            await assert_published_exactly_once(running, acknowledged)
        finally:
            await running.http.close()
            await running.server.close()
            await running.relay.stop()


# -- key rotation raises ------------------------------------------------------------------------


def place_next_key(running: RunningRelay) -> OperatorKey:
    key = OperatorKey.generate(running.relay.settings.origin)
    key.save(running.relay.settings.data_dir / "operator.next.key")
    return key


@pytest.mark.parametrize(
    "blocked",
    [
        # Before the commit: the rotation intent cannot be written.
        "operator.rotation.json.tmp",
        # After the commit: the handover cannot be recorded in the relay's own registry.
        "registry.yaml.tmp",
    ],
)
async def test_key_rotation_raising_loses_nothing(relay_server: RunningRelay, blocked: str) -> None:
    running = relay_server
    data_dir = running.relay.settings.data_dir
    acknowledged = await acknowledge(running, events_for())
    new_key = place_next_key(running)
    # A directory where the rotation writes a file: the write fails (EISDIR), even as root.
    (data_dir / blocked).mkdir()
    move_past_due(running)
    with pytest.raises(OSError):
        await running.relay.seal_due()
    acknowledged += await acknowledge(running, events_for())
    move_past_due(running)
    with pytest.raises(OSError):
        await running.relay.seal_due()
    assert running.relay.backpressure.checks()["sealing"] is False
    (data_dir / blocked).rmdir()
    await seal_all(running)
    assert running.relay.operator_view()["kid"] == new_key.kid
    await assert_published_exactly_once(running, acknowledged)


# -- the WAL group write fails ------------------------------------------------------------------


async def test_failed_wal_group_write_acknowledges_nothing_of_it(
    start_relay: Any, make_settings: Any
) -> None:
    """A group written to a full device: every request of it gets a 503, none of its events is
    counted, and what was acknowledged before is published exactly once after a restart."""
    running: RunningRelay = await start_relay()
    relay = running.relay
    acknowledged = await acknowledge(running, events_for())
    move_past_due(running)
    await relay.seal_due()  # rotates the WAL: the next segment is opened now
    # The segment after that is on /dev/full: every write to it fails with ENOSPC.
    wal_dir = relay.settings.data_dir / "wal"
    current = max(p.name for p in wal_dir.glob("segment-*.wal"))
    following = wal_dir / f"segment-{int(current[8:20]) + 1:012d}.wal"
    following.symlink_to("/dev/full")
    acknowledged += await acknowledge(running, events_for())
    move_past_due(running)
    await relay.seal_due()
    # Three requests at once: one group, one failed write.
    answers = await asyncio.gather(
        *(running.post("/v1/events", {"events": events_for()}) for _ in range(3))
    )
    assert [(status, body.get("type")) for status, body in answers] == [
        (503, "urn:relay:problem:wal-unavailable")
    ] * 3
    assert relay.backpressure.checks()["wal_writable"] is False
    # The fault clears (the device is replaced); the relay is restarted on the same data.
    await running.http.close()
    await running.server.close()
    await relay.stop()
    following.unlink()
    restarted: RunningRelay = await start_relay(make_settings())
    await seal_all(restarted)
    await assert_published_exactly_once(restarted, acknowledged)
