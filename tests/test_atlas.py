"""Atlas `UserEventsLogger` payloads, unchanged, map as DESIGN §3.2 says."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from relay.ingest.atlas import classify_error, scrub_atlas
from relay.ingest.decode import decode_atlas
from relay.ingest.scrub import Admission, RequestContext, ScrubResult
from relay.observation import ms_bucket
from tests.conftest import (
    T0_MS,
    RunningRelay,
    from_network,
    memory_admission,
    observation_fields,
)

USER = {
    "accountId": "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY",
    "memberId": "42",
    "channelId": "7",
}


def atlas(kind: str, **fields: Any) -> dict[str, Any]:
    """An event as Atlas builds it: entry fields, metric fields, and the user attached."""
    return {
        "type": kind,
        "distributorId": "1:3",
        "distributorUrl": "https://distributor-3.example/distributor/",
        "dataObjectId": "981",
        "dataObjectType": "DataObjectTypeVideoMedia",
        "resolvedUrl": "https://distributor-3.example/distributor/api/v1/assets/981",
        "userDevice": "Mozilla/5.0 (X11; Linux x86_64)",
        **fields,
        "user": USER,
    }


CTX = RequestContext(
    now_ms=T0_MS + 5_000, region="EU", network_material=b"n\x00test", source_network=b"s\x00test"
)


def scrub(events: list[Any], adm: Admission | None = None) -> ScrubResult:
    """The events as the handler sees them: decoded from a JSON body, then scrubbed."""
    decoded = decode_atlas(orjson.dumps({"events": events}))
    return scrub_atlas(decoded, CTX, adm or memory_admission())


@pytest.mark.parametrize(
    ("message", "outcome"),
    [
        ("timeout of 5000ms exceeded", "timeout"),
        ("Request failed with status code 503", "http_5xx"),
        ("Request failed with status code 500", "http_5xx"),
        ("Request failed with status code 404", "http_4xx"),
        ("Request failed with status code 429", "http_4xx"),
        ("Network Error", "connection"),
        ("canceled", "aborted"),
        ("Request aborted", "aborted"),
        ("Unexpected token < in JSON at position 0", "other"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_axios_messages_classify(message: str | None, outcome: str) -> None:
    assert classify_error(message) == outcome


def test_every_atlas_type_maps() -> None:
    events = [
        atlas(
            "distributor-response-time",
            initialResponseTime=85.5,
            fullResponseTime=1200,
            downloadSpeed=3.2,
        ),
        atlas("distributor-response-error", error="Request failed with status code 502"),
        atlas("distributor-response-timeout"),
        atlas("distributor-blacklisted"),
        atlas("playback-is-slow"),
        atlas("playback-wrong-codec", assetType="video", codec="hevc"),
        atlas("asset-upload-failed", distributorId="0:7", error="timeout of 30000ms exceeded"),
        {"type": "missing-operators-for-bag", "storageBagId": "dynamic:channel:7", "user": USER},
        {"type": "nft-minting-failed", "details": {"nft": {}}, "error": "x", "user": USER},
        {"type": "funds-withdrawal", "channelId": "7", "amount": "100", "user": USER},
        {"type": "user-statistics-benchmark-time", "time": 12, "user": USER},
    ]
    result = scrub(events)
    assert result.unsupported == 3
    assert not result.errors
    observations = [observation_fields(o) for o in result.observations]
    mapped = [(o["kind"], o["role"], o["node_id"], o["name"], o["op"]) for o in observations]
    assert mapped == [
        ("request", "distributor", "1:3", "ok", "download"),
        ("request", "distributor", "1:3", "http_5xx", "download"),
        ("request", "distributor", "1:3", "timeout", "download"),
        ("signal", "distributor", "1:3", "blacklisted", None),
        ("signal", "distributor", "1:3", "playback_slow", None),
        ("signal", "distributor", "1:3", "playback_codec", None),
        ("request", "storage", "0:7", "timeout", "upload"),
        ("signal", "storage", "dynamic:channel:7", "missing_operators", None),
    ]
    timing = observations[0]
    assert (timing["ttfb_bucket"], timing["duration_bucket"], timing["asset"]) == (
        ms_bucket(85.5),
        ms_bucket(1200),
        "video",
    )
    assert {o["window_start_ms"] for o in observations} == {T0_MS}
    # One Atlas user is one contributor, keyed from accountId, not from the network.
    assert len({o["contributor"] for o in observations}) == 1


def test_contributor_falls_back_to_member_then_network() -> None:
    adm = memory_admission()
    by_account = scrub([atlas("distributor-response-timeout")], adm)
    member_only = {**atlas("distributor-response-timeout"), "user": {"memberId": "42"}}
    anonymous = atlas("distributor-response-timeout")
    del anonymous["user"]
    by_member = scrub([member_only], adm)
    by_network = scrub([anonymous], adm)
    keys = {r.observations[0][1] for r in (by_account, by_member, by_network)}
    assert len(keys) == 3


def test_events_without_a_usable_node_are_rejected() -> None:
    no_node = atlas("distributor-response-time")
    del no_node["distributorId"]
    bad_node = atlas("distributor-response-time", distributorId="https://evil.example/x")
    not_an_object = "distributor-response-time"
    result = scrub([no_node, bad_node, not_an_object])
    assert not result.observations
    assert [e["index"] for e in result.errors] == [0, 1, 2]
    assert result.rejected["invalid"] == 3


async def test_atlas_payload_end_to_end(relay_server: RunningRelay) -> None:
    users = [{"accountId": f"acct-{n}"} for n in range(3)]
    for n, user in enumerate(users):
        events = [
            {
                **atlas("distributor-response-time", initialResponseTime=40, fullResponseTime=400),
                "user": user,
            },
            {**atlas("distributor-response-error", error="Network Error"), "user": user},
            {"type": "nft-minting-failed", "user": user},
        ]
        status, body = await relay_server.post(
            "/v1/atlas/events", {"events": events}, headers=from_network(n)
        )
        assert status == 202
        assert body == {"accepted": 2, "rejected": 0, "errors": [], "unsupported": 1}
    await relay_server.seal_after(70)
    assert await relay_server.relay.shipper.ship_pending()
    from tests.test_pipeline import batches, shipped, summaries

    docs = shipped(relay_server.relay)
    (batch,) = batches(docs)
    (cell,) = summaries(docs, 0)
    assert cell["node"] == {"role": "distributor", "id": "1:3"}
    assert cell["outcomes"] == {"connection": 3, "ok": 3}
    assert cell["ttfb_us"]["counts"] == [3]
    assert batch["stats"]["unsupported_type"] == 3
    assert batch["stats"]["accepted"] == 6
