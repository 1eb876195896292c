"""Request bodies for the benchmark: Atlas batches of 50 events, as Atlas sends them.

One Atlas user per body (the logger attaches the same `user` to every event it batches), a
realistic mix of types, and the identifiers Atlas really sends, so parsing costs what it costs in
production.
"""

from __future__ import annotations

import random
import re

import orjson

__all__ = ["atlas_bodies", "native_bodies", "with_new_user"]

_ACCOUNT = re.compile(rb'"accountId":"(\w+)"')

_TYPES = ["distributor-response-time"] * 6 + [
    "distributor-response-error",
    "distributor-response-timeout",
    "playback-is-slow",
]
_ERRORS = ["Network Error", "Request failed with status code 503", "timeout of 5000ms exceeded"]
_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


def atlas_bodies(count: int, events: int = 50, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        user = {
            "accountId": f"5G{rng.getrandbits(160):040x}",
            "memberId": str(rng.randint(1, 99_999)),
            "channelId": str(rng.randint(1, 99_999)),
        }
        batch = []
        for _ in range(events):
            kind = rng.choice(_TYPES)
            host = f"https://distributor-{rng.randint(1, 99)}.example.com/distributor/"
            asset = rng.randint(1, 10**6)
            event: dict[str, object] = {
                "type": kind,
                "distributorId": f"{rng.randint(0, 3)}:{rng.randint(0, 40)}",
                "distributorUrl": host,
                "dataObjectId": str(asset),
                "dataObjectType": "DataObjectTypeVideoMedia",
                "resolvedUrl": f"{host}api/v1/assets/{asset}",
                "userDevice": _UA,
                "user": user,
            }
            if kind == "distributor-response-time":
                event["initialResponseTime"] = rng.uniform(20, 900)
                event["fullResponseTime"] = rng.uniform(100, 9000)
                event["downloadSpeed"] = rng.uniform(0.1, 50)
            elif kind == "distributor-response-error":
                event["error"] = rng.choice(_ERRORS)
            batch.append(event)
        bodies.append(orjson.dumps({"events": batch}))
    return bodies


def native_bodies(count: int, events: int = 50, seed: int = 2) -> list[bytes]:
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        client = f"client-{rng.getrandbits(64):016x}"
        batch = [
            {
                "kind": "request",
                "node": {"role": "distributor", "id": f"{rng.randint(0, 3)}:{rng.randint(0, 40)}"},
                "outcome": rng.choice(["ok", "ok", "ok", "timeout", "http_5xx"]),
                "ttfb_ms": round(rng.uniform(20, 900), 1),
                "duration_ms": round(rng.uniform(100, 9000), 1),
                "bytes": rng.randint(10_000, 5_000_000),
                "asset": "video",
                "client": client,
            }
            for _ in range(events)
        ]
        bodies.append(orjson.dumps({"events": batch}))
    return bodies


def with_new_user(body: bytes, n: int) -> bytes:
    """The Atlas body as sent by user number `n`: its accountId ends in n (same length)."""
    match = _ACCOUNT.search(body)
    if match is None:
        return body
    account = match.group(1)
    return body.replace(account, account[:-8] + b"%08x" % (n % 2**32))
