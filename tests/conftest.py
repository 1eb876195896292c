"""Shared fixtures: a real relay on a real socket, over a real data_dir, with a movable clock."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientSession, web
from yarl import URL

from relay.aggregate.observation import IngestRecord, Observation, ms_bucket, throughput_bucket
from relay.config import Settings
from relay.core.document import Document
from relay.ingest.http import create_app, create_operator_app, runner_options
from relay.ingest.scrub import Admission
from relay.ingest.server import make_runner
from relay.privacy.contributor import WindowSalts
from relay.serve import OperatorRelay
from relay.sinks.store import EmbeddedStore
from relay.wal.log import WalUnavailableError

# 2026-01-05T00:00:00Z: a window boundary for every window length used in the tests.
T0_MS = 1_767_571_200_000


class FakeClock:
    def __init__(self, start_ms: int = T0_MS + 1_000) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)


class LiveServer:
    """The relay's own runner (as `relay serve` uses it) on a free loopback port."""

    host = "127.0.0.1"

    def __init__(self, runner: web.AppRunner) -> None:
        self.runner = runner
        self.port = 0

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def make_url(self, path: str) -> URL:
        return URL(f"http://{self.host}:{self.port}{path}")

    async def close(self) -> None:
        await self.runner.cleanup()


@dataclass
class RunningRelay:
    relay: OperatorRelay
    server: LiveServer  # the public listener
    operator: LiveServer  # the operator listener (metrics.listen): /metrics, detailed /readyz
    http: ClientSession
    clock: FakeClock

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def operator_url(self, path: str) -> str:
        return str(self.operator.make_url(path))

    async def post(self, path: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.post(self.url(path), json=body, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    async def post_per_client(self, path: str, events: list[dict[str, Any]]) -> dict[str, int]:
        """POST events, one request per `client` (or Atlas `user`), each from its own network.

        What real traffic looks like: distinct users on distinct networks (P5). Returns the
        summed counts of the answers, every one of which must be a 202.
        """
        groups: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            who = event.get("client", event.get("user")) if isinstance(event, dict) else None
            groups.setdefault(repr(who), []).append(event)
        total: dict[str, int] = {}
        for n, group in enumerate(groups.values()):
            status, answer = await self.post(path, {"events": group}, headers=from_network(n))
            assert status == 202, answer
            for key, value in answer.items():
                if isinstance(value, int):
                    total[key] = total.get(key, 0) + value
        return total

    async def seal_after(self, seconds: float) -> int:
        self.clock.advance(seconds)
        return await self.relay.seal_due()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_settings(data_dir: Path) -> SettingsFactory:
    def factory(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "origin": "test.relay/one",
            "data_dir": str(data_dir),
            "window": {"seconds": 60, "lateness_seconds": 10},
            "privacy": {"k": 3},
            "outbox": {"ship_interval_seconds": 0.05},
            # Loopback is a trusted proxy, so tests speak for many source networks (P5) with
            # X-Forwarded-For: see `from_network`.
            "ingest": {"trusted_proxies": ["127.0.0.0/8"]},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        return Settings(**base)

    return factory


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start_relay(make_settings: SettingsFactory, clock: FakeClock) -> Callable[..., Any]:
    """Start relays (stopped at teardown); call with Settings overrides."""
    started: list[RunningRelay] = []

    async def start(settings: Settings | None = None, **overrides: Any) -> RunningRelay:
        relay = OperatorRelay(settings or make_settings(**overrides), clock=clock)
        await relay.start()
        server = LiveServer(make_runner(create_app(relay), **runner_options(relay)))
        await server.start()
        operator = LiveServer(make_runner(create_operator_app(relay), access_log=None))
        await operator.start()
        running = RunningRelay(relay, server, operator, ClientSession(), clock)
        started.append(running)
        return running

    start.started = started  # type: ignore[attr-defined]
    return start


@pytest.fixture
async def relay_server(start_relay: Callable[..., Any]) -> AsyncIterator[RunningRelay]:
    running: RunningRelay = await start_relay()
    yield running


@pytest.fixture(autouse=True)
async def _stop_started(start_relay: Callable[..., Any]) -> AsyncIterator[None]:
    yield
    for running in start_relay.started:
        await stop(running)


async def stop(running: RunningRelay) -> None:
    if running.http.closed:
        return
    await running.http.close()
    await running.server.close()
    await running.operator.close()
    if not running.relay.shutting_down:
        await running.relay.stop()


async def break_wal(relay: OperatorRelay) -> None:
    """Make the WAL fail for real: its next segment is on /dev/full, so the next group write
    there fails with ENOSPC, and the WAL refuses from then on (as after any failed write).

    Takes one rejected-only record in the current segment (a rotation skips an empty one).
    """
    window = relay.clock() - relay.clock() % relay.window_ms
    probe = IngestRecord(window, "ZZ", [], {"invalid": 1}, {})
    await relay.commit(probe)
    wal_dir = relay.settings.data_dir / "wal"
    last = max(int(p.name[8:20]) for p in wal_dir.glob("segment-*.wal"))
    (wal_dir / f"segment-{last + 1:012d}.wal").symlink_to("/dev/full")
    await relay.wal.rotate()
    with pytest.raises(WalUnavailableError):
        await relay.commit(probe)
    assert relay.wal.failed is not None and "No space left" in relay.wal.failed


def network_ip(n: int) -> str:
    """An address in the n-th of distinct /24 source networks; private, so region ZZ."""
    return f"10.{n // 256 % 256}.{n % 256}.1"


def from_network(n: int) -> dict[str, str]:
    """Headers that make a test request come from network n (loopback is a trusted proxy)."""
    return {"X-Forwarded-For": network_ip(n)}


def request_event(
    node: str = "d1", outcome: str = "ok", client: str | None = "c1", **fields: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "request",
        "node": {"role": "distributor", "id": node},
        "outcome": outcome,
        **fields,
    }
    if client is not None:
        event["client"] = client
    return event


def signal_event(
    node: str = "d1", signal: str = "playback_slow", client: str | None = "c1", **fields: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "signal",
        "node": {"role": "distributor", "id": node},
        "signal": signal,
        **fields,
    }
    if client is not None:
        event["client"] = client
    return event


def stored_documents(data_dir: Path) -> list[Document]:
    """Every document in the embedded store under `data_dir`, in export order."""
    store = EmbeddedStore(data_dir / "store.sqlite", readonly=True)
    try:
        return list(store.documents())
    finally:
        store.close()


OBSERVATION_FIELDS = (
    "window_start_ms",
    "contributor",
    "role",
    "node_id",
    "kind",
    "name",
    "op",
    "asset",
    "ttfb_bucket",
    "duration_bucket",
    "bytes",
    "throughput_bucket",
)


def observation(
    contributor: int,
    node_id: str = "d1",
    *,
    window_start_ms: int = 0,
    kind: str = "request",
    name: str = "ok",
    op: str | None = "download",
    asset: str | None = None,
    ttfb_ms: float | None = None,
    duration_ms: float | None = None,
    bytes: int | None = None,
) -> Observation:
    """An observation as the scrub builds it, from timings in ms as the tests think of them."""
    return (
        window_start_ms,
        contributor,
        "distributor",
        node_id,
        kind,
        name,
        op,
        asset,
        ms_bucket(ttfb_ms),
        ms_bucket(duration_ms),
        bytes,
        throughput_bucket(bytes, duration_ms),
    )


def observation_fields(observation: Observation) -> dict[str, Any]:
    return dict(zip(OBSERVATION_FIELDS, observation, strict=True))


def memory_admission(window_ms: int = 60_000) -> Admission:
    """An Admission whose salts live in memory only (nothing persisted), as unit tests want it."""
    return Admission(
        window_ms=window_ms,
        max_past_ms=86_400_000,
        max_future_ms=60_000,
        salts=WindowSalts(),
        persist_salt=lambda window, salt: None,
    )


async def wait_ready(
    http: ClientSession, url: str, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll a `relay serve` process's /readyz until it answers 200 (20 s at most); fail early,
    with its standard error, if the process exits."""
    deadline = time.monotonic() + 20
    while True:
        try:
            async with http.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if process is not None and process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else b""
            raise AssertionError(f"relay serve exited: {stderr.decode(errors='replace')}")
        assert time.monotonic() < deadline, "relay serve did not become ready"
        await asyncio.sleep(0.05)
