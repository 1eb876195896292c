"""`python -m relay.lead.demo`: hours of synthetic traffic through real relays (`make demo`).

Three operators each run a real relay (HTTP ingest, WAL, k-threshold, signing, embedded store)
with one-minute windows on a simulated clock that starts some hours ago and runs up to now, so
the history takes seconds to make. Their documents are gathered into one store for the lead, as
Elasticsearch would gather them, with a registry that lists two of the three operators. One
summary of one operator is then altered, so the dashboard also shows what verification catches.
Then run `relay lead --config <dir>/lead.yaml`.

The traffic follows a script per node: one healthy, one that degrades in the last hour and a half,
one with an outage three hours ago, one that is slow, a healthy storage node and one that went
down 45 minutes ago. Two more are seen as Atlas reports them (docs/leads.md "What Atlas reports"): a
distributor with successful downloads only and a storage bucket with failed uploads only; and
some uploads find no storage operator (the network-wide cell `_all`).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from aiohttp import ClientSession, web

from relay.config import Settings
from relay.core.clock import wall_clock_ms
from relay.ingest.http import create_app, runner_options
from relay.serve import OperatorRelay
from relay.sinks.store import EmbeddedStore

__all__ = ["generate", "main"]

WINDOW_S = 60
MARKER = ".relay-demo"  # a directory with this file may be wiped and made again
IPS = {"EU": "81.2.69.160", "NA": "8.8.8.8", "AS": "1.0.16.1"}
# A region's users sit on this many source networks (/24s after IPS, in the same country): a
# cell needs privacy.k_networks (= k) distinct networks as well as k contributors (P5).
NETWORKS_PER_REGION = 8
OPERATORS = {  # origin -> the regions its users are in; the last one is not registered
    "demo.relay/eu-1": ("EU", "AS"),
    "demo.relay/us-1": ("NA",),
    "demo.relay/unlisted": ("EU",),
}
REGISTERED = ("demo.relay/eu-1", "demo.relay/us-1")
USERS_PER_REGION = 40


@dataclass(frozen=True)
class Behaviour:
    """How a node answers, given how many minutes before now."""

    failure: Callable[[float], float]  # share of requests that fail
    ttfb_ms: Callable[[float], float]  # median time to first byte
    error: str = "timeout"
    #: As Atlas reports a node: only its successful downloads, or only its failed uploads;
    #: None for a client that reports both.
    atlas: Literal["downloads", "uploads"] | None = None


NODES: dict[tuple[str, str], Behaviour] = {
    ("distributor", "dist-1"): Behaviour(lambda ago: 0.01, lambda ago: 80),
    ("distributor", "dist-2"): Behaviour(
        lambda ago: 0.12 if ago < 90 else 0.02, lambda ago: 900 if ago < 90 else 120, "http_5xx"
    ),
    ("distributor", "dist-3"): Behaviour(
        lambda ago: 0.85 if 150 < ago < 180 else 0.02, lambda ago: 150, "connection"
    ),
    ("distributor", "dist-4"): Behaviour(lambda ago: 0.03, lambda ago: 2600),
    ("storage", "store-1"): Behaviour(lambda ago: 0.01, lambda ago: 200),
    ("storage", "store-2"): Behaviour(
        lambda ago: 0.9 if ago < 45 else 0.02, lambda ago: 300, "http_5xx"
    ),
    ("distributor", "cdn.atlas.example"): Behaviour(
        lambda ago: 0.05, lambda ago: 110, atlas="downloads"
    ),
    # Enough failures per minute that the cells pass k.
    ("storage", "7"): Behaviour(lambda ago: 0.4, lambda ago: 250, "connection", atlas="uploads"),
}
#: Uploads per region and minute that find no storage operator for their bag.
MISSING_OPERATORS = (5, 9)


def _events(rng: secrets.SystemRandom, ago: float, region: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for (role, node), behaviour in NODES.items():
        for _ in range(rng.randint(20, 30)):
            client = f"{region}-{rng.randrange(USERS_PER_REGION)}"
            node_ref = {"role": role, "id": node}
            failed = rng.random() < behaviour.failure(ago)
            # Atlas reports a download only when it succeeded, an upload only when it failed.
            if (behaviour.atlas == "downloads" and failed) or (
                behaviour.atlas == "uploads" and not failed
            ):
                continue
            if failed:
                outcome, ttfb = behaviour.error, None
            else:
                outcome, ttfb = "ok", behaviour.ttfb_ms(ago) * rng.lognormvariate(0, 0.5)
            upload = behaviour.atlas == "uploads" or (role == "storage" and rng.random() < 0.3)
            event: dict[str, Any] = {
                "kind": "request",
                "node": node_ref,
                "op": "upload" if upload else "download",
                "outcome": outcome,
                "client": client,
                "asset": "video",
            }
            if ttfb is not None:
                event["ttfb_ms"] = round(ttfb, 1)
                event["duration_ms"] = round(ttfb * rng.uniform(3, 12), 1)
                event["bytes"] = rng.randrange(200_000, 5_000_000)
            events.append(event)
            if ttfb is not None and ttfb > 1500 and rng.random() < 0.3:
                signal = {"kind": "signal", "node": node_ref, "signal": "playback_slow"}
                events.append({**signal, "client": client})
    network = {"role": "storage", "id": "_all"}
    for _ in range(rng.randint(*MISSING_OPERATORS)):
        client = f"{region}-{rng.randrange(USERS_PER_REGION)}"
        events.append(
            {"kind": "signal", "node": network, "signal": "missing_operators", "client": client}
        )
    return events


def _network_ip(region: str, network: int) -> str:
    """An address of the region's n-th network: the n-th /24 after IPS[region]."""
    a, b, c, d = IPS[region].split(".")
    return f"{a}.{b}.{int(c) + network}.{d}"


class _Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


async def _operator(root: Path, origin: str, start_ms: int, end_ms: int) -> Path:
    """Run one relay over [start, end) on a simulated clock; return its store."""
    settings = Settings(
        origin=origin,
        data_dir=root / origin.replace("/", "_"),
        window={"seconds": WINDOW_S, "lateness_seconds": 5},
        privacy={"k": 5},
        ingest={"trusted_proxies": ["127.0.0.0/8"], "rate_limit": {"enabled": False}},
        lead={"registry": root / "lead" / "registry.yaml"} if origin in REGISTERED else {},
    )
    clock = _Clock(start_ms + 1000)
    relay = OperatorRelay(settings, clock=clock)
    await relay.start()
    runner = web.AppRunner(create_app(relay), **runner_options(relay))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/events"
    # Not seedable, like every source of randomness in relay (a demo needs no replay).
    rng = secrets.SystemRandom()
    try:
        async with ClientSession() as http:
            # The clock never passes the real now: batches must not look signed in the future.
            while clock.ms + WINDOW_S * 1000 <= end_ms:
                ago = (end_ms - clock.ms) / 60_000
                for region in OPERATORS[origin]:
                    by_network: dict[int, list[dict[str, Any]]] = {}
                    for event in _events(rng, ago, region):
                        user = int(event["client"].rsplit("-", 1)[1])
                        by_network.setdefault(user % NETWORKS_PER_REGION, []).append(event)
                    for network, events in sorted(by_network.items()):
                        headers = {"X-Forwarded-For": _network_ip(region, network)}
                        body = {"events": events}
                        async with http.post(url, json=body, headers=headers) as resp:
                            resp.raise_for_status()
                clock.ms += WINDOW_S * 1000
                await relay.seal_due()
        await relay.shipper.ship_pending()
    finally:
        await runner.cleanup()
        await relay.stop()
    return settings.data_dir / "store.sqlite"


def _alter_one_summary(store: Path, origin: str) -> None:
    """Change a number in one summary after it was signed: verification must catch it."""
    db = sqlite3.connect(store)
    try:
        doc_id, source = db.execute(
            "SELECT doc_id, source FROM documents WHERE kind = 'summary' AND origin = ? "
            "ORDER BY seq LIMIT 1",
            (origin,),
        ).fetchone()
        changed = {**orjson.loads(source), "requests": 1_000_000}
        update = "UPDATE documents SET source = ? WHERE doc_id = ?"
        db.execute(update, (orjson.dumps(changed), doc_id))
        db.commit()
    finally:
        db.close()


async def generate(root: Path, hours: float) -> Path:
    """Make the demo under ``root``; return the lead's config file."""
    end_ms = wall_clock_ms()
    start_ms = (end_ms - int(hours * 3600_000)) // (WINDOW_S * 1000) * WINDOW_S * 1000
    (root / "lead").mkdir(parents=True)
    lead_store = EmbeddedStore(root / "lead" / "store.sqlite")
    try:
        for origin in OPERATORS:
            store = await _operator(root, origin, start_ms, end_ms)
            source = EmbeddedStore(store, readonly=True)
            try:
                lead_store.write(list(source.documents()))
            finally:
                source.close()
    finally:
        lead_store.close()
    _alter_one_summary(root / "lead" / "store.sqlite", "demo.relay/us-1")
    config = root / "lead.yaml"
    config.write_text(
        yaml.safe_dump({"data_dir": str((root / "lead").resolve()), "log": {"level": "warning"}}),
        encoding="utf-8",
    )
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay.lead.demo", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("relay-demo"), help="default: relay-demo")
    parser.add_argument("--hours", type=float, default=6, help="history to make (default: 6)")
    args = parser.parse_args(argv)
    root: Path = args.dir
    if root.exists():
        if not (root / MARKER).exists():
            print(f"{root} exists and is not a demo directory: use another --dir", file=sys.stderr)
            return 2
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).touch()
    started = time.perf_counter()
    config = asyncio.run(generate(root, args.hours))
    print(
        f"made {args.hours:g} hours of traffic from {len(OPERATORS)} operators in "
        f"{time.perf_counter() - started:.0f} s; now: relay lead --config {config}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
