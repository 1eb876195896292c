"""The browser client (`GET /v1/client.js`) in headless Chromium (Debian's, driven by Playwright).

Everything listens on 127.0.0.1, each on its own port, so each is its own origin:

- the relay (real, with the fixtures' clock), which serves the client;
- the app's page, which loads the client from the relay cross-origin, pinned with SRI;
- two fake distributors: a healthy one (answers after ~120 ms, with Timing-Allow-Origin) and a
  bad one (hangs, or answers 503);
- the operator's reverse proxy in front of the relay, which the reporters post through. It stands
  for two users on two networks (`/1/…` and `/2/…` forward as 10.0.1.7 and 10.0.2.7), since a
  cell needs two distinct contributors and source networks before it is published, and it
  records what the browser sent (and can refuse with 503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import itertools
import re
import socket
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, web
from playwright.async_api import Browser, Page, async_playwright

from relay.core.document import Document
from relay.ingest.atlas import distributor_node
from relay.ingest.client_config import RenderedClientConfig
from tests.conftest import LiveServer, RunningRelay, stored_documents
from tests.test_atlas import DISTRIBUTOR_URLS
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, watch

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it)"
)

StartRelay = Callable[..., Awaitable[RunningRelay]]

ASSET_DELAY_S = 0.12
PNG = base64.b64decode(  # 1×1 transparent PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
DATA = bytes(range(256)) * 80  # 20 480 bytes


def _wav() -> bytes:
    """0.1 s of silence as 8 kHz mono 16-bit WAV: media every browser plays."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    return out.getvalue()


WAV = _wav()
# Distributors allow any origin to read their answers and their timings.
FAILED_503 = "console error: Failed to load resource: the server responded with a status of 503 "
FAILED_503 += "(Service Unavailable)"
REFUSED = "console error: Failed to load resource: net::ERR_CONNECTION_REFUSED"
OPEN = {"Access-Control-Allow-Origin": "*", "Timing-Allow-Origin": "*", "Cache-Control": "no-store"}


# -- the servers around the browser -----------------------------------------------------------


async def serve(app: web.Application) -> LiveServer:
    server = LiveServer(web.AppRunner(app))
    await server.start()
    return server


def distributor(release: asyncio.Event) -> web.Application:
    async def healthy_img(request: web.Request) -> web.Response:
        await asyncio.sleep(ASSET_DELAY_S)
        return web.Response(body=PNG, content_type="image/png", headers=OPEN)

    async def healthy_data(request: web.Request) -> web.Response:
        await asyncio.sleep(ASSET_DELAY_S)
        return web.Response(body=DATA, content_type="application/octet-stream", headers=OPEN)

    async def healthy_wav(request: web.Request) -> web.Response:
        await asyncio.sleep(ASSET_DELAY_S)
        return web.Response(body=WAV, content_type="audio/wav", headers=OPEN)

    async def cacheable_img(request: web.Request) -> web.Response:
        headers = {**OPEN, "Cache-Control": "public, max-age=600"}
        return web.Response(body=PNG, content_type="image/png", headers=headers)

    async def hang(request: web.Request) -> web.Response:
        # Bounded: the test releases it at teardown, and it gives up on its own after 20 s.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 20)
        return web.Response(body=PNG, content_type="image/png", headers=OPEN)

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=503, text="overloaded", headers=OPEN)

    app = web.Application()
    app.router.add_get("/img.png", healthy_img)
    app.router.add_get("/data.bin", healthy_data)
    app.router.add_get("/sound.wav", healthy_wav)
    app.router.add_get("/cached.png", cacheable_img)
    app.router.add_get("/hang.png", hang)
    app.router.add_get("/fail.png", fail)
    app.router.add_get("/fail.bin", fail)
    return app


@dataclass
class Seen:
    """One request the proxy passed on (or refused), as the browser sent it."""

    method: str
    path: str
    content_type: str
    fetch_mode: str
    if_none_match: str | None
    events: list[dict[str, Any]]
    status: int
    at: float


@dataclass
class Proxy:
    """The operator's reverse proxy: `/{n}/v1/...` -> the relay, as a client on 10.0.{n}.7."""

    upstream: str
    http: ClientSession
    refuse: int = 0  # answer this many POSTs with 503 + Retry-After: 2 before passing them on
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        forwarded = {
            name: request.headers[name]
            for name in ("Content-Type", "Origin", "If-None-Match")
            if name in request.headers
        }
        forwarded["X-Forwarded-For"] = f"10.0.{request.match_info['net']}.7"
        events = orjson.loads(body)["events"] if request.method == "POST" else []
        if request.method == "POST" and self.refuse > 0:
            self.refuse -= 1
            status, payload = 503, b""
            headers = {
                "Retry-After": "2",
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Expose-Headers": "ETag, Retry-After",  # as the relay's own 503
            }
        else:
            url = f"{self.upstream}/v1/{request.match_info['tail']}"
            async with self.http.request(
                request.method, url, data=body or None, headers=forwarded
            ) as answer:
                status, payload = answer.status, await answer.read()
                headers = {
                    name: value
                    for name, value in answer.headers.items()
                    if name.lower() in ("content-type", "etag", "cache-control", "retry-after")
                    or name.lower().startswith("access-control-")
                }
        self.seen.append(
            Seen(
                method=request.method,
                path=request.path,
                content_type=request.headers.get("Content-Type", ""),
                fetch_mode=request.headers.get("Sec-Fetch-Mode", ""),
                if_none_match=request.headers.get("If-None-Match"),
                events=events,
                status=status,
                at=time.monotonic(),
            )
        )
        return web.Response(status=status, body=payload, headers=headers)

    def posts(self) -> list[Seen]:
        return [seen for seen in self.seen if seen.method == "POST"]

    def posted_events(self) -> list[dict[str, Any]]:
        return [event for seen in self.posts() if seen.status == 202 for event in seen.events]


def page_html(relay: RunningRelay, reporter_url: str) -> str:
    """The app's page: the client from the relay, pinned with SRI (docs/integrators.md)."""
    script = relay.url("/v1/client.js")
    return f"""<!doctype html><meta charset="utf-8"><title>app</title>
<link rel="icon" href="data:,">
<link rel="modulepreload" href="{script}" integrity="{client_integrity()}" crossorigin="anonymous">
<script type="module">
  import {{ createReporter }} from "{script}";
  window.reporter = createReporter("{reporter_url}", {{ timeoutMs: 1500 }});
</script>
"""


def client_integrity() -> str:
    body = (Path(__file__).parent.parent / "relay/ingest/static/client.js").read_bytes()
    return "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()


@dataclass
class World:
    relay: RunningRelay
    proxy: Proxy
    proxy_server: LiveServer
    page_origin: LiveServer
    healthy: str  # base URLs of the two distributors
    bad: str
    dead: str  # a port nothing listens on
    browser: Browser

    def reporter_url(self, net: int) -> str:
        """The relay, as user `net`'s page reaches it: through the proxy."""
        return str(self.proxy_server.make_url(f"/{net}"))

    async def open_page(self, net: int) -> tuple[Page, list[str]]:
        """A new user (own browser context, own session) on network `net`, reporter ready."""
        context = await self.browser.new_context()
        page = await context.new_page()
        problems = watch(page)
        await page.goto(str(self.page_origin.make_url(f"/page/{net}")))
        await page.wait_for_function("() => window.reporter !== undefined", timeout=5000)
        return page, problems


@pytest.fixture
async def world(start_relay: StartRelay, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    client_config = getattr(request, "param", {})
    relay = await start_relay(
        privacy={"k": 2},
        ingest={"trusted_proxies": ["127.0.0.1/32"]},
        client={"flush_interval_seconds": 1, "max_age_seconds": 0, **client_config},
    )
    release = asyncio.Event()
    http = ClientSession()
    proxy = Proxy(upstream=relay.url("").rstrip("/"), http=http)
    proxy_app = web.Application()
    proxy_app.router.add_route("*", "/{net:[0-9]+}/v1/{tail:.+}", proxy.handle)
    proxy_server = await serve(proxy_app)

    async def page(request: web.Request) -> web.Response:
        reporter_url = str(proxy_server.make_url(f"/{request.match_info['net']}"))
        return web.Response(text=page_html(relay, reporter_url), content_type="text/html")

    page_app = web.Application()
    page_app.router.add_get("/page/{net}", page)
    servers = [proxy_server, await serve(page_app)]
    servers += [await serve(distributor(release)), await serve(distributor(release))]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield World(
                relay=relay,
                proxy=proxy,
                proxy_server=proxy_server,
                page_origin=servers[1],
                healthy=str(servers[2].make_url("")).rstrip("/"),
                bad=str(servers[3].make_url("")).rstrip("/"),
                dead=f"http://127.0.0.1:{closed_port()}",
                browser=browser,
            )
        finally:
            release.set()
            await browser.close()
            await http.close()
            for server in servers:
                await server.close()


def closed_port() -> int:
    """A loopback port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def node_of(base_url: str) -> str:
    return base_url.removeprefix("http://")  # 127.0.0.1:<port>: a non-default port stays


def only(problems: list[str], console: list[str], may_fail: set[str]) -> None:
    """The page logged exactly `console`, and any failed requests were to `may_fail` URLs.

    Chromium logs every error answer and refused connection on the console, but whether it also
    reports such a load as a failed request varies with the kind of load and from run to run.
    """
    failed = {p.removeprefix("failed: ") for p in problems if p.startswith("failed: ")}
    assert sorted(p for p in problems if not p.startswith("failed: ")) == sorted(console)
    assert failed <= may_fail, failed - may_fail


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def summaries(relay: RunningRelay) -> dict[str, dict[str, Any]]:
    """Seal the window, ship it, and return its published cells by node id."""
    assert await relay.seal_after(70) == 1
    assert await relay.relay.shipper.ship_pending()
    docs: list[Document] = stored_documents(relay.relay.settings.data_dir)
    return {d.source["node"]["id"]: d.source for d in docs if "att" in d.source}


# What each user's page does: the app's own loads, observed by the reporter.
BROWSE = """async ([healthy, bad, dead]) => {
  const image = (src, cors) => new Promise((done) => {
    const img = new Image();
    if (cors) img.crossOrigin = "anonymous";
    reporter.watch(img);
    img.onload = img.onerror = done;
    img.src = src;
  });
  await image(healthy + "/img.png");
  const data = await reporter.fetch(healthy + "/data.bin?user=42");
  await data.arrayBuffer();
  const failed = await reporter.fetch(bad + "/fail.bin");
  await image(bad + "/fail.png", true);
  const hung = new Image();
  reporter.watch(hung);
  hung.src = bad + "/hang.png";
  reporter.signal({ node: bad + "/any/path", signal: "playback_slow" });
  await image(dead + "/img.png", true);
  await image(dead + "/no-cors.png");
  const refused = await reporter.fetch(dead + "/data.bin").catch((error) => error.name);
  return [failed.status, refused];
}"""


async def test_two_users_report_outcomes_and_timings_per_node(world: World) -> None:
    pages = [await world.open_page(net) for net in (1, 2)]
    for page, _ in pages:
        browse = await page.evaluate(BROWSE, [world.healthy, world.bad, world.dead])
        assert browse == [503, "TypeError"]
    for page, _ in pages:
        # 8 requests and a signal each; the hung image counts once its 1.5 s are up.
        await page.wait_for_function("() => reporter.stats().sent === 9", timeout=10_000)
        assert await page.evaluate("() => reporter.stats()") == {
            "queued": 0, "sent": 9, "beaconed": 0, "dropped": 0, "sampled_out": 0,
        }  # fmt: skip
        # Nothing kept on the device: the session pseudonym lives in the module's memory.
        assert await page.evaluate(
            "() => [document.cookie, localStorage.length, sessionStorage.length]"
        ) == ["", 0, 0]
    for _, problems in pages:
        # The page's own loads from /fail.* and the dead port failed on purpose; nothing else
        # did, and nothing threw.
        refused = {f"{world.dead}/{name}" for name in ("img.png", "no-cors.png", "data.bin")}
        only(problems, [FAILED_503] * 2 + [REFUSED] * 3, {*refused, f"{world.bad}/fail.png"})

    # Only hosts, outcomes, coarse timings and the session pseudonym left the browser.
    posted = world.proxy.posted_events()
    assert len(posted) == 18
    assert all(set(e) <= {"kind", "node", "op", "outcome", "ttfb_ms", "duration_ms", "bytes",
                          "asset", "signal", "client"} for e in posted)  # fmt: skip
    assert not any(re.search(r"\.png|\.bin|user=|path", orjson.dumps(e).decode()) for e in posted)
    assert len({e["client"] for e in posted}) == 2

    cells = await summaries(world.relay)
    healthy, bad = cells[node_of(world.healthy)], cells[node_of(world.bad)]
    assert healthy["requests"] == 4
    assert healthy["outcomes"] == {"ok": 4}
    assert healthy["assets"] == {"image": 2, "other": 2}
    assert healthy["bytes"] == 2 * (len(PNG) + len(DATA))
    ttfb = healthy["ttfb_us"]
    assert sum(ttfb["counts"]) == 4  # Timing-Allow-Origin: every load has its ttfb
    assert min(ttfb["values"]) >= ASSET_DELAY_S * 1e6 * 0.95
    assert sum(healthy["duration_us"]["counts"]) == 4
    assert bad["requests"] == 6
    assert bad["outcomes"] == {"http_5xx": 4, "timeout": 2}
    assert bad["signals"] == {"playback_slow": 2}
    dead = cells[node_of(world.dead)]
    # Refused: the CORS image and the fetch. The no-cors image's error hides whether an answer
    # came (an error status or no connection), so it is `other`.
    assert dead["outcomes"] == {"connection": 4, "other": 2}
    assert bad["region"] == healthy["region"] == dead["region"] == "ZZ"


@pytest.mark.parametrize("world", [{"flush_interval_seconds": 3600}], indirect=True)
async def test_page_hide_flushes_with_send_beacon(world: World) -> None:
    page, problems = await world.open_page(1)
    await page.evaluate(
        """(bad) => {
          reporter.request({ node: bad + "/x", outcome: "timeout", asset: "video" });
          reporter.request({ node: { role: "storage", id: "3" }, op: "upload", outcome: "ok",
                             ttfb_ms: 80.4, duration_ms: 950, bytes: 1048576 });
        }""",
        world.bad,
    )
    await asyncio.sleep(0.3)
    assert world.proxy.posts() == []  # the interval is an hour: only a page hide sends
    await page.goto("about:blank")  # pagehide
    await eventually(lambda: len(world.proxy.posts()) == 1)
    (beacon,) = world.proxy.posts()
    assert (beacon.content_type, beacon.fetch_mode, beacon.status) == ("text/plain", "no-cors", 202)
    assert [(e["node"]["id"], e["outcome"]) for e in beacon.events] == [
        (node_of(world.bad), "timeout"),
        ("3", "ok"),
    ]
    assert problems == []


@pytest.mark.parametrize("world", [{"sampling": {"request": 0.0, "signal": 1.0}}], indirect=True)
async def test_sampling_zero_stops_a_kind_until_the_operator_reloads(world: World) -> None:
    page, problems = await world.open_page(1)
    report = """(bad) => {
      for (let i = 0; i < 3; i++) reporter.request({ node: bad, outcome: "http_5xx" });
      reporter.signal({ node: bad, signal: "playback_slow" });
    }"""
    await page.evaluate(report, world.bad)
    await page.wait_for_function("() => reporter.stats().sent === 1", timeout=5000)
    assert [e["kind"] for e in world.proxy.posted_events()] == ["signal"]
    assert (await page.evaluate("() => reporter.stats()"))["sampled_out"] == 3

    # The operator turns requests on (what SIGHUP does); the client sees it at its next poll.
    settings = world.relay.relay.settings
    world.relay.relay.client_config = RenderedClientConfig(
        settings.client.model_copy(update={"sampling": {"request": 1.0, "signal": 1.0}})
    )
    await asyncio.sleep(1.5)  # max-age 0: the next flush tick polls again
    await page.evaluate(report, world.bad)
    await page.wait_for_function("() => reporter.stats().sent === 5", timeout=5000)
    assert [e["kind"] for e in world.proxy.posted_events()][1:] == ["request"] * 3 + ["signal"]
    polls = [seen for seen in world.proxy.seen if seen.path.endswith("/v1/config")]
    # The browser's cache revalidates with the ETag; unchanged answers are 304s.
    assert any(poll.if_none_match for poll in polls)
    assert problems == []


async def test_backs_off_on_503_and_honours_retry_after(world: World) -> None:
    world.proxy.refuse = 2
    page, problems = await world.open_page(1)
    await page.evaluate("(bad) => reporter.request({ node: bad, outcome: 'ok' })", world.bad)
    await page.wait_for_function("() => reporter.stats().sent === 1", timeout=10_000)
    attempts = world.proxy.posts()
    assert [seen.status for seen in attempts] == [503, 503, 202]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    assert all(gap >= 1.9 for gap in gaps), gaps  # Retry-After: 2
    assert attempts[0].events == attempts[2].events  # the same event, sent once it was let in
    # Chromium logs each refused attempt.
    events_url = f"{world.reporter_url(1)}/v1/events"
    only(problems, [FAILED_503] * 2, {events_url})


async def test_media_loads(world: World) -> None:
    page, problems = await world.open_page(1)
    await page.evaluate(
        """async ([healthy, bad, dead]) => {
          const media = (tag, src) => new Promise((done) => {
            const element = document.createElement(tag);
            element.crossOrigin = "anonymous";
            reporter.watch(element);
            element.onloadedmetadata = element.onerror = done;
            element.src = src;
          });
          await media("audio", healthy + "/sound.wav");
          await media("video", healthy + "/img.png");  // arrives, but is no video
          await media("video", bad + "/fail.bin");
          await media("video", dead + "/film.webm");
          await reporter.flush();
        }""",
        [world.healthy, world.bad, world.dead],
    )
    await page.wait_for_function("() => reporter.stats().sent === 4", timeout=5000)
    reported = {
        (e["node"]["id"], e.get("outcome", e.get("signal")), e.get("asset")): e
        for e in world.proxy.posted_events()
    }
    healthy, bad, dead = node_of(world.healthy), node_of(world.bad), node_of(world.dead)
    assert set(reported) == {
        (healthy, "ok", "other"),  # audio
        (healthy, "playback_codec", None),  # as Atlas reports a MediaError after a 2xx
        # Chromium hides a media load's status even with CORS: a 503 and a refused connection
        # both end in MEDIA_ERR_SRC_NOT_SUPPORTED, so neither is classified further.
        (bad, "other", "video"),
        (dead, "other", "video"),
    }
    assert reported[(healthy, "ok", "other")]["ttfb_ms"] >= ASSET_DELAY_S * 1000 * 0.95
    # The two loads that failed on purpose, and nothing else.
    only(problems, [FAILED_503, REFUSED], {f"{world.bad}/fail.bin", f"{world.dead}/film.webm"})


async def test_loads_from_the_browser_cache_are_not_reported(world: World) -> None:
    page, problems = await world.open_page(1)
    loads = """async (src) => {
      // The network, then the HTTP cache (a new request mode is a new image), then the
      // memory cache: only the first says anything about the node.
      for (const cors of [false, true, true]) {
        await new Promise((done) => {
          const img = new Image();
          if (cors) img.crossOrigin = "anonymous";
          reporter.watch(img);
          img.onload = img.onerror = done;
          img.src = src;
        });
      }
    }"""
    await page.evaluate(loads, world.healthy + "/cached.png")
    await page.wait_for_function("() => reporter.stats().sent === 1", timeout=5000)
    await asyncio.sleep(1.2)  # one more flush: nothing else comes
    assert (await page.evaluate("() => reporter.stats()"))["sent"] == 1
    assert problems == []


async def test_client_names_distributors_as_the_atlas_adapter_does(world: World) -> None:
    page, problems = await world.open_page(1)
    urls = [url for url, _ in DISTRIBUTOR_URLS]
    named = await page.evaluate(
        """async ([src, urls]) => {
          const { distributorNode } = await import(src);  // the module the page already has
          return urls.map((url) => distributorNode(url));
        }""",
        [world.relay.url("/v1/client.js"), urls],
    )
    assert named == [node for _, node in DISTRIBUTOR_URLS]
    assert named == [distributor_node(url) for url in urls]
    assert problems == []


async def test_relay_serves_the_client_pinnable_with_sri(relay_server: RunningRelay) -> None:
    async with relay_server.http.get(
        relay_server.url("/v1/client.js"), headers={"Origin": "https://app.example"}
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/javascript"
        body = await resp.read()
        etag = resp.headers["ETag"]
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert resp.headers["X-Relay-Client-Version"] == "1.0.0"
    assert etag == f'"{client_integrity()}"'
    assert b'export const VERSION = "1.0.0";' in body
    # No dependency: the module imports nothing. Small: stated in the README.
    assert not re.search(rb"^\s*import\b|\bimport\(", body, re.MULTILINE)
    assert len(body) < 20_000
    async with relay_server.http.get(
        relay_server.url("/v1/client.js"), headers={"If-None-Match": etag}
    ) as resp:
        assert resp.status == 304
