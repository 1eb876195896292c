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

from tests.conftest import stored_documents

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
    """Every request sent, by what its sender learnt of it.

    Each request names its own node (`r<round>.<client>.<n>`) and comes from several clients,
    so it is one published cell (k = 2, one event per client at most a third of the request,
    far under the cap): the published summaries say exactly how many of its events were counted.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.answered: dict[str, int] = {}  # 202: events acknowledged
        self.refused: dict[str, int] = {}  # another answer (503 while starting or stopping)
        self.cut: dict[str, int] = {}  # no answer (the kill, a timeout): may or may not count

    @property
    def acknowledged(self) -> int:
        return sum(self.answered.values())


async def client(
    session: aiohttp.ClientSession,
    base: str,
    tally: Tally,
    name: str,
    rng: random.Random,
    stop: asyncio.Event,
) -> None:
    for n in itertools.count():
        if stop.is_set():
            return
        node = f"r{name}.{n}"
        size = rng.randint(2, 30)
        events = [
            {
                "kind": "request",
                "node": {"role": "distributor", "id": node},
                "outcome": rng.choice(["ok", "ok", "timeout", "http_5xx"]),
                "ttfb_ms": rng.uniform(1, 900),
                "client": f"client-{j % 3}",
            }
            for j in range(size)
        ]
        try:
            async with session.post(base + "/v1/events", json={"events": events}) as resp:
                if resp.status == 202:
                    body = await resp.json()
                    assert body["accepted"] == size, body
                    tally.answered[node] = size
                else:
                    await resp.read()
                    tally.refused[node] = size
                    await asyncio.sleep(0.05)
        except (TimeoutError, aiohttp.ClientError):
            tally.cut[node] = size
            await asyncio.sleep(0.05)


async def drive(data_dir: Path, kills: int, seed: int) -> Tally:
    rng = random.Random(seed)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tally = Tally(seed)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for round_ in range(kills + 1):
            proc = start(data_dir, port)
            try:
                await wait_ready(session, base)
                stop = asyncio.Event()
                clients = [
                    asyncio.create_task(
                        client(
                            session, base, tally, f"{round_}.{n}", random.Random(rng.random()), stop
                        )
                    )
                    for n in range(4)
                ]
                await asyncio.sleep(rng.uniform(1.2, 2.5))
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


def assert_counted_exactly(data_dir: Path, tally: Tally) -> None:
    """Each request is counted exactly as its sender was told: an answered one once with all
    its events, a refused one not at all, one whose answer was cut once or not at all."""
    context = f"replay with RELAY_TEST_SEED={tally.seed}"
    docs = [d.source for d in stored_documents(data_dir)]
    chain = [d for d in docs if "att" not in d]
    published: dict[str, int] = {}
    for summary in (d for d in docs if "att" in d):
        node = summary["node"]["id"]
        published[node] = published.get(node, 0) + summary["requests"]
    for node, size in tally.answered.items():
        assert published.get(node, 0) == size, (node, size, published.get(node), context)
    for node in tally.refused:
        assert node not in published, (node, context)
    cut_counted = 0
    for node, size in tally.cut.items():
        assert published.get(node, 0) in (0, size), (node, size, published.get(node), context)
        cut_counted += published.get(node, 0)
    assert set(published) <= set(tally.answered) | set(tally.cut), context
    # The identity: what the batches count is what was acknowledged, plus the cut requests
    # that reached the WAL; nothing is over the cap or suppressed by construction.
    accepted = sum(b["stats"]["accepted"] for b in chain)
    assert sum(b["stats"]["over_cap"] + b["stats"]["suppressed_events"] for b in chain) == 0
    assert accepted == sum(published.values()) == tally.acknowledged + cut_counted, context


def run_seed() -> int:
    """RELAY_TEST_SEED replays a failed run's kill points and requests; otherwise a new one."""
    return int(os.environ.get("RELAY_TEST_SEED") or random.randrange(2**32))


def test_kill_9_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    seed = run_seed()
    tally = asyncio.run(drive(data_dir, kills=3, seed=seed))
    assert tally.acknowledged > 500, f"seed {seed}"
    assert_counted_exactly(data_dir, tally)

    docs = [d.source for d in stored_documents(data_dir)]
    chain = [d for d in docs if "att" not in d]
    assert [b["seq"] for b in chain] == list(range(len(chain)))
    for before, after in itertools.pairwise(chain):
        assert after["prev"] == before["batch_hash"]
        assert after["window_start_ms"] == before["window_end_ms"], "windows must be contiguous"
    assert base64.b64decode(chain[0]["prev"]) == bytes(32)
    # P8: with every window sealed, no WAL data and no salt is left behind.
    leftovers: list[Any] = [
        p.name for p in (data_dir / "wal").iterdir() if p.suffix == ".bin" or p.stat().st_size
    ]
    assert leftovers == []


async def sigterm_under_load(data_dir: Path, seed: int) -> tuple[Tally, float, int]:
    rng = random.Random(seed)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tally = Tally(seed)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        proc = start(data_dir, port)
        await wait_ready(session, base)
        stop = asyncio.Event()
        clients = [
            asyncio.create_task(
                client(session, base, tally, f"0.{n}", random.Random(rng.random()), stop)
            )
            for n in range(4)
        ]
        await asyncio.sleep(rng.uniform(1.2, 2.0))
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
    seed = run_seed()
    tally, took, code = asyncio.run(sigterm_under_load(data_dir, seed))
    assert code == 0
    assert took < 10  # shutdown_timeout defaults to 10 s
    assert tally.acknowledged > 100, f"seed {seed}"
    assert_counted_exactly(data_dir, tally)
