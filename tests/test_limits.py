"""Backpressure, abuse limits, authentication, slow clients and WAL damage (DESIGN §3.4, §6)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.attest.keys import OperatorKey
from relay.ingest.auth import issue_session_token
from tests.conftest import RunningRelay, from_network, request_event
from tests.test_pipeline import batches, crash, shipped

StartRelay = Callable[..., Any]


def many(n: int, node: str = "d1") -> list[dict[str, Any]]:
    return [request_event(node, client=f"c{i % 7}") for i in range(n)]


async def test_ip_request_limit_answers_429_with_retry_after(start_relay: StartRelay) -> None:
    running: RunningRelay = await start_relay(
        ingest={"rate_limit": {"ip_requests_per_second": 0.5, "ip_request_burst": 3}}
    )
    statuses = [(await running.post("/v1/events", {"events": many(1)}))[0] for _ in range(4)]
    assert statuses == [202, 202, 202, 429]
    async with running.http.post(running.url("/v1/events"), json={"events": many(1)}) as resp:
        assert resp.status == 429
        assert resp.headers["Content-Type"] == "application/problem+json"
        assert int(resp.headers["Retry-After"]) >= 1
    # Refused requests were not counted anywhere.
    await running.seal_after(70)
    assert await running.relay.shipper.ship_pending()
    (batch,) = batches(shipped(running.relay))
    assert batch["stats"]["accepted"] == 3


async def test_event_limit_and_tokens_have_their_own_buckets(start_relay: StartRelay) -> None:
    running: RunningRelay = await start_relay(
        ingest={
            "max_events_per_request": 100,
            "rate_limit": {"ip_events_per_second": 1, "ip_event_burst": 150},
            "auth": {"bearer_tokens": {"backend": "s3cret-token-value"}},
        }
    )
    assert (await running.post("/v1/events", {"events": many(100)}))[0] == 202
    assert (await running.post("/v1/events", {"events": many(100)}))[0] == 429
    # The same address with a token is limited by the token's (larger) buckets instead.
    headers = {"Authorization": "Bearer s3cret-token-value"}
    assert (await running.post("/v1/events", {"events": many(100)}, headers=headers))[0] == 202


async def test_limits_can_be_lifted(start_relay: StartRelay) -> None:
    running: RunningRelay = await start_relay(
        ingest={
            "rate_limit": {"enabled": False, "ip_requests_per_second": 0.01, "ip_request_burst": 1}
        }
    )
    for _ in range(5):
        assert (await running.post("/v1/events", {"events": many(1)}))[0] == 202


async def test_auth_required_accepts_bearer_and_session_tokens(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    gateway = OperatorKey.generate("orion.example")
    stranger = OperatorKey.generate("orion.example")
    running: RunningRelay = await start_relay(
        ingest={
            "auth": {
                "required": True,
                "bearer_tokens": {"backend": "static-token-1"},
                "session_issuers": [gateway.verifier.encode()],
                "session_max_ttl_seconds": 3600,
            }
        }
    )
    now_s = running.clock() // 1000
    body = {"events": many(1)}

    async def status(authorization: str | None) -> int:
        headers = {"Authorization": authorization} if authorization else {}
        async with running.http.post(running.url("/v1/events"), json=body, headers=headers) as resp:
            if resp.status == 401:
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert resp.headers["Content-Type"] == "application/problem+json"
            return resp.status

    token = issue_session_token(gateway, now_s=now_s, ttl_s=600)
    assert await status(None) == 401
    assert await status("Bearer static-token-1") == 202
    assert await status("Bearer static-token-2") == 401
    assert await status("Basic c3RhdGlj") == 401
    assert await status(f"Bearer {token}") == 202
    expired = issue_session_token(gateway, now_s=now_s - 7200, ttl_s=600)
    assert await status(f"Bearer {expired}") == 401
    too_long = issue_session_token(gateway, now_s=now_s, ttl_s=7200)
    assert await status(f"Bearer {too_long}") == 401
    forged = issue_session_token(stranger, now_s=now_s, ttl_s=600)
    assert await status(f"Bearer {forged}") == 401
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert await status(f"Bearer {tampered}") == 401


async def test_auth_optional_still_refuses_a_bad_token(start_relay: StartRelay) -> None:
    running: RunningRelay = await start_relay(
        ingest={"auth": {"bearer_tokens": {"backend": "static-token-1"}}}
    )
    assert (await running.post("/v1/events", {"events": many(1)}))[0] == 202
    status, _ = await running.post(
        "/v1/events", {"events": many(1)}, headers={"Authorization": "Bearer nope"}
    )
    assert status == 401


async def test_without_auth_configured_the_header_is_ignored(relay_server: RunningRelay) -> None:
    status, _ = await relay_server.post(
        "/v1/events", {"events": many(1)}, headers={"Authorization": "Bearer anything"}
    )
    assert status == 202


async def test_slowloris_is_cut_off_and_others_are_served(start_relay: StartRelay) -> None:
    running: RunningRelay = await start_relay(ingest={"idle_timeout_seconds": 1})
    host, port = running.server.host, running.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    closed = False

    async def trickle() -> None:
        nonlocal closed
        for n in range(40):
            try:
                writer.write(f"X-Slow-{n}: a\r\n".encode())
                await writer.drain()
            except ConnectionError:
                closed = True
                return
            if reader.at_eof():
                closed = True
                return
            await asyncio.sleep(0.1)

    trickler = asyncio.create_task(trickle())
    # Meanwhile an ordinary client is served at once.
    t0 = time.monotonic()
    assert (await running.post("/v1/events", {"events": many(1)}))[0] == 202
    assert time.monotonic() - t0 < 1.0
    await trickler
    assert closed or await asyncio.wait_for(reader.read(), 1) == b""
    assert time.monotonic() - started < 3.5
    writer.close()


async def test_slow_body_gets_408(start_relay: StartRelay) -> None:
    running: RunningRelay = await start_relay(ingest={"body_timeout_seconds": 0.5})
    reader, writer = await asyncio.open_connection(running.server.host, running.server.port)
    writer.write(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"events": ['
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readline(), 3)
    assert head.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_wal_cap_gives_503_until_sealing_frees_space(start_relay: StartRelay) -> None:
    running: RunningRelay = await start_relay(
        wal={"max_bytes": 1024 * 1024},
        ingest={"rate_limit": {"enabled": False}},
    )
    statuses: list[int] = []
    for _ in range(40):
        status, _ = await running.post("/v1/events", {"events": many(1000)})
        statuses.append(status)
        if status == 503:
            break
    assert statuses[0] == 202 and statuses[-1] == 503
    async with running.http.get(running.operator_url("/readyz")) as resp:
        ready = await resp.json()
        assert resp.status == 503 and ready["checks"]["wal_below_high_water"] is False
    # The window seals, its segments are deleted, and ingest resumes.
    await running.seal_after(70)
    assert (await running.post("/v1/events", {"events": many(10)}))[0] == 202
    async with running.http.get(running.url("/readyz")) as resp:
        assert resp.status == 200


async def test_outbox_cap_gives_503_until_the_sink_drains(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the sink expects a directory")
    running: RunningRelay = await start_relay(
        sink={"type": "ndjson", "path": str(blocker / "docs.ndjson")},
        outbox={"max_bytes": 1024 * 1024},
        ingest={"rate_limit": {"enabled": False}},
        window={"max_cells_per_network": 300},
    )
    # 300 published cells a window make ~600 kB of documents per batch: 3 contributors from
    # 3 networks (k = k_networks = 3) on each node.
    statuses = []
    for _ in range(6):
        for c in range(3):
            events = [request_event(f"node-{n}", client=f"c{c}") for n in range(300)]
            statuses.append(
                (await running.post("/v1/events", {"events": events}, headers=from_network(c)))[0]
            )
        await running.seal_after(70 if _ == 0 else 60)
    assert not await running.relay.shipper.ship_pending()  # the sink keeps failing
    status, body = await running.post("/v1/events", {"events": many(1)})
    assert status == 503 and body["type"].endswith("outbox-full")
    # The operator fixes the disk; the outbox drains in order and ingest resumes.
    blocker.unlink()
    blocker.mkdir()
    assert await running.relay.shipper.ship_pending()
    assert (await running.post("/v1/events", {"events": many(1)}))[0] == 202
    lines = (blocker / "docs.ndjson").read_text().splitlines()
    seqs = [int(line.split('"seq":')[1].split(",")[0]) for line in lines if "|b|" in line]
    assert seqs == sorted(seqs) and seqs[0] == 0


@pytest.mark.parametrize("damage", ["torn", "garbage", "bitflip"])
async def test_damaged_wal_tail_is_detected_and_skipped(
    start_relay: StartRelay, make_settings: Callable[..., Any], damage: str
) -> None:
    first: RunningRelay = await start_relay()
    for c in ("a", "b", "c"):
        assert (await first.post("/v1/events", {"events": [request_event(client=c)]}))[0] == 202
    await crash(first)
    wal_dir = first.relay.settings.data_dir / "wal"
    (segment,) = [p for p in wal_dir.glob("segment-*.wal") if p.stat().st_size]
    data = segment.read_bytes()
    if damage == "torn":
        data += data[:20]  # a frame header and part of a payload, as a crash mid-write leaves
    elif damage == "garbage":
        data += b"\xff" * 64
    else:
        data = data[:-3] + bytes([data[-3] ^ 0x40]) + data[-2:]  # corrupts the last record
    segment.write_bytes(data)

    second: RunningRelay = await start_relay(make_settings())
    await second.seal_after(70)
    assert await second.relay.shipper.ship_pending()
    (batch,) = batches(shipped(second.relay))
    # Intact records are all counted; a corrupted one is lost, never half-counted.
    assert batch["stats"]["accepted"] == (2 if damage == "bitflip" else 3)
    # The damaged segment is kept aside until its windows are sealed, then deleted (P8).
    assert not list(wal_dir.glob("*.corrupt"))


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nCookie: session=MARKER"
        + b"m" * 9000
        + b"\r\n\r\n",
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: MARKER-12\r\n\r\n",
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nMARKERzz\r\n",
    ],
)
async def test_parser_errors_echo_nothing_and_log_no_address(
    relay_server: RunningRelay, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    reader, writer = await asyncio.open_connection(
        relay_server.server.host, relay_server.server.port
    )
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head = answer.partition(b"\r\n\r\n")[0]
    assert head.split(b" ")[1] == b"400"
    assert b"application/problem+json" in head
    assert b"MARKER" not in answer
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert "MARKER" not in logged
    assert "127.0.0.1" not in logged
