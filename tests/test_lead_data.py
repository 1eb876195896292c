"""The lead tests' fixture: known events through two real relays into one embedded store.

Two operators (origins a and b) each run a real relay (HTTP ingest, WAL, aggregation under
k = 3, signing, shipping into their embedded store); b's documents are then copied into a's store,
as two operators shipping to one Elasticsearch would. Every cell has at least k distinct clients,
so nothing is suppressed and every event is published: the expected numbers are plain sums over
EVENTS, computed here without the relay.

Besides native-client nodes that report both sides (d1, d2) it holds what an Atlas-only audience
produces (DESIGN §3.2, as the Atlas adapter maps it): storage node "7" with failed uploads and
their signals only, distributor "mrbovo.distributor.cc" with successful downloads and codec signals
only, and the network-wide storage cell "_all" with `missing_operators`. s1 is a native storage
node whose clients reported only successes, and slow ones.

This module also holds the helpers the other lead tests share (`build_store`, `expected`,
`ThreadedLead`), and checks the fixture itself.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from relay.aggregate import histogram
from relay.config import Settings
from relay.ingest.http import create_app, runner_options
from relay.lead.api import create_lead_app
from relay.lead.server import build_service, open_source
from relay.lead.service import LeadService
from relay.serve import OperatorRelay
from relay.sinks.store import EmbeddedStore
from tests.conftest import T0_MS, FakeClock

ORIGIN_A = "lead.test/a"
ORIGIN_B = "lead.test/b"
EU_IP = "81.2.69.160"  # GB -> EU
NA_IP = "8.8.8.8"  # US -> NA
WINDOW_MS = 60_000
#: After the fixture: the lead's clock (for verification and default ranges).
NOW_MS = T0_MS + 10 * WINDOW_MS
RANGE = {"from": str(T0_MS), "to": str(T0_MS + 2 * WINDOW_MS)}


@dataclass(frozen=True)
class Event:
    origin: str
    window: int  # 0 or 1: which minute after T0
    role: str
    node: str
    ip: str
    client: str
    outcome: str | None = None  # a request; else a signal
    signal: str | None = None
    ttfb_ms: float | None = None
    duration_ms: float | None = None
    op: str | None = None

    @property
    def region(self) -> str:
        return "EU" if self.ip == EU_IP else "NA"

    def body(self) -> dict[str, Any]:
        event: dict[str, Any] = {
            "kind": "request" if self.outcome else "signal",
            "node": {"role": self.role, "id": self.node},
            "client": self.client,
        }
        if self.outcome:
            event["outcome"] = self.outcome
        if self.op:
            event["op"] = self.op
        if self.signal:
            event["signal"] = self.signal
        if self.ttfb_ms is not None:
            event["ttfb_ms"] = self.ttfb_ms
        if self.duration_ms is not None:
            event["duration_ms"] = self.duration_ms
        return event


def _requests(
    origin: str,
    window: int,
    role: str,
    node: str,
    ip: str,
    clients: Iterable[str],
    outcomes: list[tuple[str, float | None, float | None]],
) -> list[Event]:
    """Every client sends every (outcome, ttfb, duration) once."""
    return [
        Event(origin, window, role, node, ip, client, outcome, None, ttfb, duration)
        for client in clients
        for outcome, ttfb, duration in outcomes
    ]


def _clients(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def _signals(
    origin: str, window: int, role: str, node: str, signal: str, clients: list[str]
) -> list[Event]:
    return [Event(origin, window, role, node, EU_IP, c, signal=signal) for c in clients]


#: An Atlas storage node (bucket id 7): each failed upload attempt is a request, the
#: blacklisting that follows is a signal; successful uploads are never reported.
FAILING_UPLOADS = [
    Event(ORIGIN_A, window, "storage", "7", EU_IP, client, outcome, op="upload")
    for window in (0, 1)
    for client in _clients("u", 3)
    for outcome in ("http_5xx", "connection")
]
#: An Atlas distributor, named by its host: successful downloads only.
OK_DOWNLOADS = _requests(
    ORIGIN_B,
    0,
    "distributor",
    "mrbovo.distributor.cc",
    EU_IP,
    _clients("c", 4),
    [("ok", 50, 400), ("ok", 70, 500), ("ok", 90, 600)],
)


def client_network_ip(ip: str, client: str) -> str:
    """The address client `<prefix><i>` sends from: ip moved to the i-th next /24, which lies in
    the same country for EU_IP and NA_IP, so every client is its own source network (P5)."""
    a, b, c, d = ip.split(".")
    return f"{a}.{b}.{int(c) + int(client[1:])}.{d}"


EVENTS: list[Event] = [
    # d1, EU, operator a, window 0: 4 clients x 5 requests (4 ok, 1 timeout) + 3 slow-playback
    *_requests(
        ORIGIN_A,
        0,
        "distributor",
        "d1",
        EU_IP,
        _clients("a", 4),
        [
            ("ok", 40, 400),
            ("ok", 60, 500),
            ("ok", 80, 700),
            ("ok", 120, 900),
            ("timeout", None, None),
        ],
    ),
    *[
        Event(ORIGIN_A, 0, "distributor", "d1", EU_IP, c, signal="playback_slow")
        for c in _clients("a", 3)
    ],
    # d1, NA, operator a, window 0: 3 clients x 2 ok
    *_requests(ORIGIN_A, 0, "distributor", "d1", NA_IP, _clients("n", 3), [("ok", 150, 1200)] * 2),
    # d1, EU, operator a, window 1: 3 clients x (1 ok, 1 timeout)
    *_requests(
        ORIGIN_A,
        1,
        "distributor",
        "d1",
        EU_IP,
        _clients("a", 3),
        [("ok", 90, 800), ("timeout", None, None)],
    ),
    # d2, EU, operator a, window 0: 3 clients x (1 ok, 2 http_5xx, 1 connection): down
    *_requests(
        ORIGIN_A,
        0,
        "distributor",
        "d2",
        EU_IP,
        _clients("b", 3),
        [
            ("ok", 300, 2000),
            ("http_5xx", 200, 250),
            ("http_5xx", 220, 260),
            ("connection", None, None),
        ],
    ),
    # s1, NA, operator a, window 0: 3 clients x 4 ok, slow to start: degraded
    *_requests(
        ORIGIN_A,
        0,
        "storage",
        "s1",
        NA_IP,
        _clients("s", 3),
        [("ok", 2500, 4000), ("ok", 2600, 4100), ("ok", 2700, 4200), ("ok", 1000, 3000)],
    ),
    # d1, EU, operator b, window 0: 3 clients x 3 ok
    *_requests(
        ORIGIN_B,
        0,
        "distributor",
        "d1",
        EU_IP,
        _clients("x", 3),
        [("ok", 30, 300), ("ok", 35, 310), ("ok", 45, 330)],
    ),
    # storage 7, EU, operator a, windows 0 and 1: 12 failed uploads, blacklisted 6 times
    *FAILING_UPLOADS,
    *_signals(ORIGIN_A, 0, "storage", "7", "blacklisted", _clients("u", 3)),
    *_signals(ORIGIN_A, 1, "storage", "7", "blacklisted", _clients("u", 3)),
    # mrbovo.distributor.cc, EU, operator b, window 0: 12 ok downloads, 3 codec errors
    *OK_DOWNLOADS,
    *_signals(
        ORIGIN_B, 0, "distributor", "mrbovo.distributor.cc", "playback_codec", _clients("c", 3)
    ),
    # the network-wide storage cell, EU, operator a, window 0: 3 bags without operators
    *_signals(ORIGIN_A, 0, "storage", "_all", "missing_operators", _clients("m", 3)),
]


# -- building the store --------------------------------------------------------------------------


def relay_settings(root: Path, origin: str) -> Settings:
    return Settings(
        origin=origin,
        data_dir=root / origin.replace("/", "_"),
        window={"seconds": WINDOW_MS // 1000, "lateness_seconds": 10},
        privacy={"k": 3},
        ingest={"trusted_proxies": ["127.0.0.0/8"], "rate_limit": {"enabled": False}},
        outbox={"ship_interval_seconds": 0.05},
        lead={"registry": root / "registry.yaml", "verify_interval_seconds": 3600},
    )


async def _run_relay(root: Path, origin: str, events: list[Event]) -> Path:
    clock = FakeClock(T0_MS + 1_000)
    relay = OperatorRelay(relay_settings(root, origin), clock=clock)
    await relay.start()
    server = TestServer(create_app(relay))
    await server.start_server(**runner_options(relay))
    try:
        async with ClientSession() as http:
            for window in (0, 1):
                # Each client from its own network in its region's country (k_networks = k).
                sources = sorted({(e.ip, e.client) for e in events if e.window == window})
                for ip, client in sources:
                    batch = [
                        e.body()
                        for e in events
                        if e.window == window and e.ip == ip and e.client == client
                    ]
                    async with http.post(
                        server.make_url("/v1/events"),
                        json={"events": batch},
                        headers={"X-Forwarded-For": client_network_ip(ip, client)},
                    ) as resp:
                        answer = await resp.json()
                        assert resp.status == 202 and answer["rejected"] == 0, answer
                clock.advance(WINDOW_MS / 1000)
        clock.advance(15)  # past the lateness of window 1: both windows are due
        assert await relay.seal_due() == 2
        assert await relay.shipper.ship_pending()
    finally:
        await server.close()
        await relay.stop()
    return relay.settings.data_dir / "store.sqlite"


async def build_store(root: Path) -> Settings:
    """Run both relays; return the lead's settings (a's data_dir, holding every document)."""
    store_a = await _run_relay(root, ORIGIN_A, [e for e in EVENTS if e.origin == ORIGIN_A])
    store_b = await _run_relay(root, ORIGIN_B, [e for e in EVENTS if e.origin == ORIGIN_B])
    source = EmbeddedStore(store_b, readonly=True)
    target = EmbeddedStore(store_a)
    try:
        target.write(list(source.documents()))
    finally:
        source.close()
        target.close()
    return lead_settings(root)


def lead_settings(root: Path, **lead: Any) -> Settings:
    return Settings(
        data_dir=root / ORIGIN_A.replace("/", "_"),
        lead={"registry": root / "registry.yaml", "verify_interval_seconds": 3600, **lead},
    )


async def lead_service(settings: Settings) -> LeadService:
    return await build_service(settings, open_source(settings), lambda: NOW_MS)


# -- what the lead should answer, from EVENTS alone ------------------------------------------------


def _percentile_ms(values: list[float], q: float) -> float | None:
    """Nearest rank over the values as the histogram layout represents them."""
    if not values:
        return None
    represented = sorted(histogram.representative(histogram.bucket_index(v * 1000)) for v in values)
    rank = max(1, math.ceil(Fraction(repr(q)) * len(represented)))
    return represented[rank - 1] / 1000


def expected(events: Iterable[Event]) -> dict[str, Any]:
    """requests, outcomes, signals, success ratio and percentiles of a set of events.

    A success ratio only when both ok and failed requests are among them (relay/lead/health.py).
    """
    events = list(events)
    requests = [e for e in events if e.outcome]
    outcomes: dict[str, int] = {}
    signals: dict[str, int] = {}
    for e in requests:
        outcomes[e.outcome or ""] = outcomes.get(e.outcome or "", 0) + 1
    for e in events:
        if e.signal:
            signals[e.signal] = signals.get(e.signal, 0) + 1
    ttfb = [e.ttfb_ms for e in requests if e.ttfb_ms is not None]
    duration = [e.duration_ms for e in requests if e.duration_ms is not None]
    return {
        "requests": len(requests),
        "outcomes": outcomes,
        "signals": signals,
        "success_ratio": outcomes.get("ok", 0) / len(requests)
        if 0 < outcomes.get("ok", 0) < len(requests)
        else None,
        "ttfb_ms": {
            q: _percentile_ms(ttfb, v) for q, v in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        },
        "duration_ms": {
            q: _percentile_ms(duration, v) for q, v in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        },
        "operators": sorted({e.origin for e in events}),
    }


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {name: n for name, n in counts.items() if n}


# -- a lead on a real socket, for synchronous tests (schemathesis, the browser) -------------------


class ThreadedLead:
    """The fixture store and a lead API on 127.0.0.1:<free port>, in their own thread and loop."""

    def __init__(self, root: Path, tokens: dict[str, str] | None = None) -> None:
        self.root = root
        self.tokens = tokens or {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.service: LeadService | None = None
        self.base_url = ""

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def __enter__(self) -> ThreadedLead:
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        settings = await build_store(self.root)
        self.service = await lead_service(settings)
        self._runner = web.AppRunner(create_lead_app(self.service, self.tokens))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self.service is not None:
            await self.service.source.close()

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._stop(), timeout=15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self.loop.close()


# -- the fixture itself ---------------------------------------------------------------------------


async def test_fixture_publishes_every_event(tmp_path: Path) -> None:
    """Nothing suppressed or capped: otherwise `expected` would not be what the lead should say."""
    settings = await build_store(tmp_path)
    store = EmbeddedStore(settings.data_dir / "store.sqlite", readonly=True)
    try:
        docs = [d.source for d in store.documents()]
    finally:
        store.close()
    batches = [d for d in docs if "att" not in d]
    assert sorted((b["origin"], b["seq"]) for b in batches) == [
        (ORIGIN_A, 0),
        (ORIGIN_A, 1),
        (ORIGIN_B, 0),
        (ORIGIN_B, 1),
    ]
    assert all(b["stats"]["suppressed_events"] == b["stats"]["over_cap"] == 0 for b in batches)
    published = sum(d["requests"] + sum(d["signals"].values()) for d in docs if "att" in d)
    assert published == len(EVENTS)
