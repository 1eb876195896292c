"""The write-ahead log: an ingest request is acknowledged only once its record is on disk.

One writer task owns the files. Handlers enqueue encoded frames and wait; the writer takes
everything queued, writes it with one `write` + `fsync` (group commit: one disk flush serves many
requests), then applies each record to the aggregator in log order and wakes the handlers. Because
the live path and crash recovery apply the same records in the same order through the same
function, the state rebuilt after a crash is the state that was lost.

Segments rotate at each window seal and at `segment_bytes`; a segment is deleted once every
window it mentions is sealed into the outbox (P8). Each window's contributor salt (P2) is
persisted beside the segments so that a contributor keeps one key across a restart (otherwise it
would count twice towards k), and is deleted with the window.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from relay.aggregate.observation import IngestRecord
from relay.wal import codec

__all__ = ["ReplayReport", "WalFullError", "WalUnavailableError", "WriteAheadLog"]

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^segment-(\d{12})\.wal$")
_SALT = re.compile(r"^salt-(\d+)\.bin$")


class WalUnavailableError(Exception):
    """The WAL cannot take the record (disk error, closed): the request must get a 503."""


class WalFullError(WalUnavailableError):
    """The WAL is at its byte cap: backpressure until sealed windows free space."""


@dataclass
class ReplayReport:
    records: int = 0
    corrupt_segments: list[str] = field(default_factory=list)


@dataclass
class _Segment:
    path: Path
    max_window_ms: int = -1
    size: int = 0

    @property
    def aside(self) -> Path:
        """Where a torn tail cut from this segment is kept, deleted with the segment."""
        return self.path.with_suffix(".corrupt")


_WINDOW = operator.itemgetter(0)  # an observation's window start


def _max_window(record: IngestRecord) -> int:
    return max(record.arrival_window_ms, max(map(_WINDOW, record.observations), default=-1))


class _Barrier:
    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future


class _Rotate(_Barrier):
    __slots__ = ()


class _Append:
    __slots__ = ("frame", "future", "max_window", "record")

    def __init__(self, record: IngestRecord, future: asyncio.Future[None]) -> None:
        self.record = record
        self.frame = codec.encode(record)
        self.max_window = _max_window(record)
        self.future = future


_Item = _Append | _Barrier


class WriteAheadLog:
    def __init__(
        self,
        directory: Path,
        *,
        apply: Callable[[IngestRecord], None],
        fsync: bool = True,
        segment_bytes: int = 16 << 20,
        max_bytes: int = 1 << 30,
    ) -> None:
        self._dir = directory
        self._apply = apply
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._max_bytes = max_bytes
        self._closed: list[_Segment] = []
        self._current: _Segment | None = None
        self._file: BinaryIO | None = None
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._next_index = 0
        self._pending_bytes = 0
        self.failed: str | None = None
        directory.mkdir(parents=True, exist_ok=True)

    # -- recovery -----------------------------------------------------------------------------

    def replay(self) -> ReplayReport:
        """Apply every intact record of every segment in order; call once, before `start`.

        A bad frame ends its segment: what follows a torn write cannot be trusted. The bytes from
        there on are moved aside (`segment-N.corrupt`, for inspection) and the segment is cut
        back to its intact records, which stay in the log: should the relay crash again before
        their windows are sealed, the next replay reads them again.
        """
        report = ReplayReport()
        for index, path in self._segment_paths():
            self._next_index = index + 1
            data = path.read_bytes()
            segment = _Segment(path, size=len(data))
            good_end = 0
            try:
                for end, payload in codec.iter_frames(data):
                    record = codec.decode_payload(payload)
                    segment.max_window_ms = max(segment.max_window_ms, _max_window(record))
                    self._apply(record)
                    report.records += 1
                    good_end = end
            except codec.CorruptRecord as exc:
                log.warning(
                    "WAL segment %s: %s; %d bytes after it moved aside",
                    path.name,
                    exc,
                    len(data) - good_end,
                )
                report.corrupt_segments.append(path.name)
                self._cut(segment, data, good_end)
            self._closed.append(segment)
        return report

    def _cut(self, segment: _Segment, data: bytes, good_end: int) -> None:
        """Keep `data[good_end:]` aside and truncate the segment to `good_end`."""
        with open(segment.aside, "wb") as f:
            f.write(data[good_end:])
            if self._fsync:
                os.fsync(f.fileno())
        with open(segment.path, "r+b") as f:
            f.truncate(good_end)
            if self._fsync:
                os.fsync(f.fileno())
        segment.size = good_end
        self._sync_dir()

    def _segment_paths(self) -> list[tuple[int, Path]]:
        found = []
        for path in self._dir.iterdir():
            match = _SEGMENT.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    # -- salts (P2) ---------------------------------------------------------------------------

    def load_salts(self) -> dict[int, bytes]:
        salts = {}
        for path in self._dir.iterdir():
            match = _SALT.match(path.name)
            if match:
                salts[int(match.group(1))] = path.read_bytes()
        return salts

    def save_salt(self, window_start_ms: int, salt: bytes) -> None:
        """Persist a new window's salt before any record keyed with it is acknowledged."""
        path = self._dir / f"salt-{window_start_ms}.bin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, salt)
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        self._sync_dir()

    def delete_salts_before(self, sealed_until_ms: int) -> None:
        for window in self.load_salts():
            if window < sealed_until_ms:
                (self._dir / f"salt-{window}.bin").unlink(missing_ok=True)

    # -- live path ----------------------------------------------------------------------------

    def start(self) -> None:
        self._open_new_segment()
        self._writer = asyncio.get_running_loop().create_task(self._run(), name="wal-writer")

    async def close(self) -> None:
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
            self._writer = None
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def size_bytes(self) -> int:
        total = sum(s.size for s in self._closed)
        if self._current is not None:
            total += self._current.size
        return total + self._pending_bytes

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    async def append(self, record: IngestRecord) -> None:
        """Return once `record` is durable and applied; raise WalUnavailableError otherwise."""
        if self.failed is not None or self._writer is None:
            raise WalUnavailableError(self.failed or "WAL is closed")
        item = _Append(record, asyncio.get_running_loop().create_future())
        if self.size_bytes + len(item.frame) > self._max_bytes:
            raise WalFullError("WAL is at its byte cap")
        self._pending_bytes += len(item.frame)
        self._queue.put_nowait(item)
        await item.future

    async def barrier(self) -> None:
        """Return once every record appended before this call is durable and applied."""
        await self._command(_Barrier)

    async def rotate(self) -> None:
        """Start a new segment after everything appended so far (called at each seal)."""
        await self._command(_Rotate)

    async def _command(self, kind: type[_Barrier]) -> None:
        if self._writer is None:
            return
        item = kind(asyncio.get_running_loop().create_future())
        self._queue.put_nowait(item)
        await item.future

    def prune(self, sealed_until_ms: int) -> int:
        """Delete closed segments whose windows are all sealed; return how many."""
        keep, gone = [], 0
        for segment in self._closed:
            if segment.max_window_ms < sealed_until_ms:
                segment.path.unlink(missing_ok=True)
                segment.aside.unlink(missing_ok=True)
                gone += 1
            else:
                keep.append(segment)
        self._closed = keep
        if gone:
            self._sync_dir()
        return gone

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self._queue.get()
            if item is None:
                return
            batch: list[_Item] = [item]
            stop = False
            while not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            await self._process(loop, batch)
            if stop:
                return

    async def _process(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        # Records before a rotation go to the old segment, the rest to the new one.
        group: list[_Append] = []
        for item in batch:
            if isinstance(item, _Append):
                group.append(item)
                continue
            await self._commit(loop, group)
            group = []
            if isinstance(item, _Rotate) and self.failed is None:
                try:
                    await loop.run_in_executor(None, self._rotate_blocking)
                except OSError as exc:
                    self._fail(f"WAL rotation failed: {exc.strerror}")
            if not item.future.done():
                item.future.set_result(None)
        await self._commit(loop, group)

    async def _commit(self, loop: asyncio.AbstractEventLoop, group: list[_Append]) -> None:
        if not group:
            return
        frames = b"".join(item.frame for item in group)
        size = len(frames)
        try:
            if self.failed is not None:
                raise WalUnavailableError(self.failed)
            await loop.run_in_executor(None, self._write_blocking, frames)
        except (OSError, WalUnavailableError) as exc:
            # Nothing of this group was acknowledged; a partial write is a torn tail that replay
            # detects by checksum. Refuse further writes until restart rather than risk a gap.
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            self._fail(f"WAL write failed: {reason}")
            self._pending_bytes -= size
            for item in group:
                if not item.future.done():
                    item.future.set_exception(WalUnavailableError(self.failed or "WAL failed"))
            return
        self._pending_bytes -= size
        assert self._current is not None
        self._current.size += size
        for item in group:
            self._current.max_window_ms = max(self._current.max_window_ms, item.max_window)
            try:
                self._apply(item.record)
            except Exception:
                # A bug, not an input problem: stop taking events (503, not ready) instead of
                # leaving every later request waiting on a dead writer.
                log.exception("applying a WAL record failed")
                self._fail("applying a WAL record failed")
            if not item.future.done():
                item.future.set_result(None)
        if self._current.size >= self._segment_bytes:
            # Smaller segments are freed sooner once their windows are sealed.
            try:
                await loop.run_in_executor(None, self._rotate_blocking)
            except OSError as exc:
                self._fail(f"WAL rotation failed: {exc.strerror}")

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            log.error("%s; ingest answers 503 until the relay restarts", reason)
        self.failed = reason

    def _write_blocking(self, frames: bytes) -> None:
        assert self._file is not None
        # Unbuffered: a failed write leaves nothing behind in a buffer for a later flush (or
        # close) to write after the failure, or to fail on again.
        view = memoryview(frames)
        while view:
            view = view[self._file.write(view) :]
        if self._fsync:
            os.fsync(self._file.fileno())

    def _rotate_blocking(self) -> None:
        if self._current is not None and self._current.size == 0:
            return
        self._open_new_segment()

    def _open_new_segment(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._current is not None:
            self._closed.append(self._current)
        path = self._dir / f"segment-{self._next_index:012d}.wal"
        self._next_index += 1
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the segment
        self._current = _Segment(path)
        self._sync_dir()

    def _sync_dir(self) -> None:
        if not self._fsync:
            return
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
