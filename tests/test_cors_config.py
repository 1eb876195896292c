"""CORS for browser apps, the client config endpoint (DESIGN §3.3), its live reload on SIGHUP,
and configuration errors at start (DESIGN §2: exit 2, the message names the key).

The SIGHUP and configuration tests run `relay serve` as a real process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from multidict import CIMultiDictProxy

from tests.conftest import RunningRelay, request_event

NATIVE = "/v1/events"
ATLAS = "/v1/atlas/events"
APP_ORIGIN = "https://app.example"
ATLAS_ORIGIN = "https://atlas.example"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


async def call(
    running: RunningRelay,
    method: str,
    path: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    async with running.http.request(
        method, running.url(path), data=data, headers=headers or {}
    ) as resp:
        return Answer(resp.status, resp.headers, await resp.read())


def preflight_headers(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "content-type, content-encoding",
    }


def listed(value: str | None) -> set[str]:
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


def cors_headers(answer: Answer) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k.lower().startswith("access-control-")}


def is_problem(answer: Answer) -> bool:
    return answer.headers.get("Content-Type", "").startswith("application/problem+json")


EVENTS = orjson.dumps({"events": [request_event()]})
JSON = {"Content-Type": "application/json"}


# -- CORS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [NATIVE, ATLAS])
async def test_preflight_is_204_with_allow_headers(relay_server: RunningRelay, path: str) -> None:
    answer = await call(relay_server, "OPTIONS", path, headers=preflight_headers(APP_ORIGIN))
    assert answer.status == 204
    assert answer.body == b""
    assert answer.headers["Access-Control-Allow-Origin"] in ("*", APP_ORIGIN)
    assert "post" in listed(answer.headers.get("Access-Control-Allow-Methods"))
    allowed_headers = listed(answer.headers.get("Access-Control-Allow-Headers"))
    assert {"content-type", "content-encoding"} <= allowed_headers
    max_age = answer.headers.get("Access-Control-Max-Age", "")
    assert max_age.isdigit() and int(max_age) > 0
    assert relay_server.relay.wal.size_bytes == 0  # a preflight is not an ingest


async def test_post_with_origin_gets_allow_origin(relay_server: RunningRelay) -> None:
    answer = await call(
        relay_server, "POST", NATIVE, data=EVENTS, headers={**JSON, "Origin": APP_ORIGIN}
    )
    assert answer.status == 202
    assert answer.headers["Access-Control-Allow-Origin"] in ("*", APP_ORIGIN)
    # Browsers let scripts read Retry-After (backoff) and ETag (config polling) only if exposed.
    assert {"retry-after", "etag"} <= listed(answer.headers.get("Access-Control-Expose-Headers"))


@pytest.mark.parametrize(
    ("method", "path", "data", "content_type", "status"),
    [
        ("POST", NATIVE, b"{not json", "application/json", 400),
        ("POST", NATIVE, b"[]", "application/json", 400),
        ("POST", ATLAS, EVENTS, "application/xml", 415),
        ("POST", "/v1/nope", EVENTS, "application/json", 404),
        ("GET", NATIVE, None, None, 405),
    ],
)
async def test_error_answers_carry_cors_headers(
    relay_server: RunningRelay,
    method: str,
    path: str,
    data: bytes | None,
    content_type: str | None,
    status: int,
) -> None:
    headers = {"Origin": APP_ORIGIN}
    if content_type:
        headers["Content-Type"] = content_type
    answer = await call(relay_server, method, path, data=data, headers=headers)
    assert answer.status == status
    assert is_problem(answer)
    assert answer.headers["Access-Control-Allow-Origin"] in ("*", APP_ORIGIN)


async def test_503_carries_cors_and_exposes_retry_after(relay_server: RunningRelay) -> None:
    relay_server.relay.shutting_down = True
    try:
        answer = await call(
            relay_server, "POST", NATIVE, data=EVENTS, headers={**JSON, "Origin": APP_ORIGIN}
        )
    finally:
        relay_server.relay.shutting_down = False
    assert answer.status == 503
    assert is_problem(answer)
    assert answer.headers["Access-Control-Allow-Origin"] in ("*", APP_ORIGIN)
    assert "Retry-After" in answer.headers
    assert "retry-after" in listed(answer.headers.get("Access-Control-Expose-Headers"))


async def test_allow_list_admits_only_listed_origins(start_relay: Callable[..., Any]) -> None:
    running: RunningRelay = await start_relay(ingest={"cors": {"allow_origins": [ATLAS_ORIGIN]}})

    answer = await call(running, "OPTIONS", NATIVE, headers=preflight_headers(ATLAS_ORIGIN))
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == ATLAS_ORIGIN
    assert "origin" in listed(answer.headers.get("Vary"))
    answer = await call(
        running, "POST", ATLAS, data=EVENTS, headers={**JSON, "Origin": ATLAS_ORIGIN}
    )
    assert answer.headers["Access-Control-Allow-Origin"] == ATLAS_ORIGIN
    assert "origin" in listed(answer.headers.get("Vary"))  # caches keep per-origin answers apart

    for origin in (APP_ORIGIN, "https://atlas.example.evil", "null"):
        answer = await call(running, "OPTIONS", NATIVE, headers=preflight_headers(origin))
        assert answer.status != 204
        assert cors_headers(answer) == {}
        answer = await call(
            running, "POST", NATIVE, data=EVENTS, headers={**JSON, "Origin": origin}
        )
        assert answer.status == 202  # not a browser's problem to enforce server-side
        assert cors_headers(answer) == {}
        answer = await call(running, "POST", NATIVE, data=b"{", headers={**JSON, "Origin": origin})
        assert answer.status == 400
        assert cors_headers(answer) == {}
    answer = await call(running, "POST", NATIVE, data=EVENTS, headers=JSON)  # no Origin at all
    assert cors_headers(answer) == {}


# -- GET /v1/config --------------------------------------------------------------------------------


async def test_config_has_etag_and_cache_control(relay_server: RunningRelay) -> None:
    answer = await call(relay_server, "GET", "/v1/config")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    etag = answer.headers["ETag"]
    assert len(etag) > 2 and etag.startswith('"') and etag.endswith('"')
    directives = listed(answer.headers.get("Cache-Control"))
    max_age = [d for d in directives if d.startswith("max-age=")]
    assert max_age == ["max-age=300"]  # client.max_age_seconds default
    doc = orjson.loads(answer.body)
    assert doc["schema_version"] == 1
    assert set(doc["enabled_kinds"]) == {"request", "signal"}
    assert doc["sampling"] == {"request": 1.0, "signal": 1.0}
    assert doc["flush_interval_seconds"] > 0
    assert doc["max_batch_size"] > 0
    # Same document, same ETag.
    again = await call(relay_server, "GET", "/v1/config")
    assert again.headers["ETag"] == etag
    assert again.body == answer.body


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", "W/{etag}", '"something-else", {etag}', "*"],
)
async def test_config_if_none_match_is_304(relay_server: RunningRelay, if_none_match: str) -> None:
    first = await call(relay_server, "GET", "/v1/config")
    etag = first.headers["ETag"]
    answer = await call(
        relay_server,
        "GET",
        "/v1/config",
        headers={"If-None-Match": if_none_match.format(etag=etag)},
    )
    assert answer.status == 304
    assert answer.body == b""
    assert answer.headers["ETag"] == etag
    assert "max-age=300" in listed(answer.headers.get("Cache-Control"))


@pytest.mark.parametrize("if_none_match", ['"0000"', 'W/"0000"', '""'])
async def test_config_other_etag_is_200(relay_server: RunningRelay, if_none_match: str) -> None:
    answer = await call(relay_server, "GET", "/v1/config", headers={"If-None-Match": if_none_match})
    assert answer.status == 200
    assert orjson.loads(answer.body)["schema_version"] == 1


async def test_config_reflects_settings(start_relay: Callable[..., Any]) -> None:
    running: RunningRelay = await start_relay(
        client={"sampling": {"request": 0.25, "signal": 1.0}, "max_age_seconds": 60}
    )
    answer = await call(running, "GET", "/v1/config", headers={"Origin": APP_ORIGIN})
    assert orjson.loads(answer.body)["sampling"] == {"request": 0.25, "signal": 1.0}
    assert "max-age=60" in listed(answer.headers.get("Cache-Control"))
    assert answer.headers["Access-Control-Allow-Origin"] in ("*", APP_ORIGIN)


# -- SIGHUP reload and shutdown of a real `relay serve` --------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(extra)
    return env


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    base: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Path], ServeProcess]]:
    """Start `relay serve --config FILE`; killed at teardown if still running."""
    started: list[ServeProcess] = []

    def start(config_path: Path) -> ServeProcess:
        port = yaml.safe_load(config_path.read_text())["listen"]["port"]
        log_path = tmp_path / f"serve-{len(started)}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "relay", "serve", "--config", str(config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=clean_env(),
            )
        running = ServeProcess(process, f"http://127.0.0.1:{port}", log_path)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


async def wait_until(
    check: Callable[[], Any], what: str, process: ServeProcess, timeout: float = 15.0
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await check()
        except aiohttp.ClientConnectionError:
            result = None
        if result:
            return result
        assert process.process.poll() is None, f"relay serve exited:\n{process.log()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{process.log()}"
        await asyncio.sleep(0.1)


def write_config(path: Path, config: dict[str, Any], request_rate: Any) -> None:
    path.write_text(
        yaml.safe_dump({**config, "client": {"sampling": {"request": request_rate, "signal": 1.0}}})
    )


async def test_sighup_reloads_client_config_and_sigterm_exits_0(
    tmp_path: Path, serve: Callable[[Path], ServeProcess]
) -> None:
    config = {
        "origin": "test.relay/sighup",
        "data_dir": str(tmp_path / "data"),
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "metrics": {"listen": {"port": 0}},
        "window": {"seconds": 60, "lateness_seconds": 5},
        "shutdown_timeout": 5,
    }
    config_path = tmp_path / "relay.yaml"
    write_config(config_path, config, 1.0)
    relay = serve(config_path)

    async with aiohttp.ClientSession() as http:

        async def get_config() -> tuple[str, dict[str, Any]] | None:
            async with http.get(relay.base + "/v1/config") as resp:
                if resp.status != 200:
                    return None
                return resp.headers["ETag"], orjson.loads(await resp.read())

        async def post_events() -> int:
            async with http.post(relay.base + NATIVE, data=EVENTS, headers=JSON) as resp:
                return resp.status

        etag, doc = await wait_until(get_config, "relay serve to answer", relay)
        assert doc["sampling"]["request"] == 1.0
        assert await post_events() == 202

        # An invalid edit is refused and the running config stays.
        write_config(config_path, config, "lots")
        relay.process.send_signal(signal.SIGHUP)

        async def refused() -> bool:
            return "not reloaded" in relay.log()

        await wait_until(refused, "the invalid reload to be refused", relay)
        assert "client.sampling.request" in relay.log()  # the message names the key
        assert await get_config() == (etag, doc)

        write_config(config_path, config, 0.5)
        relay.process.send_signal(signal.SIGHUP)

        async def reloaded() -> tuple[str, dict[str, Any]] | None:
            current = await get_config()
            return current if current is not None and current[0] != etag else None

        new_etag, new_doc = await wait_until(reloaded, "the ETag to change", relay)
        assert new_doc["sampling"]["request"] == 0.5
        assert new_doc["sampling"]["signal"] == 1.0
        async with http.get(relay.base + "/v1/config", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 200  # the old ETag no longer matches
        async with http.get(relay.base + "/v1/config", headers={"If-None-Match": new_etag}) as resp:
            assert resp.status == 304
        assert await post_events() == 202  # still ingesting after the reload

    relay.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = await asyncio.to_thread(relay.process.wait, 15)
    assert code == 0, relay.log()
    assert time.monotonic() - started < 15


# -- invalid configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "yaml_config", "key"),
    [
        ({"RELAY_WINDOW__SECONDS": "abc"}, {}, "window.seconds"),
        ({"RELAY_PRIVACY__K": "1"}, {}, "privacy.k"),
        ({}, {"privacy": {"geo": "city"}}, "privacy.geo"),
        ({}, {"client": {"sampling": {"request": "lots"}}}, "client.sampling.request"),
        ({}, {"client": {"sampling": {"request": 1.5}}}, "client.sampling.request"),
        ({}, {"windw": {"seconds": 60}}, "windw"),
        ({"RELAY_LISTEN__PORT": "99999"}, {"listen": {"port": 8787}}, "listen.port"),
    ],
)
def test_invalid_config_exits_2_naming_the_key(
    tmp_path: Path, env: dict[str, str], yaml_config: dict[str, Any], key: str
) -> None:
    data_dir = tmp_path / "data"
    config_path = tmp_path / "relay.yaml"
    config_path.write_text(yaml.safe_dump({"data_dir": str(data_dir), **yaml_config}))
    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(**env),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert key in result.stderr
    assert "Traceback" not in result.stderr
    assert not data_dir.exists()  # refused before touching anything
