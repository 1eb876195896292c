"""The running relay conforms to openapi.yaml (DESIGN §2: "the running servers must conform to it").

A real relay (OperatorRelay + the aiohttp app) runs on a real socket, in a background thread with
its own event loop, one per test so a failure in one operation cannot spill into the next.
Schemathesis (4.x: `schemathesis.openapi.from_path` + `schema.parametrize()` +
`case.call_and_validate`) generates requests from the document, positive and negative, through the
examples, coverage and fuzzing phases, and checks every answer: no 5xx, a documented status code,
the documented content type, the documented headers, a body that matches its schema, and a 2xx for
every schema-valid request. Cases that declare `Content-Encoding: gzip` are sent gzipped.

`negative_data_rejection` is deliberately not among the checks: an event that breaks the schema
inside a well-formed envelope is answered `202` with the event listed in `errors` (DESIGN §3.1),
not with a 4xx. The hand-written tests below cover what generation does not reach: gzip bombs and
broken gzip, text/plain (sendBeacon) bodies, conditional requests on /v1/config, the operator
view after the first batch, and a regression case.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relay.config import Settings
from relay.ingest.http import create_app, create_operator_app, runner_options
from relay.ingest.server import make_runner
from relay.schemagen import schema_of
from relay.serve import OperatorRelay
from tests import schemathesis_hooks  # noqa: F401  (registers the gzip hook)
from tests.conftest import FakeClock

OPENAPI = Path(__file__).resolve().parent.parent / "openapi.yaml"
# Operations whose valid range no schema can state: a tree size is valid up to the current
# checkpoint's, so a schema-valid size beyond it rightly gets the documented 400.
RANGE_BOUND = {"GET /v1/proof/consistency"}
TIMEOUT = 10.0  # seconds per request: a hang is a failure, not a stuck test run

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
]

schema = schemathesis.openapi.from_path(
    OPENAPI,
    config=schemathesis.Config.from_dict(
        {
            "generation": {
                "max-examples": 100,
                "deterministic": True,
                "no-shrink": True,
                "database": "none",
                # Anonymous requests: a made-up token is (rightly) a 401, which would hide the
                # rest of the request. Tokens are covered by the hand-written tests below.
                "with-security-parameters": False,
            },
            "phases": {"stateful": {"enabled": False}},
            # Schema-valid requests get a 2xx (a 304 on a conditional GET is fine too).
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "304"]}},
            "request-timeout": TIMEOUT,
        }
    ),
)


class ThreadedRelay:
    """An operator relay serving on 127.0.0.1:<free port> from its own thread and event loop."""

    def __init__(self, settings: Settings, clock: FakeClock | None = None) -> None:
        self.settings = settings
        self.clock = clock or FakeClock()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.relay: OperatorRelay | None = None
        self._runner: web.AppRunner | None = None
        self._operator_runner: web.AppRunner | None = None
        self.base_url = ""
        self.operator_base_url = ""  # the operator listener (metrics.listen)

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        self.relay = OperatorRelay(self.settings, clock=self.clock)
        await self.relay.start()
        # As `relay serve` runs it (relay.cli), but on a free port.
        self._runner = web.AppRunner(create_app(self.relay), **runner_options(self.relay))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self._operator_runner = make_runner(create_operator_app(self.relay), access_log=None)
        await self._operator_runner.setup()
        await web.TCPSite(self._operator_runner, "127.0.0.1", 0).start()
        self.operator_base_url = f"http://127.0.0.1:{self._operator_runner.addresses[0][1]}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._operator_runner is not None:
            await self._operator_runner.cleanup()
        if self.relay is not None:
            await self.relay.stop()

    def stop(self) -> None:
        try:
            self.run(self._stop(), timeout=15.0)
        except TimeoutError:
            # Only after a failure that already failed its test (a stuck WAL writer, say).
            warnings.warn("relay did not stop within 15 s", stacklevel=1)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self.loop.close()


def _settings(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "origin": "conformance.relay/one",
        "data_dir": data_dir,
        "window": {"seconds": 60, "lateness_seconds": 10},
        "privacy": {"k": 3},
        "outbox": {"ship_interval_seconds": 0.05},
    }
    return Settings(**{**base, **overrides})


@contextmanager
def running_relay(data_dir: Path, **overrides: Any) -> Iterator[ThreadedRelay]:
    running = ThreadedRelay(_settings(data_dir, **overrides))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def live_relay(tmp_path: Path) -> Iterator[ThreadedRelay]:
    """A relay without rate limits: generated requests come fast, from one address."""
    with running_relay(tmp_path / "data", ingest={"rate_limit": {"enabled": False}}) as running:
        yield running


# The operator relay's public operations; the lead API's (tag lead) are tested in
# test_lead_openapi.py.
@schema.include(tag="operator").parametrize()
# One relay per operation, shared by that operation's examples: intended.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_conforms_to_openapi(case: schemathesis.Case, live_relay: ThreadedRelay) -> None:
    # Gzipped bodies: tests/schemathesis_hooks.py.
    checks = CHECKS
    if case.operation.label in RANGE_BOUND:
        checks = [check for check in CHECKS if check is not positive_data_acceptance]
    case.call_and_validate(base_url=live_relay.base_url, checks=checks)


# The operator listener's operations (/metrics, the detailed /readyz).
@schema.include(tag="metrics").parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_operator_listener_conforms_to_openapi(
    case: schemathesis.Case, live_relay: ThreadedRelay
) -> None:
    case.call_and_validate(base_url=live_relay.operator_base_url, checks=CHECKS)


# -- what generation does not reach ---------------------------------------------------------------


def _event(client: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "request",
        "node": {"role": "distributor", "id": "1:0:5"},
        "outcome": "ok",
        "ttfb_ms": 80,
        "duration_ms": 900,
        "bytes": 1_000_000,
        "client": client,
        **fields,
    }


def _validate(operation: str, method: str, response: requests.Response) -> None:
    """Check a hand-made exchange against openapi.yaml with the same checks as above.

    A 503 here is provoked on purpose and documented, so it is not counted as a server error.
    """
    case = schema[operation][method].Case()
    checks = [c for c in CHECKS if response.status_code != 503 or c is not not_a_server_error]
    case.validate_response(response, checks=checks)


def test_gzip_body_is_accepted(live_relay: ThreadedRelay) -> None:
    body = json.dumps({"events": [_event(f"c{i}") for i in range(3)]}).encode()
    response = requests.post(
        live_relay.base_url + "/v1/events",
        data=gzip.compress(body),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 3, "rejected": 0, "errors": []}
    _validate("/v1/events", "POST", response)


def test_gzip_bomb_is_refused_with_413(live_relay: ThreadedRelay) -> None:
    limit = live_relay.settings.ingest.max_body_bytes
    padding = " " * (limit + 1)
    bomb = gzip.compress(b'{"events": []' + padding.encode() + b"}")
    assert len(bomb) < limit // 100
    response = requests.post(
        live_relay.base_url + "/v1/events",
        data=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("application/problem+json")
    _validate("/v1/events", "POST", response)


def test_truncated_gzip_is_a_400(live_relay: ThreadedRelay) -> None:
    compressed = gzip.compress(json.dumps({"events": [_event("c1")]}).encode())
    response = requests.post(
        live_relay.base_url + "/v1/events",
        data=compressed[: len(compressed) // 2],
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 400
    assert response.json()["type"] == "urn:relay:problem:bad-gzip"
    _validate("/v1/events", "POST", response)


def test_text_plain_body_is_accepted(live_relay: ThreadedRelay) -> None:
    # navigator.sendBeacon sends a string body as text/plain;charset=UTF-8.
    body = json.dumps({"events": [_event("beacon"), {"kind": "request"}]})
    response = requests.post(
        live_relay.base_url + "/v1/events",
        data=body.encode(),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 1)
    assert answer["errors"][0]["index"] == 1
    _validate("/v1/events", "POST", response)


def test_atlas_text_plain_body_is_accepted(live_relay: ThreadedRelay) -> None:
    example, _ = schema_of("atlas-payload.schema.json")["examples"]
    response = requests.post(
        live_relay.base_url + "/v1/atlas/events",
        data=json.dumps(example).encode(),
        headers={"Content-Type": "text/plain"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2, "rejected": 0, "errors": [], "unsupported": 1}
    _validate("/v1/atlas/events", "POST", response)


def test_unsupported_content_type_and_encoding_are_415(live_relay: ThreadedRelay) -> None:
    body = json.dumps({"events": []}).encode()
    for headers in (
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "application/json", "Content-Encoding": "br"},
    ):
        response = requests.post(
            live_relay.base_url + "/v1/events", data=body, headers=headers, timeout=TIMEOUT
        )
        assert response.status_code == 415, headers
        _validate("/v1/events", "POST", response)


def test_config_etag_and_304(live_relay: ThreadedRelay) -> None:
    url = live_relay.base_url + "/v1/config"
    first = requests.get(url, timeout=TIMEOUT)
    assert first.status_code == 200
    _validate("/v1/config", "GET", first)
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "public, max-age=300"

    again = requests.get(url, headers={"If-None-Match": etag}, timeout=TIMEOUT)
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag
    _validate("/v1/config", "GET", again)

    listed = requests.get(url, headers={"If-None-Match": f'"other", {etag}'}, timeout=TIMEOUT)
    assert listed.status_code == 304

    stale = requests.get(url, headers={"If-None-Match": '"stale"'}, timeout=TIMEOUT)
    assert stale.status_code == 200
    assert stale.json() == first.json()


def test_operator_view_before_and_after_the_first_batch(live_relay: ThreadedRelay) -> None:
    url = live_relay.base_url + "/v1/operator"
    before = requests.get(url, timeout=TIMEOUT)
    _validate("/v1/operator", "GET", before)
    assert before.json()["head"] is None
    assert before.json()["checkpoint"] is None

    events = {"events": [_event(f"c{i}") for i in range(3)]}
    posted = requests.post(live_relay.base_url + "/v1/events", json=events, timeout=TIMEOUT)
    assert posted.status_code == 202
    live_relay.clock.advance(70)
    relay = live_relay.relay
    assert relay is not None
    assert live_relay.run(relay.seal_due()) == 1

    after = requests.get(url, timeout=TIMEOUT)
    _validate("/v1/operator", "GET", after)
    view = after.json()
    assert view["head"]["seq"] == 0
    assert view["checkpoint"].startswith(f"{view['origin']}\n1\n")
    assert view["vkey"].startswith(f"{view['origin']}+{view['kid']}+")


def test_health_readiness_and_metrics(live_relay: ThreadedRelay) -> None:
    public, operator = live_relay.base_url, live_relay.operator_base_url
    for url, path in ((public, "/healthz"), (public, "/readyz"), (operator, "/readyz")):
        response = requests.get(url + path, timeout=TIMEOUT)
        assert response.status_code == 200, path
        _validate(path, "GET", response)
    metrics = requests.get(operator + "/metrics", timeout=TIMEOUT)
    assert metrics.status_code == 200
    _validate("/metrics", "GET", metrics)
    assert requests.get(public + "/readyz", timeout=TIMEOUT).json() == {"ready": True}
    ready = requests.get(operator + "/readyz", timeout=TIMEOUT).json()
    assert ready["ready"] is True and all(ready["checks"].values())


def test_valid_event_with_extreme_throughput_is_answered(live_relay: ThreadedRelay) -> None:
    """Regression: a schema-valid event whose bytes/duration rate is past the histogram range.

    `bytes` < 2^40 and `duration_ms` > 0 are both valid, but bytes·1000/duration_ms can exceed
    relay.aggregate.histogram.MAX_VALUE; the event must be answered (202) and must not stop
    ingest.
    """
    url = live_relay.base_url + "/v1/events"
    extreme = _event("c1", bytes=2**40 - 1, duration_ms=0.001)
    response = requests.post(url, json={"events": [extreme]}, timeout=TIMEOUT)
    assert response.status_code == 202
    _validate("/v1/events", "POST", response)
    later = requests.post(url, json={"events": [_event("c2")]}, timeout=TIMEOUT)
    assert later.status_code == 202


def test_tokens_and_401(tmp_path: Path) -> None:
    with running_relay(
        tmp_path / "data", ingest={"auth": {"bearer_tokens": {"app": "s3cret-token"}}}
    ) as running:
        url = running.base_url + "/v1/events"
        body = {"events": [_event("c1")]}
        for headers, status in (
            ({}, 202),  # tokens are optional here
            ({"Authorization": "Bearer s3cret-token"}, 202),
            ({"Authorization": "Bearer wrong"}, 401),
            ({"Authorization": "Basic czNjcmV0"}, 401),
            ({"Authorization": "Bearer rst1.e30.AAAA"}, 401),
        ):
            response = requests.post(url, json=body, headers=headers, timeout=TIMEOUT)
            assert response.status_code == status, headers
            _validate("/v1/events", "POST", response)
            if status == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert "s3cret" not in response.text and "czNjcmV0" not in response.text

    with running_relay(tmp_path / "required", ingest={"auth": {"required": True}}) as running:
        response = requests.post(
            running.base_url + "/v1/atlas/events", json={"events": []}, timeout=TIMEOUT
        )
        assert response.status_code == 401
        _validate("/v1/atlas/events", "POST", response)


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    limits = {"ip_requests_per_second": 0.01, "ip_request_burst": 2}
    with running_relay(tmp_path / "data", ingest={"rate_limit": limits}) as running:
        url = running.base_url + "/v1/events"
        statuses = []
        for _ in range(3):
            response = requests.post(url, json={"events": []}, timeout=TIMEOUT)
            statuses.append(response.status_code)
            _validate("/v1/events", "POST", response)
        assert statuses == [202, 202, 429]
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["type"] == "urn:relay:problem:rate-limited"


def test_not_ready_and_503_with_retry_after(live_relay: ThreadedRelay) -> None:
    relay = live_relay.relay
    assert relay is not None
    relay.wal.failed = "simulated: disk gone"  # what WriteAheadLog._fail records
    bare = requests.get(live_relay.base_url + "/readyz", timeout=TIMEOUT)
    assert bare.status_code == 503
    assert bare.json() == {"ready": False}
    _validate("/readyz", "GET", bare)
    ready = requests.get(live_relay.operator_base_url + "/readyz", timeout=TIMEOUT)
    assert ready.status_code == 503
    assert ready.json()["checks"]["wal_writable"] is False
    _validate("/readyz", "GET", ready)
    for path in ("/v1/events", "/v1/atlas/events"):
        response = requests.post(live_relay.base_url + path, json={"events": []}, timeout=TIMEOUT)
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert "disk gone" not in response.text
        _validate(path, "POST", response)
    relay.wal.failed = None
