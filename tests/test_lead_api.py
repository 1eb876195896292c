"""The lead API over real HTTP, on documents made by real relays (tests/test_lead_data.py).

Every number is checked against what the fixture's events add up to, computed in the test from
the events themselves; a tampered batch must drop out of the numbers and show up, flagged, only
when asked for.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from relay.attest.canonical import canonical_json
from relay.attest.merkle import leaf_hash, verify_inclusion
from relay.config import Settings
from relay.lead.api import create_lead_app
from relay.lead.service import LeadService
from tests.conftest import T0_MS
from tests.test_lead_data import (
    EVENTS,
    ORIGIN_A,
    ORIGIN_B,
    RANGE,
    WINDOW_MS,
    build_store,
    expected,
    lead_service,
    lead_settings,
    nonzero,
)


class Lead:
    def __init__(self, service: LeadService, server: TestServer, http: ClientSession) -> None:
        self.service, self.server, self.http = service, server, http

    async def get(self, path: str, status: int = 200, **params: str) -> Any:
        async with self.http.get(self.server.make_url(path), params=params) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == status, body
            expected_type = "application/json" if status < 400 else "application/problem+json"
            assert resp.content_type == expected_type
            return body


@pytest.fixture
async def settings(tmp_path: Path) -> Settings:
    return await build_store(tmp_path)


async def start_lead(settings: Settings, tokens: dict[str, str] | None = None) -> Lead:
    service = await lead_service(settings)
    server = TestServer(create_lead_app(service, tokens or {}))
    await server.start_server()
    return Lead(service, server, ClientSession())


@pytest.fixture
async def lead(settings: Settings) -> AsyncIterator[Lead]:
    running = await start_lead(settings)
    yield running
    await running.http.close()
    await running.server.close()
    await running.service.source.close()


def check_figures(answer: dict[str, Any], want: dict[str, Any]) -> None:
    assert answer["requests"] == want["requests"]
    assert nonzero(answer["outcomes"]) == want["outcomes"]
    assert nonzero(answer["signals"]) == want["signals"]
    assert answer["success_ratio"] == pytest.approx(want["success_ratio"])
    assert answer["ttfb_ms"] == want["ttfb_ms"]
    assert answer["duration_ms"] == want["duration_ms"]
    assert answer["operators"] == want["operators"]


def by_node(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{n['role']}/{n['id']}": n for n in answer["nodes"]}


async def test_nodes_match_the_events(lead: Lead) -> None:
    nodes = by_node(await lead.get("/v1/nodes", **RANGE))
    assert set(nodes) == {
        "distributor/d1",
        "distributor/d2",
        "distributor/mrbovo.distributor.cc",
        "storage/7",
        "storage/s1",
    }
    for name, node in nodes.items():
        role, node_id = name.split("/")
        events = [e for e in EVENTS if (e.role, e.node) == (role, node_id)]
        check_figures(node, expected(events))
        assert [r["region"] for r in node["regions"]] == sorted({e.region for e in events})
        for region in node["regions"]:
            check_figures(region, expected(e for e in events if e.region == region["region"]))
        assert node["unverified"] is None

    # The same numbers, spelled out: d1 has 20 + 6 + 6 requests from a and 9 from b.
    d1 = nodes["distributor/d1"]
    assert (d1["requests"], d1["outcomes"]["ok"], d1["outcomes"]["timeout"]) == (41, 34, 7)
    assert d1["signals"]["playback_slow"] == 3
    assert d1["operators"] == [ORIGIN_A, ORIGIN_B]
    assert d1["status"] == "degraded"  # 7/41 = 17 % failed
    assert nodes["distributor/d2"]["status"] == "down"  # 3 ok of 12
    assert nodes["distributor/d2"]["success_ratio"] == pytest.approx(3 / 12)
    # s1's clients reported 12 ok requests and no failed one: no ratio, but slow ones.
    s1 = nodes["storage/s1"]
    assert s1["coverage"] == "successes_only" and s1["success_ratio"] is None
    assert s1["status"] == "degraded"  # p90 ttfb ≈ 2.7 s > 2 s
    assert s1["reasons"] == ["slow to start: 1 in 10 requests waited over 2.7 s"]


async def test_a_node_is_judged_only_on_what_its_clients_report(lead: Lead) -> None:
    answer = await lead.get("/v1/nodes", **RANGE)
    nodes = by_node(answer)
    # (a) Atlas storage node: 12 failed uploads, no success reported: not "0 % ok", not down.
    failing = nodes["storage/7"]
    assert (failing["coverage"], failing["requests"], failing["outcomes"]["ok"]) == (
        "failures_only",
        12,
        0,
    )
    assert failing["success_ratio"] is None and failing["error_rate"] is None
    assert failing["status"] == "unknown"
    assert failing["reasons"] == [
        "12 failed requests reported and no successful one: its clients report failures only "
        "(Atlas: uploads), so the share that failed is not known"
    ]
    assert nonzero(failing["ops"]) == {"upload": 12}
    assert failing["signals"]["blacklisted"] == 6
    assert failing["reporters_at_least"] == 3  # the fixture's k: every cell had 3+ clients
    # (b) Atlas distributor: 12 ok downloads, no failure reported: not "100 %", not healthy.
    serving = nodes["distributor/mrbovo.distributor.cc"]
    assert (serving["coverage"], serving["requests"], serving["outcomes"]["ok"]) == (
        "successes_only",
        12,
        12,
    )
    assert serving["success_ratio"] is None and serving["error_rate"] is None
    assert serving["status"] == "unknown"
    assert serving["reasons"] == [
        "12 requests reported OK and no failed one: its clients report successes only "
        "(Atlas: downloads), so the share that failed is not known"
    ]
    assert nonzero(serving["ops"]) == {"download": 12}
    assert serving["signals"]["playback_codec"] == 3
    # (c) a native client reporting both sides: the ratio and the verdict stand.
    d1 = nodes["distributor/d1"]
    assert d1["coverage"] == "both" and d1["success_ratio"] == pytest.approx(34 / 41)
    assert d1["error_rate"] == pytest.approx(7 / 41) and d1["status"] == "degraded"
    assert nodes["distributor/d2"]["coverage"] == "both"
    # The network-wide storage cell is no node: it comes apart, as signals.
    assert "storage/_all" not in nodes
    network = answer["network"]
    assert nonzero(network["signals"]) == {"missing_operators": 3}
    assert (network["operators"], network["summaries"]) == ([ORIGIN_A], 1)
    assert "status" not in network and "success_ratio" not in network
    # The same rule per point of a series: each window of storage 7 holds failures only.
    series = await lead.get("/v1/nodes/storage/7/series", **RANGE)
    assert [(p["coverage"], p["requests"], p["success_ratio"]) for p in series["points"]] == [
        ("failures_only", 6, None),
        ("failures_only", 6, None),
    ]
    assert {p["status"] for p in series["points"]} == {"unknown"}
    # A point that has both sides keeps its ratio: d1's first window, 31 ok of 35.
    d1_points = (await lead.get("/v1/nodes/distributor/d1/series", **RANGE))["points"]
    assert (d1_points[0]["coverage"], d1_points[0]["success_ratio"]) == ("both", 31 / 35)


async def test_filters_and_the_default_range(lead: Lead) -> None:
    storage = await lead.get("/v1/nodes", role="storage", **RANGE)
    assert [n["id"] for n in storage["nodes"]] == ["7", "s1"]
    na = by_node(await lead.get("/v1/nodes", region="NA", **RANGE))
    assert set(na) == {"distributor/d1", "storage/s1"}
    check_figures(
        na["distributor/d1"], expected(e for e in EVENTS if e.node == "d1" and e.region == "NA")
    )
    # Only window 1 (RFC 3339 bounds): d1's second minute.
    second = by_node(
        await lead.get(
            "/v1/nodes", **{"from": "2026-01-05T00:01:00Z", "to": "2026-01-05T00:02:00Z"}
        )
    )
    check_figures(
        second["distributor/d1"], expected(e for e in EVENTS if e.node == "d1" and e.window == 1)
    )
    # Default: the 24 hours before now (the lead's clock is 10 minutes after T0).
    default = await lead.get("/v1/nodes")
    assert default["to_ms"] - default["from_ms"] == 24 * 3600 * 1000
    assert len(default["nodes"]) == 5


async def test_series_per_window_and_per_step(lead: Lead) -> None:
    series = await lead.get("/v1/nodes/distributor/d1/series", **RANGE)
    points = series["points"]
    assert [(p["start_ms"], p["end_ms"]) for p in points] == [
        (T0_MS, T0_MS + WINDOW_MS),
        (T0_MS + WINDOW_MS, T0_MS + 2 * WINDOW_MS),
    ]
    for window, point in enumerate(points):
        check_figures(point, expected(e for e in EVENTS if e.node == "d1" and e.window == window))
    assert points[1]["status"] == "unknown"  # 6 requests < min_requests

    whole = await lead.get("/v1/nodes/distributor/d1/series", step="2m", **RANGE)
    assert [(p["start_ms"], p["end_ms"]) for p in whole["points"]] == [
        (T0_MS, T0_MS + 2 * WINDOW_MS)
    ]
    check_figures(whole["points"][0], expected(e for e in EVENTS if e.node == "d1"))
    eu = await lead.get("/v1/nodes/distributor/d1/series", step="60", region="EU", **RANGE)
    assert [p["requests"] for p in eu["points"]] == [29, 6]
    nothing = await lead.get("/v1/nodes/storage/unknown-node/series", **RANGE)
    assert nothing["points"] == []


async def test_operators_batches_summaries_and_checkpoints(lead: Lead) -> None:
    operators = (await lead.get("/v1/operators"))["operators"]
    assert [(o["origin"], o["state"], o["batches"], o["batches_verified"]) for o in operators] == [
        (ORIGIN_A, "verified", 2, 2),
        (ORIGIN_B, "verified", 2, 2),
    ]
    assert operators[0]["head"]["seq"] == 1 and operators[0]["findings"] == []

    listed = await lead.get("/v1/batches", origin=ORIGIN_A, **RANGE)
    assert listed["total"] == 2
    assert [(b["seq"], b["verified"]) for b in listed["batches"]] == [(1, True), (0, True)]
    assert "signed" not in listed["batches"][0]
    page = await lead.get("/v1/batches", limit="1", offset="1", **RANGE)
    assert (page["total"], len(page["batches"])) == (4, 1)

    batch = await lead.get(f"/v1/batches/{ORIGIN_A}/0")
    header = orjson.loads(batch["document"]["_source"]["signed"].split("\n", 1)[1])
    assert batch["verified"] is True and header["n"] == 6

    # The inclusion proof leads from the summary's signed leaf, its searchable fields in RFC 8785
    # form, to the batch's signed root.
    summary = await lead.get(f"/v1/summaries/{ORIGIN_A}/0/2")
    inclusion = summary["inclusion"]
    source = summary["document"]["_source"]
    leaf = canonical_json({k: v for k, v in source.items() if k != "att"})
    assert inclusion["leaf_hash"] == source["att"]["leaf_hash"]
    assert base64.b64decode(inclusion["leaf_hash"]) == leaf_hash(leaf)
    assert inclusion["root"] == header["root"]
    assert verify_inclusion(
        leaf_hash(leaf),
        2,
        inclusion["tree_size"],
        [base64.b64decode(p) for p in inclusion["proof"]],
        base64.b64decode(inclusion["root"]),
    )

    checkpoints = await lead.get(f"/v1/checkpoints/{ORIGIN_B}")
    assert [(c["seq"], c["tree_size"], c["verified"]) for c in checkpoints["checkpoints"]] == [
        (1, 2, True),
        (0, 1, True),
    ]
    assert checkpoints["latest"]["note"] == checkpoints["checkpoints"][0]["note"]

    for path in (f"/v1/batches/{ORIGIN_A}/7", f"/v1/summaries/{ORIGIN_A}/0/9", "/v1/checkpoints/x"):
        problem = await lead.get(path, status=404)
        assert problem["type"] == "urn:relay:problem:not-found"


def tamper(settings: Settings, doc_id: str, **changes: Any) -> None:
    """Edit a stored document in place, as someone with write access to the store could."""
    db = sqlite3.connect(settings.data_dir / "store.sqlite")
    try:
        (source,) = db.execute(
            "SELECT source FROM documents WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        db.execute(
            "UPDATE documents SET source = ? WHERE doc_id = ?",
            (orjson.dumps({**orjson.loads(source), **changes}), doc_id),
        )
        db.commit()
    finally:
        db.close()


async def test_a_tampered_batch_is_hidden_unless_asked_for(lead: Lead, settings: Settings) -> None:
    first = lead.service.verification.current
    assert await lead.service.verification.refresh() is first  # nothing changed: no new run
    # b's one summary (d1, EU, 9 requests) now claims 900 requests.
    tamper(settings, f"{ORIGIN_B}|s|0|0", requests=900, outcomes={"ok": 900})
    await lead.service.verification.refresh()

    hidden = by_node(await lead.get("/v1/nodes", **RANGE))["distributor/d1"]
    check_figures(hidden, expected(e for e in EVENTS if e.node == "d1" and e.origin == ORIGIN_A))
    assert hidden["unverified"] is None

    shown = by_node(await lead.get("/v1/nodes", include_unverified="true", **RANGE))
    d1 = shown["distributor/d1"]
    assert d1["requests"] == 32 + 900
    assert d1["unverified"] == {"summaries": 1, "requests": 900}
    assert d1["operators"] == [ORIGIN_A, ORIGIN_B]
    assert shown["distributor/d2"]["unverified"] is None

    problem = await lead.get(f"/v1/batches/{ORIGIN_B}/0", status=404)
    assert problem["type"] == "urn:relay:problem:unverified"
    await lead.get(f"/v1/summaries/{ORIGIN_B}/0/0", status=404)
    flagged = await lead.get(f"/v1/batches/{ORIGIN_B}/0", include_unverified="true")
    assert flagged["verified"] is False
    assert [f["code"] for f in flagged["findings"]] == ["leaf_mismatch"]
    listed = await lead.get("/v1/batches", origin=ORIGIN_B, **RANGE)
    assert [b["seq"] for b in listed["batches"]] == [1]
    listed = await lead.get("/v1/batches", origin=ORIGIN_B, include_unverified="true", **RANGE)
    assert [(b["seq"], b["verified"], b["finding_codes"]) for b in listed["batches"]] == [
        (1, True, []),
        (0, False, ["leaf_mismatch"]),
    ]
    operators = {o["origin"]: o for o in (await lead.get("/v1/operators"))["operators"]}
    assert operators[ORIGIN_B]["state"] == "findings"
    assert operators[ORIGIN_B]["findings"][0]["code"] == "leaf_mismatch"
    assert operators[ORIGIN_A]["state"] == "verified"


async def test_bad_parameters_are_problems(lead: Lead) -> None:
    for params, slug in (
        ({"from": "5", "to": "3"}, "invalid-range"),
        ({"from": "yesterday"}, "invalid-range"),
        ({"include_unverified": "yes"}, "invalid-parameter"),
        ({"role": "gateway"}, "invalid-parameter"),
    ):
        problem = await lead.get("/v1/nodes", status=400, **params)
        assert problem["type"] == f"urn:relay:problem:{slug}"
        assert problem["status"] == 400
    problem = await lead.get("/v1/nodes/distributor/d1/series", status=400, step="1s")
    assert "more than 10000 points" in problem["detail"]
    # Bounds schemathesis found (issue 19): to = 2^53 and an empty origin were answered 200.
    for path, params in (
        ("/v1/batches", {"to": str(2**53)}),
        ("/v1/nodes", {"from": "-1"}),
        ("/v1/batches", {"origin": ""}),
        ("/v1/batches", {"origin": "a+b"}),
    ):
        problem = await lead.get(path, status=400, **params)
        assert problem["status"] == 400, (path, params)
    await lead.get("/v1/nowhere", status=404)


async def test_bearer_tokens(settings: Settings) -> None:
    lead = await start_lead(settings, {"dashboard": "s3cret"})
    try:
        problem = await lead.get("/v1/nodes", status=401)
        assert problem["type"] == "urn:relay:problem:unauthorized"
        lead.http.headers["Authorization"] = "Bearer wrong"
        await lead.get("/v1/operators", status=401)
        lead.http.headers["Authorization"] = "Bearer s3cret"
        await lead.get("/v1/operators")
        # The page itself holds no data and asks for the token.
        del lead.http.headers["Authorization"]
        async with lead.http.get(lead.server.make_url("/dashboard")) as resp:
            assert resp.status == 200
            assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    finally:
        await lead.http.close()
        await lead.server.close()
        await lead.service.source.close()


async def test_verification_follows_the_store_in_the_background(tmp_path: Path) -> None:
    await build_store(tmp_path)
    service = await lead_service(lead_settings(tmp_path, verify_interval_seconds=0.05))
    refresher = asyncio.get_running_loop().create_task(service.verification.run())
    try:
        first = service.verification.current
        assert (ORIGIN_B, 0) in first.report.verified
        tamper(lead_settings(tmp_path), f"{ORIGIN_B}|s|0|0", requests=1)
        for _ in range(200):
            if service.verification.current is not first:
                break
            await asyncio.sleep(0.01)
        assert (ORIGIN_B, 0) not in service.verification.current.report.verified
    finally:
        refresher.cancel()
        await service.source.close()
