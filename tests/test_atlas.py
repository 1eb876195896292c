"""Atlas payloads, built as the real client builds them (tests/atlas_client.py), map as pinned
in DESIGN §3.2."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from relay.aggregate.observation import ms_bucket
from relay.core.vocabulary import NETWORK_WIDE
from relay.ingest.atlas import classify_error, distributor_node, scrub_atlas
from relay.ingest.decode import decode_atlas
from relay.ingest.models import ATLAS_ERROR_EXAMPLE, ATLAS_PERFORMANCE_EXAMPLE
from relay.ingest.scrub import Admission, RequestContext, ScrubResult
from tests import atlas_client as atlas
from tests.conftest import T0_MS, RunningRelay, memory_admission, observation_fields
from tests.test_pipeline import balance, batches, ship, summaries
from tests.verify_support import codes, registry_of, verify

CTX = RequestContext(
    now_ms=T0_MS + 5_000, region="EU", network_material=b"n\x00test", source_network=b"s\x00test"
)
USER = atlas.logged_in(1)
ORIGIN = atlas.DISTRIBUTORS[0]
NODE = atlas.DISTRIBUTOR_NODES[0]


def scrub(
    events: list[Any], adm: Admission | None = None, ctx: RequestContext = CTX
) -> ScrubResult:
    """The events as the handler sees them: decoded from a JSON body, then scrubbed."""
    decoded = decode_atlas(atlas.body(events), 1000)
    return scrub_atlas(decoded.events, ctx, adm or memory_admission())


def mapped(result: ScrubResult) -> list[tuple[str, str, str, str, str | None]]:
    fields = [observation_fields(o) for o in result.observations]
    return [(o["kind"], o["role"], o["node_id"], o["name"], o["op"]) for o in fields]


def download(origin: str = ORIGIN, user: atlas.AtlasUser | None = USER, **timing: Any) -> dict:
    times = {"fetch_start": 100.0, "response_start": 185.5, "response_end": 1300.0} | timing
    return atlas.distributor_response_time(
        atlas.asset_url(origin, "48451"),
        "48451",
        "video",
        decoded_body_size=4_000_000,
        user=user,
        **times,
    )


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


# URL -> the distributor it names (None: none). The browser client names them the same way
# (tests/test_browser_client.py runs this table through it).
DISTRIBUTOR_URLS: list[tuple[str, str | None]] = [
    ("https://mrbovo.distributor.cc", "mrbovo.distributor.cc"),
    ("https://mrbovo.distributor.cc/distributor/api/v1/assets/48451", "mrbovo.distributor.cc"),
    ("https://Distributor.Example:8443", "distributor.example:8443"),
    ("https://a.example:443/x", "a.example"),
    ("http://a.example:80", "a.example"),
    ("http://a.example:443", "a.example:443"),
    ("HTTPS://A.EXAMPLE", "a.example"),
    ("https://user:secret@a.example/p?q=1#f", "a.example"),
    ("https://a.example./x", "a.example"),
    ("https://bücher.example/x", "xn--bcher-kva.example"),
    ("https://192.0.2.7:8081/distributor", "192.0.2.7:8081"),
    ("ftp://a.example", None),
    ("", None),
    ("mrbovo.distributor.cc", None),
    ("https://", None),
    ("https://[2001:db8::1]:8443/x", None),  # an IPv6 literal is ambiguous with a port
    ("https://a.example:99999", None),
    ("https://a.example:port", None),
    ("javascript:alert(1)", None),
    ("https://a b.example", None),
    ("https://<script>.example", None),
    ("https://_all", None),  # reserved for the network-wide cell
    ("https://" + "a" * 130 + ".example", None),
]


@pytest.mark.parametrize(("url", "node"), DISTRIBUTOR_URLS)
def test_distributor_named_by_normalised_host(url: str, node: str | None) -> None:
    assert distributor_node(url) == node


def test_every_infrastructure_type_maps_as_pinned() -> None:
    codec = atlas.playback_wrong_codec(
        atlas.asset_url(ORIGIN, "9"), "9", "video", mobile=False, user=USER
    )
    slow = atlas.playback_is_slow(atlas.asset_url(ORIGIN, "9"), "33", "9", user=USER, title="t")
    upload = atlas.failed_upload(
        "77", "video", [("3", "https://s3.example")], "Network Error", user=USER
    )
    events = [
        download(),
        codec,
        slow,
        *upload[:2],
        upload[-1],
        atlas.missing_operators_for_bag("7001", user=USER),
        {
            "type": "distributor-response-error",
            **atlas.download_entry(atlas.asset_url(ORIGIN, "9"), "9", None),
            "error": "Request failed with status code 502",
            "user": USER.to_json(),
        },
        {
            "type": "distributor-response-timeout",
            "distributorId": "1:3",
            "user": USER.to_json(),
        },  # Atlas before 2023-06
        *atlas.not_infrastructure(USER),
    ]
    result = scrub(events)
    assert not result.errors
    assert result.unsupported == len(atlas.not_infrastructure(USER))
    assert mapped(result) == [
        ("request", "distributor", NODE, "ok", "download"),
        ("signal", "distributor", NODE, "playback_codec", None),
        ("signal", "distributor", NODE, "playback_slow", None),
        ("request", "storage", "3", "connection", "upload"),
        ("signal", "storage", "3", "blacklisted", None),
        ("signal", "storage", "3", "upload_failed", None),
        ("signal", "storage", NETWORK_WIDE, "missing_operators", None),
        ("request", "distributor", NODE, "http_5xx", "download"),
        ("request", "distributor", "1:3", "timeout", "download"),
    ]
    first = observation_fields(result.observations[0])
    assert (first["ttfb_bucket"], first["duration_bucket"], first["asset"]) == (
        ms_bucket(85.5),
        ms_bucket(1200),
        "video",
    )
    assert {observation_fields(o)["window_start_ms"] for o in result.observations} == {T0_MS}
    # One Atlas user is one contributor, keyed from accountId, not from the network.
    assert len({o[1] for o in result.observations}) == 1


def test_a_failed_upload_is_attempts_blacklistings_and_one_failure_on_buckets() -> None:
    buckets = list(atlas.BUCKETS)
    events = atlas.failed_upload("5521", "video", buckets, "timeout of 30000ms exceeded", user=USER)
    result = scrub(events)
    attempts = atlas.MAX_BUCKET_RETRY + 1
    assert len(events) == 2 * attempts + 1
    tally: dict[tuple[str, str, str, str, str | None], int] = {}
    for row in mapped(result):
        tally[row] = tally.get(row, 0) + 1
    assert tally == {
        ("request", "storage", "3", "timeout", "upload"): 2,
        ("request", "storage", "7", "timeout", "upload"): 2,
        ("signal", "storage", "3", "blacklisted", None): 2,
        ("signal", "storage", "7", "blacklisted", None): 2,
        # The give-up is a signal, not a second failed request: the attempt already counted.
        ("signal", "storage", "7", "upload_failed", None): 1,
    }


def test_hidden_browser_timing_counts_without_ttfb() -> None:
    # Cross-origin without Timing-Allow-Origin: responseStart 0, so initialResponseTime < 0.
    event = download(fetch_start=1520.0, response_start=0, response_end=2210.0)
    assert event["initialResponseTime"] < 0
    (observation,) = scrub([event]).observations
    fields = observation_fields(observation)
    assert fields["name"] == "ok"
    assert fields["ttfb_bucket"] is None
    assert fields["duration_bucket"] == ms_bucket(690.0)


def test_playback_is_slow_is_named_by_the_resolved_url_host() -> None:
    event = atlas.playback_is_slow(
        atlas.asset_url(atlas.DISTRIBUTORS[2], "8812"), "3301", "8812", user=USER, title="x"
    )
    assert "distributorUrl" not in event
    assert mapped(scrub([event])) == [
        ("signal", "distributor", atlas.DISTRIBUTOR_NODES[2], "playback_slow", None)
    ]


def test_distributor_url_wins_over_resolved_url_and_id() -> None:
    event = {
        **download(),
        "resolvedUrl": "https://other.example/distributor/api/v1/assets/1",
        "distributorId": "1:3",
    }
    assert mapped(scrub([event]))[0][2] == NODE


def test_events_without_a_usable_node_are_rejected_without_echoing_it() -> None:
    no_node = {"type": "distributor-response-time", "initialResponseTime": 5, "user": {}}
    bad_url = {**download(), "distributorUrl": "javascript:alert('secret-token')"}
    bad_resolved = atlas.playback_is_slow("", "1", "2", user=USER, title="x")
    bad_bucket = atlas.upload_error("5", "<script>", "Network Error", user=USER)
    no_bucket = {"type": "asset-upload-failed", "dataObjectId": "5", "error": "x"}
    result = scrub([no_node, bad_url, bad_resolved, bad_bucket, no_bucket, "not an object"])
    assert not result.observations
    assert [(e["index"], e["field"]) for e in result.errors] == [
        (0, "distributorId"),
        (1, "distributorUrl"),
        (2, "resolvedUrl"),
        (3, "storageOperatorId"),
        (4, "storageOperatorId"),
        (5, "(event)"),
    ]
    assert result.rejected["invalid"] == 6
    assert b"secret-token" not in orjson.dumps(result.errors)
    assert b"script" not in orjson.dumps(result.errors)


def test_contributor_is_account_then_member_then_network() -> None:
    adm = memory_admission()
    member_only = atlas.AtlasUser(member_id="1042")
    keys = {
        name: scrub([download(user=user)], adm).observations[0][1]
        for name, user in (
            ("account", USER),
            ("member", member_only),
            ("logged_out", atlas.LOGGED_OUT),
            ("before_set_user", None),
        )
    }
    assert len({keys["account"], keys["member"], keys["logged_out"]}) == 3
    # `{}` and no `user` at all are both keyed by the network (IP + User-Agent family).
    assert keys["logged_out"] == keys["before_set_user"]


def test_a_batch_over_the_cap_keeps_the_first_events() -> None:
    # Atlas does not cap its batches and never retries: refusing the body would lose it all.
    events = [download() for _ in range(1200)]
    decoded = decode_atlas(atlas.body(events), 1000)
    assert (len(decoded.events), decoded.overflow) == (1000, 200)


def test_schema_examples_are_bodies_of_the_real_client() -> None:
    # The examples of schemas/ and openapi.yaml, rebuilt with the client's own code paths.
    user = atlas.logged_in(3)
    performance = [
        atlas.distributor_response_time(
            atlas.asset_url(atlas.DISTRIBUTORS[0], "48451"),
            "48451",
            "thumbnail",
            fetch_start=1520.0,
            response_start=1605.5,
            response_end=1710.5,
            decoded_body_size=48_537,
            user=user,
        ),
        atlas.distributor_response_time(
            atlas.asset_url(atlas.DISTRIBUTORS[1], "48452"),
            "48452",
            "video",
            fetch_start=1533.0,
            response_start=0,
            response_end=2950.5,
            decoded_body_size=0,
            user=user,
        ),
        atlas.not_infrastructure(user)[0],
    ]
    upload = atlas.failed_upload(
        "5521", "video", list(atlas.BUCKETS), "Network Error", user=atlas.LOGGED_OUT
    )
    errors = [
        atlas.playback_wrong_codec(
            atlas.asset_url(atlas.DISTRIBUTORS[0], "8813"),
            "8813",
            "video",
            mobile=False,
            user=atlas.LOGGED_OUT,
        ),
        *upload[:2],
        upload[-1],
        atlas.missing_operators_for_bag("7003", user=atlas.LOGGED_OUT),
    ]
    assert orjson.loads(atlas.body(performance)) == ATLAS_PERFORMANCE_EXAMPLE
    assert orjson.loads(atlas.body(errors)) == ATLAS_ERROR_EXAMPLE


def _network(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"198.51.{n}.{7 + n % 200}"}


async def test_replay_of_real_atlas_traffic(start_relay: Any) -> None:
    # Many users, logged in and out, both of Atlas's flushes, every type: all accepted, each on
    # the right node, the bag id nowhere, the batch balanced and verified.
    running: RunningRelay = await start_relay(ingest={"trusted_proxies": ["127.0.0.0/8"]})
    users = 24
    unsupported = 0
    for n in range(users):
        user = atlas.user_variant(n)
        for events in (atlas.performance_batch(user, 12, seed=n), atlas.error_batch(user, seed=n)):
            status, answer = await running.post(
                "/v1/atlas/events", {"events": events}, headers=_network(n)
            )
            assert status == 202, answer
            assert (answer["rejected"], answer["errors"]) == (0, []), answer
            unsupported += answer["unsupported"]
    await running.seal_after(70)
    docs = await ship(running)
    (batch,) = [b for b in batches(docs) if b["stats"]["accepted"]]
    cells = summaries(docs, batch["seq"])
    by_node: dict[tuple[str, str], dict[str, Any]] = {}
    for cell in cells:
        node = (cell["node"]["role"], cell["node"]["id"])
        entry = by_node.setdefault(node, {"requests": 0, "outcomes": {}, "signals": {}})
        entry["requests"] += cell["requests"]
        for field in ("outcomes", "signals"):
            for name, count in cell[field].items():
                entry[field][name] = entry[field].get(name, 0) + count
    assert set(by_node) == {
        *(("distributor", node) for node in atlas.DISTRIBUTOR_NODES),
        ("storage", "3"),
        ("storage", "7"),
        ("storage", NETWORK_WIDE),
    }
    for node in atlas.DISTRIBUTOR_NODES:
        assert set(by_node[("distributor", node)]["outcomes"]) == {"ok"}
    assert by_node[("storage", "3")]["signals"]["blacklisted"] > 0
    assert by_node[("storage", "7")]["signals"]["upload_failed"] == users
    assert by_node[("storage", NETWORK_WIDE)]["signals"] == {"missing_operators": users}
    assert batch["stats"]["unsupported_type"] == unsupported > 0
    assert batch["stats"]["rejected"] == 0
    balance(batch, cells)
    stored = orjson.dumps([d.source for d in docs])
    assert b"dynamic:channel" not in stored and b"/distributor/api" not in stored
    assert not codes(verify(registry_of(running), docs))


async def test_an_oversized_atlas_batch_is_accepted_up_to_the_cap(
    relay_server: RunningRelay,
) -> None:
    events = [download(user=atlas.logged_in(n % 40)) for n in range(1200)]
    status, answer = await relay_server.post("/v1/atlas/events", {"events": events})
    assert status == 202
    assert (answer["accepted"], answer["rejected"]) == (1000, 200)
    assert [(e["index"], e["field"]) for e in answer["errors"]] == [(1000, "events")]
    await relay_server.seal_after(70)
    docs = await ship(relay_server)
    (batch,) = [b for b in batches(docs) if b["stats"]["accepted"]]
    assert (batch["stats"]["too_many"], batch["stats"]["rejected"]) == (200, 200)
    balance(batch, summaries(docs, batch["seq"]))
