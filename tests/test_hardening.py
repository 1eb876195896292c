"""Issue 12 (hardening): each finding of the attacker's test, reproduced against a running relay.

Findings 2 (metrics on the public port), 3 (re-spelled session tokens), 5 (CPU on the slow decode
path), 7 (5xx on bad input) and 8 (file modes, YAML echo, gzip trailing bytes). Each test failed
before its fix.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.attest.keys import OperatorKey
from relay.cli import main
from relay.config import Settings
from relay.ingest.auth import issue_session_token
from relay.lead.api import create_lead_app
from tests.conftest import RunningRelay, request_event, wait_ready
from tests.test_lead_data import build_store, lead_service

StartRelay = Callable[..., Any]
NATIVE = "/v1/events"


async def raw_exchange(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    """Send `request` as bytes (a client library would refuse to) and read the answer."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def _post_with_authorization(authorization: bytes, body: bytes) -> bytes:
    return (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nAuthorization: " + authorization + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


# -- finding 3: session tokens have one spelling, one bucket, and the address's limit too -------


def _respellings(token: str) -> list[str]:
    """The same token, spelled the ways a lenient base64 decoder accepted."""
    prefix, payload, signature = token.split(".")
    last = signature[-1]
    # 64 signature bytes are 86 characters; the last carries 2 bits, the 4 low bits unused.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    low_bit_flipped = alphabet[alphabet.index(last) ^ 0b0001]
    standard = base64.b64encode(base64.urlsafe_b64decode(signature + "==")).decode()
    return [
        f"{prefix}.{payload}.{signature[:10]}!{signature[10:]}",  # outside the alphabet
        f"{prefix}.{payload}.{signature[:-1]}{low_bit_flipped}",
        f"{prefix}.{payload}.{signature}==",
        f"{prefix}.{payload}=.{signature}",
        f"{prefix}.{payload}.{standard}",  # the other alphabet, padded
    ]


async def test_a_session_token_has_one_spelling_and_one_bucket(start_relay: StartRelay) -> None:
    gateway = OperatorKey.generate("orion.example")
    running: RunningRelay = await start_relay(
        ingest={
            "auth": {"session_issuers": [gateway.verifier.encode()]},
            "rate_limit": {"token_requests_per_second": 0.01, "token_request_burst": 2},
        }
    )
    # A signature with a `-` or `_`, so that its standard-alphabet spelling differs from the
    # padded one (one in ~15 signatures has neither).
    ttl = 600
    token = issue_session_token(gateway, now_s=running.clock() // 1000, ttl_s=ttl)
    while not set("-_") & set(token.rsplit(".", 1)[1]):
        ttl += 1
        token = issue_session_token(gateway, now_s=running.clock() // 1000, ttl_s=ttl)
    body = {"events": [request_event()]}
    spellings = [s for s in _respellings(token) if s != token]
    assert len(set(spellings)) == 5
    for spelling in spellings:
        headers = {"Authorization": f"Bearer {spelling}"}
        assert (await running.post(NATIVE, body, headers=headers))[0] == 401, spelling
    statuses = [
        (await running.post(NATIVE, body, headers={"Authorization": f"Bearer {token}"}))[0]
        for _ in range(3)
    ]
    assert statuses == [202, 202, 429]


async def test_a_session_token_does_not_lift_the_address_limit(start_relay: StartRelay) -> None:
    gateway = OperatorKey.generate("orion.example")
    running: RunningRelay = await start_relay(
        ingest={
            "auth": {
                "session_issuers": [gateway.verifier.encode()],
                "bearer_tokens": {"backend": "static-token-value"},
            },
            "rate_limit": {"ip_requests_per_second": 0.01, "ip_request_burst": 2},
        }
    )
    body = {"events": [request_event()]}
    assert (await running.post(NATIVE, body))[0] == 202
    assert (await running.post(NATIVE, body))[0] == 202
    token = issue_session_token(gateway, now_s=running.clock() // 1000, ttl_s=600)
    session = {"Authorization": f"Bearer {token}"}
    assert (await running.post(NATIVE, body, headers=session))[0] == 429
    # A server-side app's static token has buckets of its own (README "Rate limits").
    static = {"Authorization": "Bearer static-token-value"}
    assert (await running.post(NATIVE, body, headers=static))[0] == 202


async def test_every_refused_token_gets_the_same_answer(start_relay: StartRelay) -> None:
    gateway = OperatorKey.generate("orion.example")
    stranger = OperatorKey.generate("other.example")
    impostor = OperatorKey.generate("orion.example")
    running: RunningRelay = await start_relay(
        ingest={"auth": {"required": True, "session_issuers": [gateway.verifier.encode()]}}
    )
    now_s = running.clock() // 1000
    refused = [
        None,
        "Bearer nope",
        f"Bearer {issue_session_token(stranger, now_s=now_s, ttl_s=600)}",  # unknown issuer
        f"Bearer {issue_session_token(impostor, now_s=now_s, ttl_s=600)}",  # known, bad signature
        f"Bearer {issue_session_token(gateway, now_s=now_s - 7200, ttl_s=600)}",  # expired
        "Bearer rst1.e30.AAAA",
    ]
    answers = set()
    for authorization in refused:
        headers = {"Authorization": authorization} if authorization else {}
        status, problem = await running.post(NATIVE, {"events": []}, headers=headers)
        assert status == 401
        answers.add(orjson.dumps(problem))
    assert len(answers) == 1, answers


# -- finding 7: no 5xx for a credential that is not UTF-8 ------------------------------------------


async def test_non_utf8_bearer_token_is_401_on_ingest(start_relay: StartRelay) -> None:
    running: RunningRelay = await start_relay(
        ingest={"auth": {"bearer_tokens": {"backend": "static-token-value"}}}
    )
    for authorization in (b"Bearer \xff\xfe", b"Bearer rst1.\xff.\xfe"):
        status, body = await raw_exchange(
            running.server.host,
            running.server.port,
            _post_with_authorization(authorization, b'{"events": []}'),
        )
        assert status == 401, body
        assert orjson.loads(body)["type"] == "urn:relay:problem:unauthorized"


async def test_non_utf8_bearer_token_is_401_on_the_lead(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = await lead_service(await build_store(tmp_path))
    server = TestServer(create_lead_app(service, {"dashboard": "s3cret"}))
    await server.start_server()
    try:
        request = b"GET /v1/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        status, body = await raw_exchange(
            server.host, server.port, request + b"Authorization: Bearer \xff\xfe\r\n\r\n"
        )
    finally:
        await server.close()
        await service.source.close()
    assert status == 401, body
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


# -- finding 7: bodies that answered 500 ----------------------------------------------------------


@pytest.mark.parametrize("path", [NATIVE, "/v1/atlas/events"])
@pytest.mark.parametrize(
    "body",
    [
        b'{"events":[' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"]}",  # RecursionError
        b'{"events":[{"type":"x\xff\xfe"}]}',  # UnicodeDecodeError from msgspec
        b'{"events":[{"kind":"request","type":"\xed\xa0\x80"}]}',  # an encoded surrogate
    ],
    ids=["50000-nested-objects", "invalid-utf8", "encoded-surrogate"],
)
async def test_bodies_that_were_500s_are_400s(
    relay_server: RunningRelay, path: str, body: bytes
) -> None:
    async with relay_server.http.post(
        relay_server.url(path), data=body, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/problem+json"
        assert (await resp.json(content_type=None))["type"] == "urn:relay:problem:invalid-json"


# -- finding 8: trailing bytes after a gzip stream -------------------------------------------------


async def test_trailing_bytes_after_gzip_are_a_400(relay_server: RunningRelay) -> None:
    body = gzip.compress(orjson.dumps({"events": [request_event()]}))
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    for trailer in (b"junk", b"\x00" * 8, gzip.compress(b"{}")):
        async with relay_server.http.post(
            relay_server.url(NATIVE), data=body + trailer, headers=headers
        ) as resp:
            assert resp.status == 400
            assert (await resp.json(content_type=None))["type"] == "urn:relay:problem:bad-gzip"


# -- finding 2: exact counts only on the operator listener ----------------------------------------


async def test_metrics_and_readiness_detail_are_not_on_the_public_listener(
    relay_server: RunningRelay,
) -> None:
    origin = {"Origin": "https://app.example"}
    assert (await relay_server.post(NATIVE, {"events": [request_event()]}))[0] == 202
    async with relay_server.http.get(relay_server.url("/metrics"), headers=origin) as resp:
        assert resp.status == 404
        assert b"relay_" not in await resp.read()
    async with relay_server.http.get(relay_server.url("/readyz"), headers=origin) as resp:
        assert resp.status == 200
        assert await resp.json() == {"ready": True}
    # The operator listener has them, and answers no browser (no CORS).
    async with relay_server.http.get(relay_server.operator_url("/metrics"), headers=origin) as resp:
        assert resp.status == 200
        assert "relay_open_windows_bytes" in await resp.text()
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with relay_server.http.get(relay_server.operator_url("/readyz"), headers=origin) as resp:
        assert (await resp.json())["checks"]["wal_writable"] is True
        assert "Access-Control-Allow-Origin" not in resp.headers
    # And the operator listener has nothing else.
    async with relay_server.http.post(relay_server.operator_url(NATIVE), json={}) as resp:
        assert resp.status == 404


def test_the_operator_listener_defaults_to_loopback_9787() -> None:
    listen = Settings().metrics.listen
    assert (listen.host, listen.port) == ("127.0.0.1", 9787)


# -- finding 8: file modes and a YAML error that echoes nothing ------------------------------------


def test_a_yaml_syntax_error_names_the_place_not_the_content(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text('origin: a.example/b\nsink:\n  api_key: "s3cret-api-key\n  url: x\n')
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and "api_key" not in err
    assert str(config) in err and "line 5, column 1" in err
    config.write_text("origin: !vault s3cret-api-key\n")
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and "vault" not in err
    assert "line 1, column 9" in err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_relay_serve_keeps_its_files_to_the_operator(tmp_path: Path) -> None:
    """Under umask 022, `relay serve` still makes data_dir 0700 and every file in it 0600."""
    data_dir = tmp_path / "data"
    port, metrics_port = _free_port(), _free_port()
    config = tmp_path / "relay.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "origin": "test.relay/modes",
                "data_dir": str(data_dir),
                "listen": {"port": port},
                "metrics": {"listen": {"port": metrics_port}},
                "window": {"seconds": 1, "lateness_seconds": 0},
                "privacy": {"k": 2},
                "outbox": {"ship_interval_seconds": 0.05},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.umask(0o022),
    )
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, f"http://127.0.0.1:{metrics_port}/readyz", process)
            events = {"events": [request_event(client=f"c{i}") for i in range(3)]}
            async with http.post(f"http://127.0.0.1:{port}{NATIVE}", json=events) as resp:
                assert resp.status == 202
            wal = data_dir / "wal"
            assert any(p.name.startswith("salt-") for p in wal.iterdir())
            deadline = time.monotonic() + 20
            while not (data_dir / "store.sqlite").exists():  # sealed and shipped
                assert time.monotonic() < deadline, "nothing was shipped"
                await asyncio.sleep(0.1)
            modes = {
                str(p.relative_to(data_dir)): p.stat().st_mode & 0o777 for p in data_dir.rglob("*")
            }
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert {"operator.key", "registry.yaml", "outbox.sqlite", "store.sqlite"} <= set(modes)
    assert any(name.startswith("wal/segment-") for name in modes), modes
    loose = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if (data_dir / name).is_dir() else 0o600)
    }
    assert not loose, loose


# -- done-when: a fuzz of raw bodies finds no 5xx --------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def _deep(draw: st.DrawFn) -> bytes:
    """Nesting from harmless to far past any parser's limit, inside an event or as the events."""
    depth = draw(st.sampled_from([10, 200, 1_100, 5_000, 60_000]))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    inner = opener * depth + b"1" + closer * depth
    wrapper = draw(
        st.sampled_from([b'{"events":[%s]}', b'{"events":[{"type":"x","junk":%s}]}', b"%s"])
    )
    return wrapper % inner


@st.composite
def _bad_utf8(draw: st.DrawFn) -> bytes:
    """A valid-looking body with bytes that are not UTF-8 spliced into a string."""
    junk = draw(
        st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])
    )
    field = draw(st.sampled_from([b"type", b"client", b"node", b"unknown"]))
    return b'{"events":[{"kind":"request","type":"x","' + field + b'":"a' + junk + b'b"}]}'


_special = st.sampled_from(
    [
        b'{"events":[{"type":NaN}]}',
        b'{"events":[{"kind":"request","ttfb_ms":Infinity}]}',
        b'{"events":[{"type":"\\ud800"}]}',
        b'{"events":[{"type":"x","error":"\\udc00\\ud800"}]}',
        b'{"events":[1e400]}',
        b'{"events":[], "events":[{"type":"x"}]}',
        b"\xef\xbb\xbf" + b'{"events":[]}',
    ]
)
_raw_bodies = st.one_of(
    st.binary(max_size=300),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"events": st.lists(_json_values, max_size=5)}).map(
        lambda v: json.dumps(v).encode()
    ),
    _deep(),
    _bad_utf8(),
    _special,
    st.builds(lambda: b'{"events":[' + b",".join([b"1"] * 50_000) + b"]}"),  # 413 unbuilt
)


@pytest.fixture
async def unlimited_relay(start_relay: StartRelay) -> RunningRelay:
    """A relay without rate limits: the examples come fast, from one address."""
    running: RunningRelay = await start_relay(ingest={"rate_limit": {"enabled": False}})
    return running


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=_raw_bodies,
    path=st.sampled_from([NATIVE, "/v1/atlas/events"]),
    encoding=st.sampled_from(["identity", "gzip", "gzip+junk", "gzip-claimed"]),
    trailer=st.binary(min_size=1, max_size=16),
)
async def test_fuzzed_raw_bodies_never_get_a_5xx(
    unlimited_relay: RunningRelay, raw: bytes, path: str, encoding: str, trailer: bytes
) -> None:
    relay_server = unlimited_relay
    headers = {"Content-Type": "application/json"}
    data = raw
    if encoding != "identity":
        headers["Content-Encoding"] = "gzip"
    if encoding.startswith("gzip") and encoding != "gzip-claimed":
        data = gzip.compress(raw) + (trailer if encoding == "gzip+junk" else b"")
    async with relay_server.http.post(relay_server.url(path), data=data, headers=headers) as resp:
        body = await resp.read()
        assert resp.status < 500, body
        if resp.status != 202:
            assert resp.status in (400, 413), body
            assert resp.content_type == "application/problem+json"
        if encoding == "gzip+junk":
            assert resp.status == 400


# -- what held up in the attacker's test: regressions kept cheap -----------------------------------


async def _exchange_all(host: str, port: int, request: bytes) -> list[int]:
    """Every status the server answers to `request` (which may hold several requests).

    A server that resets the connection instead (it refused the rest unread) answers nothing.
    """
    reader, writer = await asyncio.open_connection(host, port)
    answer = b""
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    lines = answer.split(b"\r\n")
    return [int(line.split(b" ")[1]) for line in lines if line.startswith(b"HTTP/1.")]


async def test_a_content_length_shorter_than_the_body_is_a_400(relay_server: RunningRelay) -> None:
    body = b'{"events": []}'
    request = (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5\r\n\r\n" + body
    )
    statuses = await _exchange_all(relay_server.server.host, relay_server.server.port, request)
    # The first 5 bytes are not JSON, the rest is not a request: aiohttp refuses the connection
    # once it meets the second. Nothing is a 2xx or a 5xx.
    assert statuses and statuses[0] == 400 and all(400 <= s < 500 for s in statuses), statuses


async def test_content_length_with_transfer_encoding_is_refused(relay_server: RunningRelay) -> None:
    body = b'{"events": []}'
    request = (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    )
    statuses = await _exchange_all(relay_server.server.host, relay_server.server.port, request)
    assert statuses == [400], statuses


async def test_a_header_flood_is_refused_and_others_are_served(relay_server: RunningRelay) -> None:
    flood = b"".join(b"X-F%d: %s\r\n" % (n, b"v" * 100) for n in range(20_000))
    request = b"POST /v1/events HTTP/1.1\r\nHost: x\r\n" + flood + b"\r\n"
    statuses = await _exchange_all(relay_server.server.host, relay_server.server.port, request)
    assert all(400 <= s < 500 for s in statuses), statuses  # a 4xx, or a reset
    assert (await relay_server.post(NATIVE, {"events": [request_event()]}))[0] == 202


def test_yaml_config_is_loaded_safely(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    config = tmp_path / "relay.yaml"
    config.write_text(f'origin: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert main(["serve", "--config", str(config)]) == 2
    assert not marker.exists()


@pytest.mark.parametrize("taken", ["listen", "metrics"])
def test_a_busy_port_is_exit_2_with_a_clear_message(tmp_path: Path, taken: str) -> None:
    """A port in use means the relay could not run: exit 2 and one line saying why, no traceback."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = {"listen": _free_port(), "metrics": _free_port()}
        ports[taken] = busy.getsockname()[1]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RELAY_")},
            "RELAY_DATA_DIR": str(tmp_path / "data"),
            "RELAY_LISTEN__PORT": str(ports["listen"]),
            "RELAY_METRICS__LISTEN__PORT": str(ports["metrics"]),
        }
        done = subprocess.run(
            [sys.executable, "-m", "relay", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{ports[taken]}" in done.stderr
    assert "Traceback" not in done.stderr
