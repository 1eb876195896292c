"""Request bodies for the benchmark: Atlas batches in the shapes the real client sends.

The shapes are those of Joystream/atlas 9a42847ca (utils/logs/asset.ts and its call sites),
reproduced for the tests in tests/atlas_client.py, which cites each builder's file and function;
tests/test_bench_smoke.py holds these bodies to those shapes key for key. The rotation mixes the
two flushes Atlas makes: performance batches (every 60 s: up to ~50 downloads on the few
distributors a page's assets resolved to, a slow playback now and then, Atlas's own
request timings) and error batches (every 5 s: a few events about failed uploads and codecs).
Every body carries a logged-in user, so the load generator can give each request a new one.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

import orjson

__all__ = ["atlas_bodies", "events_in", "native_bodies", "with_new_user"]

_ACCOUNT = re.compile(rb'"accountId":"(\w+)"')
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_ERRORS = ("Network Error", "Request failed with status code 503", "timeout of 30000ms exceeded")
#: One error batch in this many bodies; the rest are performance batches.
_ERROR_BATCH_EVERY = 5


def _account(rng: random.Random) -> str:
    digest = hashlib.sha512(rng.randbytes(16)).digest()
    return "5" + "".join(_BASE58[b % 58] for b in digest[:47])


def _download(rng: random.Random, origin: str, user: dict[str, str]) -> dict[str, Any]:
    """distributor-response-time: `{type, ...eventEntry, ...metric, user}`."""
    object_id = str(rng.randint(1, 900_000))
    url = f"{origin}/distributor/api/v1/assets/{object_id}"
    fetch_start = rng.uniform(200, 60_000)
    hidden = rng.random() < 0.05  # cross-origin without Timing-Allow-Origin
    response_start = 0.0 if hidden else fetch_start + rng.uniform(20, 900)
    response_end = max(fetch_start, response_start) + rng.uniform(5, 8000)
    size = 0 if hidden else rng.randint(8_000, 3_000_000)
    return {
        "type": "distributor-response-time",
        "dataObjectId": object_id,
        "dataObjectType": "video" if rng.random() < 0.2 else "thumbnail",
        "resolvedUrl": url,
        "distributorUrl": origin,
        "initialResponseTime": response_start - fetch_start,
        "fullResponseTime": response_end - fetch_start,
        "downloadSpeed": size / (response_end - response_start),
        "user": user,
    }


def _performance_batch(
    rng: random.Random, origins: list[str], user: dict[str, str], downloads: int
) -> list[dict[str, Any]]:
    page = rng.sample(origins, k=rng.randint(2, 4))  # a page's assets resolve to a few
    events = [_download(rng, rng.choice(page), user) for _ in range(downloads)]
    for _ in range(rng.randint(1, 3)):
        events.append(
            {
                "type": "request-response-time",
                "requestName": rng.choice(("GetBasicVideos", "GetFullVideo", "GetChannels")),
                "timeToComplete": rng.uniform(50, 900),
                "user": user,
            }
        )
    if rng.random() < 0.3:
        media_id = str(rng.randint(1, 900_000))
        events.append(
            {
                "type": "playback-is-slow",
                "videoId": str(rng.randint(1, 90_000)),
                "channelId": str(rng.randint(1, 20_000)),
                "title": "A video title",
                "category": "Education",
                "totalLength": rng.randint(30, 3600),
                "fullScreen": False,
                "quality": "1080",
                "isNft": False,
                "dataObjectId": media_id,
                "dataObjectType": "video",
                "resolvedUrl": f"{rng.choice(page)}/distributor/api/v1/assets/{media_id}",
                "user": user,
            }
        )
    return events


def _error_batch(
    rng: random.Random, origins: list[str], user: dict[str, str]
) -> list[dict[str, Any]]:
    object_id = str(rng.randint(1, 900_000))
    origin = rng.choice(origins)
    events: list[dict[str, Any]] = [
        {
            "type": "playback-wrong-codec",
            "dataObjectId": object_id,
            "dataObjectType": "video",
            "resolvedUrl": f"{origin}/distributor/api/v1/assets/{object_id}",
            "distributorUrl": origin,
            "assetType": "video",
            "codec": {},
            "user": user,
        }
    ]
    upload_id, message = str(rng.randint(1, 900_000)), rng.choice(_ERRORS)
    bucket = str(rng.randint(0, 40))
    for _ in range(rng.randint(1, 3)):
        events.append(
            {
                "type": "distributor-response-error",
                "dataObjectId": upload_id,
                "storageOperatorId": bucket,
                "error": message,
                "user": user,
            }
        )
        events.append({"type": "distributor-blacklisted", "distributorId": bucket, "user": user})
    events.append(
        {
            "type": "asset-upload-failed",
            "dataObjectId": upload_id,
            "dataObjectType": "video",
            "storageOperatorId": bucket,
            "storageOperatorUrl": f"https://storage-{bucket}.example/storage",
            "error": message,
            "user": user,
        }
    )
    return events


def atlas_bodies(count: int, downloads: int = 50, seed: int = 1) -> list[bytes]:
    """`count` bodies in rotation: performance batches of `downloads` downloads (plus Atlas's
    other performance events), every fifth an error batch of a few events."""
    rng = random.Random(seed)
    origins = [f"https://distributor-{n}.joystream.example" for n in range(30)]
    bodies = []
    for i in range(count):
        user = {
            "accountId": _account(rng),
            "memberId": str(rng.randint(1, 99_999)),
            "channelId": str(rng.randint(1, 99_999)),
        }
        if i % _ERROR_BATCH_EVERY == _ERROR_BATCH_EVERY - 1:
            batch = _error_batch(rng, origins, user)
        else:
            batch = _performance_batch(rng, origins, user, downloads)
        bodies.append(orjson.dumps({"events": batch}))
    return bodies


def events_in(bodies: list[bytes]) -> float:
    """Mean events per body: the load generator sends the bodies in turn."""
    return sum(len(orjson.loads(body)["events"]) for body in bodies) / len(bodies)


def native_bodies(count: int, events: int = 50, seed: int = 2) -> list[bytes]:
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        client = f"client-{rng.getrandbits(64):016x}"
        batch = [
            {
                "kind": "request",
                "node": {"role": "distributor", "id": f"distributor-{rng.randint(0, 29)}.example"},
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
