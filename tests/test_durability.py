"""kill -9 under load, restart, count: every acknowledged event is counted exactly once (§6)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.sinks.store import EmbeddedStore

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RELAY_ORIGIN": "durability.test/one",
        "RELAY_DATA_DIR": str(data_dir),
        "RELAY_LISTEN__PORT": str(port),
        "RELAY_METRICS__LISTEN__PORT": "0",  # not scraped here
        "RELAY_WINDOW__SECONDS": "1",
        "RELAY_WINDOW__LATENESS_SECONDS": "0",
        "RELAY_PRIVACY__K": "2",
        "RELAY_PRIVACY__MAX_EVENTS_PER_CONTRIBUTOR": "20",
        "RELAY_OUTBOX__SHIP_INTERVAL_SECONDS": "0.1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "relay", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def wait_ready(session: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            async with session.get(base + "/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("relay did not become ready")


class Tally:
    def __init__(self) -> None:
        self.acknowledged = 0
        self.unknown = 0  # sent, but the answer was lost to the kill: may or may not count


async def client(
    session: aiohttp.ClientSession, base: str, tally: Tally, n: int, stop: asyncio.Event
) -> None:
    rng = random.Random(n)
    while not stop.is_set():
        size = rng.randint(1, 30)
        events = [
            {
                "kind": "request",
                "node": {"role": "distributor", "id": f"d{rng.randint(1, 3)}"},
                "outcome": rng.choice(["ok", "ok", "timeout", "http_5xx"]),
                "ttfb_ms": rng.uniform(1, 900),
                "client": f"client-{n}-{rng.randint(1, 4)}",
            }
            for _ in range(size)
        ]
        try:
            async with session.post(base + "/v1/events", json={"events": events}) as resp:
                if resp.status == 202:
                    body = await resp.json()
                    tally.acknowledged += body["accepted"]
                else:
                    await resp.read()
                    await asyncio.sleep(0.05)
        except (TimeoutError, aiohttp.ClientError):
            tally.unknown += size
            await asyncio.sleep(0.05)


async def drive(data_dir: Path, kills: int) -> Tally:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tally = Tally()
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for round_ in range(kills + 1):
            proc = start(data_dir, port)
            try:
                await wait_ready(session, base)
                stop = asyncio.Event()
                clients = [
                    asyncio.create_task(client(session, base, tally, 10 * round_ + n, stop))
                    for n in range(4)
                ]
                await asyncio.sleep(random.uniform(1.2, 2.5))
                if round_ < kills:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                stop.set()
                await asyncio.gather(*clients)
            finally:
                if proc.poll() is None:
                    # Last round: let every window fall due, then stop gracefully.
                    await asyncio.sleep(1.5)
                    proc.send_signal(signal.SIGTERM)
                    assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else ""
    return tally


def test_kill_9_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    tally = asyncio.run(drive(data_dir, kills=3))
    assert tally.acknowledged > 500

    store = EmbeddedStore(data_dir / "store.sqlite", readonly=True)
    docs = [d.source for d in store.documents()]
    store.close()
    chain = [d for d in docs if "att" not in d]
    assert [b["seq"] for b in chain] == list(range(len(chain)))
    for before, after in itertools.pairwise(chain):
        assert after["prev"] == before["batch_hash"]
        assert after["window_start_ms"] == before["window_end_ms"], "windows must be contiguous"

    counted = 0
    for batch in chain:
        stats = batch["stats"]
        published = sum(
            s["requests"] + sum(s["signals"].values())
            for s in docs
            if "att" in s and s["seq"] == batch["seq"]
        )
        assert published == stats["accepted"] - stats["over_cap"] - stats["suppressed_events"]
        counted += stats["accepted"]
    # Every acknowledged event is in exactly one batch; an event whose answer was lost to a kill
    # may be counted (it reached the WAL) or not, but never twice.
    assert tally.acknowledged <= counted <= tally.acknowledged + tally.unknown
    assert base64.b64decode(chain[0]["prev"]) == bytes(32)
    # P8: with every window sealed, no WAL data and no salt is left behind.
    leftovers: list[Any] = [
        p.name for p in (data_dir / "wal").iterdir() if p.suffix == ".bin" or p.stat().st_size
    ]
    assert leftovers == []


def counted_events(data_dir: Path) -> int:
    store = EmbeddedStore(data_dir / "store.sqlite", readonly=True)
    try:
        return sum(
            d.source["stats"]["accepted"] for d in store.documents() if "att" not in d.source
        )
    finally:
        store.close()


async def sigterm_under_load(data_dir: Path) -> tuple[Tally, float, int]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tally = Tally()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        proc = start(data_dir, port)
        await wait_ready(session, base)
        stop = asyncio.Event()
        clients = [asyncio.create_task(client(session, base, tally, n, stop)) for n in range(4)]
        await asyncio.sleep(1.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
        took = time.monotonic() - sent
        stop.set()
        await asyncio.gather(*clients)
        # Restart once so that windows still open at shutdown seal, then stop cleanly.
        proc = start(data_dir, port)
        await wait_ready(session, base)
        await asyncio.sleep(2.5)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    return tally, took, code


def test_sigterm_under_load_exits_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    tally, took, code = asyncio.run(sigterm_under_load(data_dir))
    assert code == 0
    assert took < 10  # shutdown_timeout defaults to 10 s
    assert tally.acknowledged > 100
    assert tally.acknowledged <= counted_events(data_dir) <= tally.acknowledged + tally.unknown
