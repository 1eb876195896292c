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

from tests.conftest import stored_documents, wait_ready

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
        # Events carry their own `ts` (below), so a second of lateness never makes one late.
        "RELAY_WINDOW__LATENESS_SECONDS": "1",
        "RELAY_PRIVACY__K": "2",
        "RELAY_PRIVACY__K_NETWORKS": "2",
        # Every request names a new node: far more per window than the default node budget.
        "RELAY_WINDOW__MAX_NODES": "1000000",
        # Each half of a node's events comes through loopback from its own network (P5).
        "RELAY_INGEST__TRUSTED_PROXIES": '["127.0.0.1/32"]',
        "RELAY_PRIVACY__MAX_EVENTS_PER_CONTRIBUTOR": "20",
        "RELAY_OUTBOX__SHIP_INTERVAL_SECONDS": "0.1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "relay", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


class Tally:
    """Every request sent, by what its sender learnt of it.

    Each node (`r<round>.<client>.<n>`) gets its events in two halves, sent at once from two
    source networks with the same `ts`, so one window holds them: a cell with k = 2 contributors
    and k_networks = 2 networks when both halves count, suppressed when only one does. Far under
    the caps, so the published summaries say exactly how many of a node's events were counted.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.answered: dict[str, list[int]] = {}  # 202: sizes of the halves acknowledged
        self.refused: dict[str, list[int]] = {}  # another answer (503 while starting or stopping)
        self.cut: dict[str, list[int]] = {}  # no answer (the kill, a timeout): may or may not count

    @property
    def acknowledged(self) -> int:
        return sum(map(sum, self.answered.values()))

    def record(self, outcome: dict[str, list[int]], node: str, size: int) -> None:
        outcome.setdefault(node, []).append(size)


async def send_half(
    session: aiohttp.ClientSession,
    base: str,
    tally: Tally,
    node: str,
    network: str,
    events: list[dict[str, Any]],
) -> None:
    headers = {"X-Forwarded-For": network}
    try:
        async with session.post(
            base + "/v1/events", json={"events": events}, headers=headers
        ) as resp:
            if resp.status == 202:
                body = await resp.json()
                assert body["accepted"] == len(events), body
                tally.record(tally.answered, node, len(events))
            else:
                await resp.read()
                tally.record(tally.refused, node, len(events))
                await asyncio.sleep(0.05)
    except (TimeoutError, aiohttp.ClientError):
        tally.record(tally.cut, node, len(events))
        await asyncio.sleep(0.05)


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
        ts = time.time_ns() // 1_000_000
        halves = []
        for half in range(2):
            events = [
                {
                    "kind": "request",
                    "node": {"role": "distributor", "id": node},
                    "outcome": rng.choice(["ok", "ok", "timeout", "http_5xx"]),
                    "ttfb_ms": rng.uniform(1, 900),
                    "ts": ts,
                    "client": f"client-{half}-{j % 3}",
                }
                for j in range(rng.randint(1, 15))
            ]
            network = f"10.{half}.{n % 256}.1"
            halves.append(send_half(session, base, tally, node, network, events))
        await asyncio.gather(*halves)


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
                await wait_ready(session, base + "/readyz", proc)
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
                    # Last round: let every window fall due (1 s + 1 s lateness), then stop.
                    await asyncio.sleep(2.5)
                    proc.send_signal(signal.SIGTERM)
                    assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else ""
    return tally


def subset_sums(sizes: list[int]) -> set[int]:
    sums = {0}
    for size in sizes:
        sums |= {s + size for s in sums}
    return sums


def assert_counted_exactly(data_dir: Path, tally: Tally) -> None:
    """Each half is counted exactly as its sender was told: an answered one once with all its
    events, a refused one not at all, one whose answer was cut once or not at all. A node is
    published when halves from both networks counted, else suppressed (and counted there)."""
    context = f"replay with RELAY_TEST_SEED={tally.seed}"
    docs = [d.source for d in stored_documents(data_dir)]
    chain = [d for d in docs if "att" not in d]
    published: dict[str, int] = {}
    for summary in (d for d in docs if "att" in d):
        node = summary["node"]["id"]
        published[node] = published.get(node, 0) + summary["requests"]
    assert set(published) <= set(tally.answered) | set(tally.cut), context
    unpublished_answered = 0
    unpublished_cut: list[int] = []
    for node in set(tally.answered) | set(tally.cut) | set(tally.refused):
        answered, cut = tally.answered.get(node, []), tally.cut.get(node, [])
        if node in published:
            extra = published[node] - sum(answered)
            assert extra in subset_sums(cut), (node, answered, cut, published[node], context)
        else:
            # Both halves acknowledged would have made a publishable cell.
            assert len(answered) < 2, (node, answered, context)
            unpublished_answered += sum(answered)
            unpublished_cut += cut
    # The identity: the batches count what was acknowledged plus the cut halves that reached
    # the WAL, exactly once; the suppressed part is the unpublished nodes' counted events.
    over_cap = sum(b["stats"]["over_cap"] for b in chain)
    suppressed = sum(b["stats"]["suppressed_events"] for b in chain)
    accepted = sum(b["stats"]["accepted"] for b in chain)
    assert over_cap == 0, context
    assert accepted == sum(published.values()) + suppressed, context
    assert suppressed - unpublished_answered in subset_sums(unpublished_cut), context
    assert accepted - tally.acknowledged in subset_sums(
        [size for sizes in tally.cut.values() for size in sizes]
    ), context


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
        await wait_ready(session, base + "/readyz", proc)
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
        await wait_ready(session, base + "/readyz", proc)
        await asyncio.sleep(3.0)
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
