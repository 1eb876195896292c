"""The WAL writer (relay/wal/log.py) on a real directory: group commit, fsync before the
acknowledgement, the barrier, a failed group write, and replay after a torn tail."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.aggregate.observation import IngestRecord
from relay.wal import codec
from relay.wal.log import WalUnavailableError, WriteAheadLog
from tests.conftest import T0_MS, observation


def record(n: int) -> IngestRecord:
    return IngestRecord(T0_MS, "EU", [observation(n, f"d{n}", window_start_ms=T0_MS)], {}, {})


class Applied(list[IngestRecord]):
    """The aggregator's side: what the WAL applied, in order."""

    def __call__(self, rec: IngestRecord) -> None:
        self.append(rec)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("segment-*.wal"))


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """File descriptors passed to os.fsync, in order (the real fsync still runs)."""
    calls: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    yield calls


async def test_concurrent_appends_share_one_write_and_one_fsync(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    applied = Applied()
    wal = WriteAheadLog(tmp_path, apply=applied)
    wal.start()
    fsyncs.clear()  # the directory sync of the first segment
    records = [record(n) for n in range(20)]
    await asyncio.gather(*(wal.append(r) for r in records))
    assert len(fsyncs) == 1  # one group: one disk flush serves all twenty requests
    assert applied == records  # applied in log order
    [segment] = segments(tmp_path)
    assert segment.read_bytes() == b"".join(codec.encode(r) for r in records)
    await wal.close()


async def test_an_append_returns_only_after_its_bytes_are_fsynced_and_applied(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    events: list[str] = []
    path: list[Path] = []

    def apply(rec: IngestRecord) -> None:
        # By now the frame is in the file and the file was fsynced.
        assert codec.encode(rec) in path[0].read_bytes()
        events.append(f"apply {len(fsyncs)}")

    wal = WriteAheadLog(tmp_path, apply=apply)
    wal.start()
    path.append(segments(tmp_path)[0])
    fsyncs.clear()

    async def acknowledged(n: int) -> None:
        await wal.append(record(n))
        events.append(f"ack {n} {len(fsyncs)}")

    await acknowledged(0)
    await asyncio.gather(acknowledged(1), acknowledged(2))
    assert events == ["apply 1", "ack 0 1", "apply 2", "apply 2", "ack 1 2", "ack 2 2"]
    await wal.close()


async def test_barrier_returns_once_everything_appended_before_it_is_applied(
    tmp_path: Path,
) -> None:
    applied = Applied()
    wal = WriteAheadLog(tmp_path, apply=applied)
    wal.start()
    pending = [asyncio.ensure_future(wal.append(record(n))) for n in range(5)]
    await asyncio.sleep(0)  # the appends are queued, none has been written yet
    assert applied == []
    await wal.barrier()
    assert applied == [record(n) for n in range(5)]
    later = asyncio.ensure_future(wal.append(record(9)))
    await asyncio.gather(*pending, later)
    await wal.close()


async def test_a_failed_group_write_fails_every_request_of_the_group(tmp_path: Path) -> None:
    """The segment is on a full device: the write fails with ENOSPC, no request of the group is
    acknowledged or applied, and the WAL refuses from then on (ingest answers 503)."""
    (tmp_path / "segment-000000000000.wal").symlink_to("/dev/full")
    applied = Applied()
    wal = WriteAheadLog(tmp_path, apply=applied)
    wal.start()
    results = await asyncio.gather(
        *(wal.append(record(n)) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, WalUnavailableError) for r in results), results
    assert applied == []
    assert wal.failed is not None and "No space left" in wal.failed
    assert wal.size_bytes == 0  # nothing pending, nothing counted as written
    with pytest.raises(WalUnavailableError):
        await wal.append(record(4))
    await wal.close()  # nothing is left in a buffer to fail again


async def test_replay_after_a_torn_tail_keeps_every_intact_record_across_restarts(
    tmp_path: Path,
) -> None:
    wal = WriteAheadLog(tmp_path, apply=Applied())
    wal.start()
    records = [record(n) for n in range(3)]
    for rec in records:
        await wal.append(rec)
    await wal.close()
    # A crash in the middle of the next group write: half a frame at the end.
    [segment] = segments(tmp_path)
    with open(segment, "ab") as f:
        f.write(codec.encode(record(3))[:20])

    applied = Applied()
    recovered = WriteAheadLog(tmp_path, apply=applied)
    report = recovered.replay()
    assert applied == records
    assert report.records == 3 and report.corrupt_segments == [segment.name]
    # The torn bytes are kept aside for inspection; the intact records stay in the log.
    assert (tmp_path / "segment-000000000000.corrupt").read_bytes() == codec.encode(record(3))[:20]
    recovered.start()
    await recovered.append(record(4))
    await recovered.close()

    # Crash again before the window is sealed: the next replay still has every record.
    again = Applied()
    report = WriteAheadLog(tmp_path, apply=again).replay()
    assert again == [*records, record(4)]
    assert report.corrupt_segments == []
