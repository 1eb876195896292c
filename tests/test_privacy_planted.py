"""P1 (and P6, P8) by planting: distinctive identifiers go into real requests, then every byte the
relay wrote or said is searched for them.

Every identifier of DESIGN §4 P1 gets a unique marker: native `client`; in Atlas bodies built as
the real client builds them (tests/atlas_client.py), `user.*`, `dataObjectId`, the path of
`resolvedUrl`, `videoId`, `title`, `channelId`, the bag id, the storage operator's URL, free text
in `error`, `message` and the metadata of non-infrastructure events; User-Agent,
X-Forwarded-For (trusted proxy, so it is the client IP), Cookie, Authorization, and the client IP
itself. The search covers every file under data_dir (WAL segments and salts while windows are open,
after sealing and after stop; SQLite files and their -wal files), logs at DEBUG, /metrics,
/v1/operator, /v1/config, every answer (202 and problem+json, headers included) and
`relay export`. Public node ids planted the same way (a native id, the host of an Atlas
distributor URL, a storage bucket id) are the positive control: they must be found in the WAL and
the published documents, so the search demonstrably sees what it searches.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from relay import cli
from relay.logs import _JsonFormatter
from relay.privacy.contributor import client_material
from relay.wal import codec
from tests import atlas_client
from tests.conftest import T0_MS, RunningRelay, stop, wait_ready

NATIVE = "/v1/events"
ATLAS = "/v1/atlas/events"
WINDOW_MS = 60_000

PLANTED_IPV4 = "203.0.113.77"
PLANTED_IPV6 = "2001:db8::7:77"

# The published summary fields (DESIGN §5.3, relay.aggregate.cells) and document fields (§2).
SUMMARY_FIELDS = {
    "window_start_ms",
    "window_end_ms",
    "node",
    "region",
    "requests",
    "outcomes",
    "ops",
    "signals",
    "assets",
    "bytes",
    "ttfb_us",
    "duration_us",
    "throughput_bps",
}
SUMMARY_DOC_FIELDS = SUMMARY_FIELDS | {"origin", "seq", "i", "att"}
FORBIDDEN_KEYS = {
    "user",
    "client",
    "ip",
    "addr",
    "address",
    "url",
    "uri",
    "accountid",
    "memberid",
    "channelid",
    "dataobjectid",
    "resolvedurl",
    "distributorurl",
    "userdevice",
    "device",
    "error",
    "message",
    "ua",
    "user_agent",
    "useragent",
    "cookie",
    "authorization",
    "contributor",
    "contributors",
    "ts",
    "timestamp",
    "min",
    "max",
    "minimum",
    "maximum",
}


def marker(what: str) -> str:
    return f"PLANTED-{what}-{uuid.uuid4().hex}"


@dataclass
class Markers:
    """One unique marker per identifier, plus the public node ids used as positive control."""

    clients: list[str] = field(default_factory=lambda: [marker("client") for _ in range(3)])
    account_ids: list[str] = field(default_factory=lambda: [marker("account") for _ in range(2)])
    member_ids: list[str] = field(default_factory=lambda: [marker("member") for _ in range(2)])
    channel_ids: list[str] = field(default_factory=lambda: [marker("channel") for _ in range(3)])
    data_object_id: str = field(default_factory=lambda: marker("dataobject"))
    resolved_url: str = field(default_factory=lambda: marker("resolved"))
    video_id: str = field(default_factory=lambda: marker("video"))
    video_title: str = field(default_factory=lambda: marker("title"))
    bag_channel: str = field(default_factory=lambda: marker("bag"))
    storage_url: str = field(default_factory=lambda: marker("storageurl").lower())
    error_text: str = field(default_factory=lambda: marker("errortext"))
    user_agent: str = field(default_factory=lambda: marker("ua"))
    forwarded: str = field(default_factory=lambda: marker("xff"))
    cookie: str = field(default_factory=lambda: marker("cookie"))
    authorization: str = field(default_factory=lambda: marker("auth"))
    unknown_value: str = field(default_factory=lambda: marker("unknownvalue"))
    bad_ts: str = field(default_factory=lambda: marker("ts"))
    native_node: str = field(default_factory=lambda: f"node-native-{uuid.uuid4().hex[:12]}")
    atlas_node: str = field(default_factory=lambda: f"node-atlas-{uuid.uuid4().hex[:12]}")
    storage_node: str = field(default_factory=lambda: f"node-storage-{uuid.uuid4().hex[:12]}")

    def secrets(self) -> dict[str, str]:
        """Every planted identifier, named."""
        named: dict[str, str] = {}
        for name, value in vars(self).items():
            if name.endswith("_node"):
                continue
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                named[f"{name}[{i}]"] = item
        return named


# A per-event timestamp and a per-event value that must not be published (P6).
PLANTED_TS_MS = T0_MS + 7_777
PLANTED_TTFB_MS = 321.987654


def base64_cores(data: bytes) -> list[bytes]:
    """The part of base64(data) that does not depend on what surrounds data, at each alignment."""
    cores = []
    for pad in range(3):
        encoded = base64.b64encode(b"\x00" * pad + data + b"\x00\x00\x00")
        start = ((pad + 2) // 3) * 4
        end = ((pad + len(data)) // 3) * 4
        cores.append(encoded[start:end])
    return cores


def needle_forms(value: str) -> list[bytes]:
    raw = value.encode()
    # Lower-cased too: a host is lower-cased on its way to becoming a node id.
    forms = [raw, raw.lower(), raw.hex().encode(), *base64_cores(raw)]
    # A plain (unkeyed) hash is reversible by hashing guesses; P2 forbids one, so no such hash
    # of the identifier may show up either (as digest, hex, or the 64-bit integer the WAL uses).
    for material in (raw, client_material(value)):
        digest = hashlib.sha256(material).digest()
        forms += [digest[:8], digest.hex()[:16].encode()]
        forms.append(str(int.from_bytes(digest[:8], "big")).encode())
    return forms


def ip_forms(ip: str) -> list[bytes]:
    address = ipaddress.ip_address(ip)
    forms = [ip.encode(), address.exploded.encode(), str(int(address)).encode()]
    forms.append(address.packed.hex().encode())
    forms.append(address.packed)
    return forms


@dataclass
class Corpus:
    """Everything the relay wrote or said, by where it came from."""

    texts: dict[str, bytes] = field(default_factory=dict)

    def add(self, label: str, data: bytes | str) -> None:
        self.texts[label] = data.encode() if isinstance(data, str) else data

    def add_tree(self, label: str, root: Path) -> int:
        count = 0
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self.add(f"{label}:{path.relative_to(root)}", path.read_bytes())
                count += 1
        return count

    def hits(self, needle: bytes) -> list[str]:
        return [label for label, data in self.texts.items() if needle in data]

    def labels(self, prefix: str) -> list[str]:
        return [label for label in self.texts if label.startswith(prefix)]


def assert_nothing_planted(corpus: Corpus, markers: Markers, ips: Iterable[str]) -> None:
    leaks: dict[str, list[str]] = {}
    for name, value in markers.secrets().items():
        for form in needle_forms(value):
            hits = corpus.hits(form)
            if hits:
                leaks[f"{name} as {form[:24]!r}"] = hits
    for ip in ips:
        for form in ip_forms(ip):
            hits = corpus.hits(form)
            if hits:
                leaks[f"ip {ip} as {form[:24]!r}"] = hits
    for ts in (str(PLANTED_TS_MS), str(PLANTED_TS_MS // 1000) + ".777"):
        hits = corpus.hits(ts.encode())
        if hits:
            leaks[f"event timestamp {ts}"] = hits
    assert not leaks, f"planted identifiers found: {leaks}"


# -- requests --------------------------------------------------------------------------------------


def planted_headers(markers: Markers, forwarded_for: str) -> dict[str, str]:
    return {
        "User-Agent": f"Mozilla/5.0 (X11; Linux x86_64) {markers.user_agent} Firefox/128.0",
        "X-Forwarded-For": forwarded_for,
        "Cookie": f"session={markers.cookie}; theme=dark",
        "Authorization": f"Bearer {markers.authorization}",
    }


def native_events(markers: Markers) -> list[dict[str, Any]]:
    node = {"role": "distributor", "id": markers.native_node}
    events: list[dict[str, Any]] = []
    for client in markers.clients:
        events += [
            {
                "kind": "request",
                "node": node,
                "outcome": "ok",
                "ttfb_ms": PLANTED_TTFB_MS,
                "duration_ms": 1500,
                "bytes": 2_000_000,
                "asset": "video",
                "client": client,
            },
            {"kind": "request", "node": node, "outcome": "timeout", "client": client},
            {"kind": "signal", "node": node, "signal": "playback_slow", "client": client},
        ]
    # No client: the contributor comes from the (planted) IP + User-Agent family.
    events.append({"kind": "request", "node": node, "outcome": "http_5xx"})
    return events


def timestamped_events(markers: Markers) -> list[dict[str, Any]]:
    node = {"role": "distributor", "id": markers.native_node}
    return [
        {"kind": "request", "node": node, "outcome": "ok", "ts": PLANTED_TS_MS, "client": c}
        for c in markers.clients
    ]


def rejected_native_events(markers: Markers) -> list[Any]:
    node = {"role": "distributor", "id": markers.native_node}
    return [
        {"kind": "request", "node": node, "outcome": "ok", "user": markers.unknown_value},
        {"kind": "request", "node": node, "outcome": "ok", markers.unknown_value: 1},
        {"kind": "request", "node": node, "outcome": "ok", "ts": markers.bad_ts},
        {"kind": "request", "node": node, "outcome": markers.unknown_value},
        {"kind": "request", "node": {"role": "distributor", "id": markers.resolved_url + "/x"}},
        markers.unknown_value,
    ]


def atlas_events(markers: Markers) -> list[dict[str, Any]]:
    """Both of Atlas's flushes for each state a user can be in, identifiers planted."""
    users: list[atlas_client.AtlasUser | None] = [
        atlas_client.AtlasUser(
            markers.account_ids[0], markers.member_ids[0], markers.channel_ids[0]
        ),
        atlas_client.AtlasUser(None, markers.member_ids[1], markers.channel_ids[1]),
        atlas_client.AtlasUser(markers.account_ids[1]),
        atlas_client.AtlasUser(channel_id=markers.channel_ids[2]),  # keyed by IP + UA family
        atlas_client.LOGGED_OUT,
        None,
    ]
    origin = f"https://{markers.atlas_node}.example"
    asset = f"{origin}/distributor/api/v1/assets/{markers.resolved_url}"
    bucket, storage = markers.storage_node, f"https://{markers.storage_url}.example/storage"
    message = f"Request failed with status code 503 ({markers.error_text})"
    events: list[dict[str, Any]] = []
    for user in users:
        events += [
            atlas_client.distributor_response_time(
                asset,
                markers.data_object_id,
                "video",
                fetch_start=10.0,
                response_start=130.0,
                response_end=910.0,
                decoded_body_size=2_000_000,
                user=user,
            ),
            atlas_client.playback_wrong_codec(
                asset, markers.data_object_id, "video", mobile=False, user=user
            ),
            atlas_client.playback_is_slow(
                asset,
                markers.video_id,
                markers.data_object_id,
                user=user,
                title=markers.video_title,
                channel_id=markers.channel_ids[0],
            ),
            *atlas_client.failed_upload(
                markers.data_object_id, "video", [(bucket, storage)], message, user=user
            ),
            atlas_client.missing_operators_for_bag(markers.bag_channel, user=user),
            *atlas_client.not_infrastructure(user, free_text=markers.error_text),
        ]
    return events


@dataclass(frozen=True)
class Answer:
    status: int
    headers: str
    body: bytes


async def post_raw(
    running: RunningRelay,
    path: str,
    data: bytes,
    headers: dict[str, str],
    content_type: str = "application/json",
) -> Answer:
    async with running.http.post(
        running.url(path), data=data, headers={**headers, "Content-Type": content_type}
    ) as resp:
        return Answer(resp.status, repr(dict(resp.headers)), await resp.read())


async def get(running: RunningRelay, path: str) -> Answer:
    """`path` from the listener that serves it: /metrics from the operator's."""
    url = running.operator_url(path) if path == "/metrics" else running.url(path)
    async with running.http.get(url) as resp:
        return Answer(resp.status, repr(dict(resp.headers)), await resp.read())


async def get_operator(running: RunningRelay, path: str) -> Answer:
    async with running.http.get(running.operator_url(path)) as resp:
        return Answer(resp.status, repr(dict(resp.headers)), await resp.read())


async def send_planted_window(
    running: RunningRelay, markers: Markers, answers: list[Answer], *, with_ts: bool
) -> None:
    """One window's worth of planted traffic: accepted, partly rejected and refused requests."""
    forwarded = [
        f"{PLANTED_IPV4}, 127.0.0.1",
        PLANTED_IPV6,
        f"{markers.forwarded}",  # not an address: used as the client "IP", must vanish too
    ]
    for hop in forwarded:
        headers = planted_headers(markers, hop)
        native = {"events": native_events(markers)}
        if with_ts:
            native["events"] += timestamped_events(markers)
        answers.append(await post_raw(running, NATIVE, orjson.dumps(native), headers))
        assert answers[-1].status == 202, answers[-1].body
        answers.append(
            await post_raw(running, ATLAS, orjson.dumps({"events": atlas_events(markers)}), headers)
        )
        assert answers[-1].status == 202, answers[-1].body
    headers = planted_headers(markers, f"{PLANTED_IPV4}, 127.0.0.1")
    partial = {"events": rejected_native_events(markers) + native_events(markers)[:1]}
    answer = await post_raw(running, NATIVE, orjson.dumps(partial), headers)
    assert answer.status == 202
    assert orjson.loads(answer.body)["rejected"] == len(rejected_native_events(markers))
    answers.append(answer)
    refused = [
        (
            NATIVE,
            b'{"events": [{"client": "' + markers.clients[0].encode() + b'"',
            "application/json",
        ),
        (NATIVE, orjson.dumps({"events": [], "user": markers.unknown_value}), "application/json"),
        (ATLAS, orjson.dumps([{"user": {"accountId": markers.account_ids[0]}}]), "text/plain"),
        (NATIVE, orjson.dumps({"events": native_events(markers)}), "application/xml"),
    ]
    for path, data, content_type in refused:
        answer = await post_raw(running, path, data, headers, content_type)
        assert answer.status in (400, 415), answer.body
        answers.append(answer)


# -- the scenario ----------------------------------------------------------------------------------


@pytest.fixture
def relay_logs(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """Every log record at DEBUG, also formatted the way `relay serve` writes JSON logs.

    aiohttp's access log is off, as `relay serve` has it (relay/cli.py, relay/logs.py): the test
    server of the fixture would otherwise log the User-Agent itself.
    """
    caplog.set_level(logging.DEBUG)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    access = logging.getLogger("aiohttp.access")
    was_disabled = access.disabled
    access.disabled = True
    try:
        yield stream
    finally:
        access.disabled = was_disabled
        root.removeHandler(handler)


def wal_windows(wal_dir: Path) -> tuple[list[int], list[int]]:
    """(every window any WAL record refers to, every window with a salt file)."""
    windows: list[int] = []
    for path in sorted(wal_dir.glob("segment-*")):
        for _, payload in codec.iter_frames(path.read_bytes()):
            record = codec.decode_payload(payload)
            windows.append(record.arrival_window_ms)
            windows += [o.window_start_ms for o in record.observations]
    salts = [int(p.name[len("salt-") : -len(".bin")]) for p in wal_dir.glob("salt-*.bin")]
    return windows, salts


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every node of a JSON value; keys as path parts."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk(item, f"{path}[{i}]")


def assert_summary_only(document: dict[str, Any]) -> None:
    """P1/P6 on a published document: allowed fields only, times only as window bounds."""
    source = document["_source"]
    is_summary = "att" in source
    if is_summary:
        assert set(source) <= SUMMARY_DOC_FIELDS, set(source) - SUMMARY_DOC_FIELDS
        assert SUMMARY_FIELDS - {"ops", "assets", "bytes"} <= set(source)
        assert set(source["node"]) == {"role", "id"}
        # Document format 2: the leaf is these fields; `att` holds only hashes and a count.
        assert set(source["att"]) == {"leaf_hash", "n", "proof"}
        trees = [source]
    else:
        header = orjson.loads(source["signed"].split("\n", 1)[1])
        trees = [source, header]
    for tree in trees:
        for path, value in walk(tree):
            last = path.rsplit(".", 1)[-1].split("[", 1)[0].lower()
            assert last not in FORBIDDEN_KEYS, path
            # Timestamps only as window starts and ends; the batch header also says when it
            # was signed (the relay's clock, not an event's).
            epoch_ms = isinstance(value, int) and 1_000_000_000_000 <= value < 10_000_000_000_000
            if epoch_ms and last != "signed_at_ms":
                assert value % WINDOW_MS == 0, (path, value)
        for name in ("ttfb_us", "duration_us", "throughput_bps"):
            histogram = tree.get(name)
            if histogram is not None:
                assert set(histogram) == {"values", "counts"}, name


async def test_planted_identifiers_leave_no_trace(
    start_relay: Callable[..., Any],
    data_dir: Path,
    relay_logs: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    running: RunningRelay = await start_relay(ingest={"trusted_proxies": ["127.0.0.0/8"]})
    relay = running.relay
    markers = Markers()
    corpus = Corpus()
    answers: list[Answer] = []
    wal_dir = data_dir / "wal"

    # Window W0 = [T0, T0+60s), then W1 = [T0+60s, T0+120s), each read while still open.
    await send_planted_window(running, markers, answers, with_ts=True)
    corpus.add_tree("W0 open", data_dir)
    w0_segments = sorted(p.name for p in wal_dir.glob("segment-*") if p.stat().st_size)
    assert w0_segments, "the accepted events are in the WAL"
    assert (wal_dir / f"salt-{T0_MS}.bin").exists()
    wal_text = b"".join(corpus.texts[f"W0 open:wal/{name}"] for name in w0_segments)
    assert markers.native_node.encode() in wal_text  # positive control: the search sees the WAL
    assert markers.atlas_node.encode() in wal_text
    for path in ("/metrics", "/v1/operator", "/v1/config", "/readyz", "/healthz"):
        answers.append(await get(running, path))
    answers.append(await get_operator(running, "/readyz"))

    assert await running.seal_after(70) == 1
    await send_planted_window(running, markers, answers, with_ts=False)
    corpus.add_tree("W1 open", data_dir)
    w1_segments = sorted(p.name for p in wal_dir.glob("segment-*") if p.stat().st_size)
    assert (wal_dir / f"salt-{T0_MS + WINDOW_MS}.bin").exists()

    assert await running.seal_after(60) == 1  # W1
    assert await running.seal_after(120) >= 1  # empty windows after it
    assert await relay.shipper.ship_pending()
    corpus.add_tree("sealed", data_dir)
    for path in ("/metrics", "/v1/operator", "/v1/config", "/readyz"):
        answers.append(await get(running, path))
    answers.append(await get_operator(running, "/readyz"))

    # P8: no segment with records of a sealed window, no salt of a sealed window.
    sealed_until = relay.windows.sealed_until_ms
    assert sealed_until >= T0_MS + 2 * WINDOW_MS
    windows, salts = wal_windows(wal_dir)
    assert all(w >= sealed_until for w in windows), windows
    assert all(s >= sealed_until for s in salts), salts
    remaining = {p.name for p in wal_dir.iterdir()}
    assert not remaining & set(w0_segments + w1_segments)
    assert f"salt-{T0_MS}.bin" not in remaining
    assert f"salt-{T0_MS + WINDOW_MS}.bin" not in remaining

    # The documents as shipped: summaries were published (k = 3 reached), and only summaries.
    assert cli.main(["export", "--store", str(data_dir)]) == 0
    exported = capsys.readouterr().out
    corpus.add("export", exported)
    documents = [orjson.loads(line) for line in exported.splitlines()]
    summaries = [d["_source"] for d in documents if "att" in d["_source"]]
    published = {(s["window_start_ms"], s["node"]["id"]) for s in summaries}
    for window in (T0_MS, T0_MS + WINDOW_MS):
        assert (window, markers.native_node) in published
        assert (window, f"{markers.atlas_node}.example") in published  # the host only
        assert (window, markers.storage_node) in published
    assert markers.native_node.encode() in exported.encode()  # positive control
    for document in documents:
        assert_summary_only(document)
    for value in (str(PLANTED_TTFB_MS), str(PLANTED_TTFB_MS * 1000)):
        assert value not in exported  # P6: no single event's value

    await stop(running)
    corpus.add_tree("stopped", data_dir)
    assert corpus.labels("W0 open:store.sqlite") or corpus.labels("sealed:store.sqlite")
    assert any(label.endswith("store.sqlite-wal") for label in corpus.texts)
    assert any(label.endswith("outbox.sqlite") for label in corpus.texts)

    for i, answer in enumerate(answers):
        corpus.add(f"answer {i} headers", answer.headers)
        corpus.add(f"answer {i} body", answer.body)
    corpus.add("caplog", caplog.text)
    for i, record in enumerate(caplog.records):
        corpus.add(f"log record {i}", f"{record.getMessage()} {record.args!r} {record.exc_text}")
    corpus.add("json logs", relay_logs.getvalue())
    assert caplog.records, "the relay's own log lines were captured"

    assert_nothing_planted(corpus, markers, [PLANTED_IPV4, PLANTED_IPV6])


# -- the same through `relay serve`, as operators run it -------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def export_lines(data_dir: Path) -> list[bytes]:
    if not (data_dir / "store.sqlite").exists():
        return []
    result = subprocess.run(
        [sys.executable, "-m", "relay", "export", "--store", str(data_dir)],
        capture_output=True,
        timeout=30,
        check=True,
    )
    return result.stdout.splitlines()


WINDOW_SECONDS = 4


async def test_relay_serve_process_leaks_nothing(tmp_path: Path) -> None:
    """`relay serve` with debug JSON logs: stderr, files and export hold no planted identifier."""
    markers = Markers()
    data_dir = tmp_path / "data"
    port, metrics_port = free_port(), free_port()
    config = {
        "origin": "test.relay/planted",
        "data_dir": str(data_dir),
        "listen": {"host": "127.0.0.1", "port": port},
        "metrics": {"listen": {"host": "127.0.0.1", "port": metrics_port}},
        "window": {"seconds": WINDOW_SECONDS, "lateness_seconds": 0},
        "privacy": {"k": 3},
        "ingest": {"trusted_proxies": ["127.0.0.0/8"]},
        "outbox": {"ship_interval_seconds": 0.05},
        "log": {"format": "json", "level": "debug"},
    }
    config_path = tmp_path / "relay.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    answers: list[bytes] = []
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, f"{base}/readyz", process)
            # All of it in one window, even on a slow machine: a cell whose three networks fell
            # into two windows would never be published.
            await asyncio.sleep(WINDOW_SECONDS - time.time() % WINDOW_SECONDS + 0.05)
            # From three source networks, so that k_networks = k = 3 publishes the cells.
            accepted = [
                (NATIVE, orjson.dumps({"events": native_events(markers)}), "application/json"),
                (ATLAS, orjson.dumps({"events": atlas_events(markers)}), "text/plain"),
            ]
            requests = [
                (planted_headers(markers, hop), *request)
                for hop in (f"{PLANTED_IPV4}, 127.0.0.1", PLANTED_IPV6, markers.forwarded)
                for request in accepted
            ]
            headers = planted_headers(markers, f"{PLANTED_IPV4}, 127.0.0.1")
            requests += [
                (
                    headers,
                    NATIVE,
                    orjson.dumps({"events": rejected_native_events(markers)}),
                    "text/plain",
                ),
                (
                    headers,
                    NATIVE,
                    b'{"events": ["' + markers.clients[0].encode(),
                    "application/json",
                ),
            ]
            for headers, path, data, content_type in requests:
                async with http.post(
                    base + path, data=data, headers={**headers, "Content-Type": content_type}
                ) as resp:
                    answers.append(repr(dict(resp.headers)).encode() + await resp.read())
            # Wait until the planted window is sealed and shipped into the embedded store.
            deadline = time.monotonic() + 20
            while not any(markers.native_node.encode() in line for line in export_lines(data_dir)):
                assert time.monotonic() < deadline, "the planted window was never published"
                await asyncio.sleep(0.2)
            for url in (
                f"http://127.0.0.1:{metrics_port}/metrics",
                f"http://127.0.0.1:{metrics_port}/readyz",
                base + "/v1/operator",
                base + "/v1/config",
            ):
                async with http.get(url) as resp:
                    assert resp.status == 200, url
                    answers.append(await resp.read())
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert b'"level":"debug"' in stderr or b'"level":"info"' in stderr  # logs were captured

    corpus = Corpus()
    corpus.add("stdout", stdout)
    corpus.add("stderr", stderr)
    for i, answer in enumerate(answers):
        corpus.add(f"answer {i}", answer)
    assert corpus.add_tree("data", data_dir) > 0
    exported = b"\n".join(export_lines(data_dir))
    corpus.add("export", exported)
    assert markers.atlas_node.encode() in exported  # positive control
    for line in exported.splitlines():
        document = orjson.loads(line)
        source = document["_source"]
        if "att" in source:
            assert set(source) <= SUMMARY_DOC_FIELDS
    assert_nothing_planted(corpus, markers, [PLANTED_IPV4, PLANTED_IPV6])
