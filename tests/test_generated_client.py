"""openapi.yaml is a standard another team can build on: a client generated from it works.

openapi-python-client (pinned in the dev extras) generates a typed Python client from
openapi.yaml once per session, into a temporary directory; the tests drive a real lead (the fixture
store of tests/test_lead_data.py, with a bearer token) and a real operator relay through it. Every
answer must parse into its generated model (not an untyped `Any`), survive the round trip back to
the JSON the server sent, and hold what the server computed: the fixture's events, a Merkle
inclusion proof that verifies, the relay's own identity and configuration.
"""

from __future__ import annotations

import base64
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from relay.attest.canonical import canonical_json
from relay.attest.merkle import leaf_hash, verify_inclusion
from tests.conftest import T0_MS
from tests.test_lead_data import EVENTS, ORIGIN_A, RANGE, ThreadedLead, expected
from tests.test_openapi_conformance import ThreadedRelay, _event, running_relay

ROOT = Path(__file__).resolve().parent.parent
OPENAPI = ROOT / "openapi.yaml"
PACKAGE = "relay_openapi_client"
TOKEN = "generated-client-t0ken"
FROM, TO = int(RANGE["from"]), int(RANGE["to"])
#: What the generator may warn about: it has no model for a text/plain request body (the
#: sendBeacon form of the two ingest endpoints); their JSON bodies are generated.
KNOWN_WARNINGS = {"POST /v1/events", "POST /v1/atlas/events"}


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated package, importable as PACKAGE; generated once per session."""
    out = tmp_path_factory.mktemp("client")
    config = out / "config.yaml"
    config.write_text(f"package_name_override: {PACKAGE}\npost_hooks: []\n", encoding="utf-8")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "openapi-python-client"),
            "generate",
            "--path",
            str(OPENAPI),
            "--meta",
            "none",
            "--config",
            str(config),
            "--output-path",
            str(out / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr  # the warnings are on stderr
    assert result.returncode == 0, output
    warned = {
        line.removeprefix("WARNING parsing ").split(" within ")[0]
        for line in output.splitlines()
        if line.startswith("WARNING parsing ")
    }
    assert warned <= KNOWN_WARNINGS, output
    assert "Cannot parse" not in output, output
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture(scope="module")
def lead(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedLead]:
    with ThreadedLead(tmp_path_factory.mktemp("lead"), tokens={"gen": TOKEN}) as running:
        yield running


def _typed(answer: Any, model: str, raw_url: str, params: dict[str, Any] | None = None) -> Any:
    """`answer` is the generated model `model`, and round-trips to the server's JSON."""
    cls = getattr(_module("models"), model)
    assert isinstance(answer, cls), f"{type(answer).__name__} is not {model}: {answer!r}"
    raw = requests.get(
        raw_url, params=params, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert answer.to_dict() == raw.json()
    return answer


def _lead_client(lead: ThreadedLead) -> Any:
    return _module("client").AuthenticatedClient(
        base_url=lead.base_url, token=TOKEN, raise_on_unexpected_status=True
    )


def test_nodes_and_series_hold_the_fixtures_events(
    generated: ModuleType, lead: ThreadedLead
) -> None:
    client = _lead_client(lead)
    nodes = _module("api.lead.lead_list_nodes").sync(client=client, from_=FROM, to=TO)
    _typed(nodes, "LeadNodes", lead.base_url + "/v1/nodes", RANGE)
    by_id = {node.id: node for node in nodes.nodes}
    d1 = [e for e in EVENTS if e.node == "d1"]
    want = expected(d1)
    assert by_id["d1"].requests == want["requests"]
    assert by_id["d1"].outcomes.timeout == want["outcomes"]["timeout"]
    assert by_id["d1"].signals.playback_slow == want["signals"]["playback_slow"]
    assert by_id["d1"].ttfb_ms.p50 == want["ttfb_ms"]["p50"]
    assert by_id["d1"].operators == want["operators"]
    assert nodes.network is not None
    assert nodes.network.signals.missing_operators == 3

    role = _module("models").LeadNodeSeriesRole.DISTRIBUTOR
    series = _module("api.lead.lead_node_series").sync(role, "d1", client=client, from_=FROM, to=TO)
    _typed(series, "LeadSeries", lead.base_url + "/v1/nodes/distributor/d1/series", RANGE)
    assert [point.start_ms for point in series.points] == [T0_MS, T0_MS + 60_000]
    assert sum(point.requests for point in series.points) == want["requests"]


def test_batches_summary_proof_and_checkpoints(generated: ModuleType, lead: ThreadedLead) -> None:
    client = _lead_client(lead)
    batches = _module("api.lead.lead_list_batches").sync(client=client, from_=FROM, to=TO)
    _typed(batches, "LeadBatches", lead.base_url + "/v1/batches", RANGE)
    assert sorted((b.origin, b.seq) for b in batches.batches if b.origin == ORIGIN_A) == [
        (ORIGIN_A, 0),
        (ORIGIN_A, 1),
    ]
    assert all(b.verified for b in batches.batches) and batches.total == len(batches.batches)

    batch = _module("api.lead.lead_get_batch").sync(ORIGIN_A, 0, client=client)
    _typed(batch, "LeadBatch", f"{lead.base_url}/v1/batches/{ORIGIN_A}/0")
    header = batch.document.additional_properties["_source"]

    summary = _module("api.lead.lead_get_summary").sync(ORIGIN_A, 0, 1, client=client)
    _typed(summary, "LeadSummary", f"{lead.base_url}/v1/summaries/{ORIGIN_A}/0/1")
    inclusion = summary.inclusion
    # Format 2: the leaf is the RFC 8785 form of the searchable fields (att holds its hash).
    source = summary.document.additional_properties["_source"]
    leaf = canonical_json({key: value for key, value in source.items() if key != "att"})
    assert base64.b64decode(inclusion.leaf_hash) == leaf_hash(leaf)
    assert inclusion.leaf_hash == source["att"]["leaf_hash"]
    assert inclusion.root == header["root"] and inclusion.tree_size == header["n"]
    assert verify_inclusion(
        base64.b64decode(inclusion.leaf_hash),
        inclusion.leaf_index,
        inclusion.tree_size,
        [base64.b64decode(p) for p in inclusion.proof],
        base64.b64decode(inclusion.root),
    )

    checkpoints = _module("api.lead.lead_list_checkpoints").sync(ORIGIN_A, client=client)
    _typed(checkpoints, "LeadCheckpoints", f"{lead.base_url}/v1/checkpoints/{ORIGIN_A}")
    assert checkpoints.latest is not None and checkpoints.latest.seq == 1
    assert [c.seq for c in checkpoints.checkpoints] == [1, 0]
    assert checkpoints.checkpoints[1].note == header["checkpoint"]

    operators = _module("api.lead.lead_list_operators").sync(client=client)
    _typed(operators, "LeadOperators", lead.base_url + "/v1/operators")
    assert {o.origin: o.state.value for o in operators.operators}[ORIGIN_A] == "verified"


def test_problems_are_typed(generated: ModuleType, lead: ThreadedLead) -> None:
    """A problem answer parses into its status's model, not into nothing."""
    client = _module("client").AuthenticatedClient(base_url=lead.base_url, token=TOKEN)
    missing = _module("api.lead.lead_get_batch").sync(ORIGIN_A, 99, client=client)
    assert isinstance(missing, _module("models").Problem404)
    assert missing.type_ == "urn:relay:problem:not-found" and missing.status == 404
    backwards = _module("api.lead.lead_list_nodes").sync(client=client, from_=TO, to=FROM)
    assert isinstance(backwards, _module("models").Problem400)
    assert backwards.type_ == "urn:relay:problem:invalid-range"
    anonymous = _module("client").Client(base_url=lead.base_url)
    refused = _module("api.lead.lead_list_operators").sync(client=anonymous)
    assert isinstance(refused, _module("models").Problem401)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[ThreadedRelay]:
    ingest = {"rate_limit": {"enabled": False}, "auth": {"bearer_tokens": {"app": TOKEN}}}
    with running_relay(tmp_path / "data", ingest=ingest) as running:
        yield running


def test_operator_api(generated: ModuleType, relay: ThreadedRelay) -> None:
    models = _module("models")
    client = _module("client").Client(base_url=relay.base_url, raise_on_unexpected_status=True)
    config = _module("api.operator.get_client_config").sync(client=client)
    assert isinstance(config, models.ClientConfigDocument)
    settings = relay.settings.client
    assert config.max_batch_size == settings.max_batch_size
    assert config.flush_interval_seconds == settings.flush_interval_seconds

    body = models.NativePayload.from_dict({"events": [_event(f"c{i}") for i in range(3)]})
    authed = _module("client").AuthenticatedClient(
        base_url=relay.base_url, token=TOKEN, raise_on_unexpected_status=True
    )
    answer = _module("api.operator.post_events").sync(client=authed, body=body)
    assert isinstance(answer, models.IngestAnswer)
    assert (answer.accepted, answer.rejected, answer.errors) == (3, 0, [])

    relay.clock.advance(70)
    assert relay.relay is not None
    assert relay.run(relay.relay.seal_due()) == 1
    view = _module("api.operator.get_operator").sync(client=client)
    assert isinstance(view, models.OperatorView)
    assert view.to_dict() == relay.relay.operator_view()
    assert view.head is not None and view.head.seq == 0
    assert isinstance(view.privacy, models.AggregatePrivacy) and view.privacy.k == 3

    health = _module("api.operator.get_health").sync(client=client)
    assert isinstance(health, models.Health)
