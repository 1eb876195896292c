"""schemas/ and openapi.yaml: current, valid, and true of what relay actually reads and writes.

- the committed files are exactly what `python -m relay.schemagen` generates (drift check);
- documents shipped by a real relay validate against the document schemas, and documents with
  anything more (an identifier, say) do not;
- example payloads, including a real Atlas one, validate against the payload schemas, and the
  native schema agrees with the NativeEvent models on what is an acceptable event;
- the component schemas of openapi.yaml are the generated ones.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, get_args

import jsonschema_rs
import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from relay import schemagen
from relay.core.document import Document
from relay.core.vocabulary import Asset, Op, Outcome, Signal
from relay.ingest.models import NativeEvent, NativePayload
from relay.lead.health import LeadFiguresOps, LeadFiguresOutcomes, LeadSignals
from relay.registry import Registry
from tests import atlas_client
from tests.conftest import RunningRelay, request_event, signal_event, stored_documents

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
OPENAPI = ROOT / "openapi.yaml"

BATCH = "batch-document.schema.json"
SUMMARY = "summary-document.schema.json"
NATIVE = "native-event.schema.json"
ATLAS = "atlas-payload.schema.json"
REGISTRY = "registry.schema.json"


def validator(name: str) -> jsonschema_rs.Validator:
    """A draft 2020-12 validator of the committed schema `name`, formats asserted."""
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return jsonschema_rs.validator_for(schema, validate_formats=True)


def errors(name: str, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.instance_path))}: {e.message}"
        for e in validator(name).iter_errors(instance)
    ]


# -- drift ----------------------------------------------------------------------------------------


def test_committed_schemas_are_what_schemagen_writes(tmp_path: Path) -> None:
    written = schemagen.write(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in SCHEMAS.glob("*.json"))
    for path in written:
        committed = (SCHEMAS / path.name).read_bytes()
        assert committed == path.read_bytes(), (
            f"schemas/{path.name} is stale: run python -m relay.schemagen"
        )


def test_generation_is_deterministic_and_formatted() -> None:
    first, second = schemagen.generate(), schemagen.generate()
    assert first == second
    for name, text in first.items():
        assert text.endswith("}\n") and not text.endswith("\n\n"), name
        canonical = json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
        assert text == canonical + "\n"
        assert json.loads(text)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_check_names_each_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schemas"
    openapi = tmp_path / "openapi.yaml"
    openapi.write_text(OPENAPI.read_text(encoding="utf-8"), encoding="utf-8")
    schemagen.write(out)
    args = ["--out", str(out), "--openapi", str(openapi)]
    assert schemagen.main(["--check", *args]) == 0

    (out / NATIVE).write_text("{}\n", encoding="utf-8")
    (out / REGISTRY).unlink()
    openapi.write_text(openapi.read_text(encoding="utf-8") + "    Extra: {}\n", encoding="utf-8")
    capsys.readouterr()
    assert schemagen.main(["--check", *args]) == 1
    reported = capsys.readouterr().out
    assert str(out / NATIVE) in reported
    assert str(out / REGISTRY) in reported
    assert str(openapi) in reported
    assert str(out / BATCH) not in reported

    assert schemagen.main(args) == 0
    assert schemagen.main(["--check", *args]) == 0
    assert openapi.read_text(encoding="utf-8") == OPENAPI.read_text(encoding="utf-8")


def test_repository_check_passes() -> None:
    assert schemagen.main(["--check"]) == 0


@pytest.mark.parametrize("name", sorted(schemagen.SCHEMA_FILES))
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema_rs.meta.validate(schema)


# -- documents as shipped -------------------------------------------------------------------------


def _native_traffic() -> list[dict[str, Any]]:
    """Events from five contributors: published cells with every field, and one under k."""
    events: list[dict[str, Any]] = []
    for i in range(5):
        client = f"client-{i}"
        events += [
            request_event(
                "1:0:5",
                client=client,
                ttfb_ms=40 + 13 * i,
                duration_ms=900 + 100 * i,
                bytes=1_000_000 * (i + 1),
                asset="video",
            ),
            request_event("1:0:5", outcome="timeout", client=client, op="probe"),
            request_event("1:0:5", outcome="http_5xx", client=client, asset="image"),
            signal_event("1:0:5", client=client),
        ]
    for i in range(3):
        storage = {"role": "storage", "id": "7"}
        events.append({**request_event(client=f"client-{i}", op="upload"), "node": storage})
    events.append(request_event("storage-9", client="lonely"))  # one contributor: suppressed
    events.append({**request_event("1:0:5", client="x"), "user_id": "u-1"})  # rejected: invalid
    events.append(request_event("1:0:5", client="x", ts=1))  # rejected: too_old
    return events


def _atlas_traffic() -> dict[str, Any]:
    # Both of the real client's flushes (tests/atlas_client.py), from three logged-in users.
    events = []
    for n in range(3):
        user = atlas_client.logged_in(n)
        events += atlas_client.performance_batch(user, 4, seed=n) + atlas_client.error_batch(user)
    return {"events": events}


def _kind(document: Document) -> str:
    return SUMMARY if "|s|" in document.id else BATCH


async def _produce(relay_server: RunningRelay) -> None:
    answer = await relay_server.post_per_client("/v1/events", _native_traffic())
    assert (answer["accepted"], answer["rejected"]) == (24, 2)
    answer = await relay_server.post_per_client("/v1/atlas/events", _atlas_traffic()["events"])
    assert (answer["accepted"], answer["rejected"], answer["unsupported"]) == (48, 0, 21)
    assert await relay_server.seal_after(70) == 1
    # Five empty windows later: one gap batch spanning them (DESIGN §5.3).
    assert await relay_server.seal_after(300) == 1


def _check_documents(documents: list[Document]) -> None:
    kinds = [_kind(d) for d in documents]
    assert kinds.count(BATCH) == 2
    assert kinds.count(SUMMARY) >= 2
    for document in documents:
        wire = json.loads(document.to_line())
        assert errors(_kind(document), wire) == [], document.id
    batches = [d.source for d in documents if _kind(d) == BATCH]
    assert batches[0]["stats"]["suppressed_cells"] == 1
    assert batches[0]["stats"]["rejected"] == 2
    assert batches[1].get("gap") is True
    summaries = [d.source for d in documents if _kind(d) == SUMMARY]
    assert any(s["ttfb_us"]["values"] and s["throughput_bps"]["values"] for s in summaries)


async def test_shipped_documents_validate(relay_server: RunningRelay, data_dir: Path) -> None:
    await _produce(relay_server)
    relay = relay_server.relay
    assert await relay.shipper.ship_pending()
    _check_documents(stored_documents(data_dir))


async def test_dp_mode_documents_validate(start_relay: Any, data_dir: Path) -> None:
    nodes = [{"role": "distributor", "id": "d1"}, {"role": "storage", "id": "s1"}]
    running: RunningRelay = await start_relay(privacy={"mode": "dp", "nodes": nodes})
    status, _ = await running.post("/v1/events", {"events": _native_traffic()})
    assert status == 202
    assert await running.seal_after(70) == 1
    assert await running.relay.shipper.ship_pending()
    documents = stored_documents(data_dir)
    assert sum(_kind(d) == SUMMARY for d in documents) == 2 * 8  # every listed node × region
    for document in documents:
        assert errors(_kind(document), json.loads(document.to_line())) == [], document.id


async def test_ndjson_lines_validate(start_relay: Any, data_dir: Path) -> None:
    running: RunningRelay = await start_relay(sink={"type": "ndjson"})
    await _produce(running)
    assert await running.relay.shipper.ship_pending()
    lines = (data_dir / "documents.ndjson").read_bytes().splitlines()
    _check_documents([Document.from_line(line) for line in lines])


async def test_documents_with_anything_more_are_invalid(
    relay_server: RunningRelay, data_dir: Path
) -> None:
    await _produce(relay_server)
    assert await relay_server.relay.shipper.ship_pending()
    documents = stored_documents(data_dir)
    batch, summary = (json.loads(d.to_line()) for d in documents[:2])
    assert errors(BATCH, batch) == [] and errors(SUMMARY, summary) == []

    tampered: list[tuple[str, dict[str, Any]]] = []
    for name, doc, path, value in (
        (SUMMARY, summary, ("_source", "client"), "client-0"),
        (SUMMARY, summary, ("_source", "ip"), "203.0.113.9"),
        (SUMMARY, summary, ("_source", "ttfb_us", "max"), 93),
        (SUMMARY, summary, ("_source", "node", "url"), "https://d.example.org/"),
        (SUMMARY, summary, ("_source", "region"), "Paris"),
        (SUMMARY, summary, ("_source", "outcomes", "teapot"), 1),
        (SUMMARY, summary, ("_source", "att", "proof"), ["not base64"]),
        (BATCH, batch, ("_source", "sig"), "c2ln"),
        (BATCH, batch, ("_source", "stats", "accepted"), -1),
        (BATCH, batch, ("_source", "privacy", "salt"), "00"),
        (BATCH, batch, ("_id",), "test.relay/one|s|0|0"),
        (BATCH, batch, ("extra",), True),
    ):
        changed = copy.deepcopy(doc)
        target = changed
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        tampered.append((name, changed))
    for name, changed in tampered:
        assert errors(name, changed), changed


async def test_registry_written_by_relay_validates(
    relay_server: RunningRelay, data_dir: Path
) -> None:
    registry = yaml.safe_load((data_dir / "registry.yaml").read_text(encoding="utf-8"))
    assert errors(REGISTRY, registry) == []
    assert Registry.model_validate(registry).operators[0].origin == "test.relay/one"
    registry["operators"][0]["keys"][0]["valid_from_seq"] = -1
    assert errors(REGISTRY, registry)


# -- payloads -------------------------------------------------------------------------------------


def test_schema_examples_validate() -> None:
    for name in (NATIVE, ATLAS):
        examples = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))["examples"]
        assert examples
        for example in examples:
            assert errors(name, example) == [], name
    (native,) = schemagen.schema_of(NATIVE)["examples"]
    NativePayload.model_validate(native)


def test_real_atlas_payload_validates() -> None:
    # Every body the real client builds (tests/atlas_client.py, Atlas 9a42847ca), whatever the
    # user's state, validates: the schema must not refuse what Atlas sends.
    for user in (atlas_client.logged_in(1), atlas_client.LOGGED_OUT, None):
        for events in (
            atlas_client.performance_batch(user, 50),
            atlas_client.error_batch(user),
            atlas_client.not_infrastructure(user),
        ):
            assert errors(ATLAS, {"events": events}) == []
    assert errors(ATLAS, {"events": [{"distributorId": "0:3:12"}]})  # type is required
    assert errors(ATLAS, {"events": "not a list"})
    # No cap in the schema: Atlas does not cap its batches; the handler counts what is past it.
    assert errors(ATLAS, {"events": [{"type": "x"}] * 1001}) == []


_REQUEST = {"kind": "request", "node": {"role": "storage", "id": "7"}, "outcome": "ok"}
_SIGNAL = {
    "kind": "signal",
    "node": {"role": "distributor", "id": "1:0:5"},
    "signal": "blacklisted",
}

# (event, valid?) where the JSON Schema and the pydantic model must agree.
AGREEMENT: list[tuple[dict[str, Any], bool]] = [
    (_REQUEST, True),
    (_SIGNAL, True),
    ({**_REQUEST, "op": "upload", "asset": "image", "bytes": 0, "ttfb_ms": 0.5}, True),
    ({**_REQUEST, "ts": 1767571200000, "client": "x" * 128, "duration_ms": 3_600_000}, True),
    ({**_REQUEST, "ts": "2026-01-05T00:00:00Z"}, True),
    ({**_REQUEST, "ts": "2026-01-05T01:00:00.250+01:00"}, True),
    ({**_REQUEST, "ts": None, "op": None, "asset": None, "client": None}, True),
    ({**_SIGNAL, "op": None, "outcome": None, "asset": "video", "ts": 5}, True),
    ({**_REQUEST, "user": {"accountId": "a"}}, False),  # unknown field: the privacy boundary
    ({**_REQUEST, "node": {"role": "storage", "id": "7", "url": "https://x"}}, False),
    ({**_REQUEST, "node": {"role": "storage", "id": "a/b"}}, False),
    ({**_REQUEST, "node": {"role": "storage", "id": "x" * 129}}, False),
    ({**_REQUEST, "node": {"role": "gateway", "id": "7"}}, False),
    ({"kind": "request", "node": _REQUEST["node"]}, False),  # request without outcome
    ({**_REQUEST, "outcome": None}, False),
    ({**_REQUEST, "signal": "blacklisted"}, False),
    ({"kind": "signal", "node": _SIGNAL["node"]}, False),  # signal without signal
    ({**_SIGNAL, "outcome": "ok"}, False),
    ({**_SIGNAL, "bytes": 10}, False),
    ({**_SIGNAL, "ttfb_ms": 1}, False),
    ({**_REQUEST, "outcome": "teapot"}, False),
    ({**_REQUEST, "ttfb_ms": -1}, False),
    ({**_REQUEST, "ttfb_ms": 600_000.5}, False),
    ({**_REQUEST, "duration_ms": 3_600_001}, False),
    ({**_REQUEST, "bytes": 2**40}, False),
    ({**_REQUEST, "bytes": 1.5}, False),
    ({**_REQUEST, "ts": -1}, False),
    ({**_REQUEST, "ts": "yesterday"}, False),
    ({**_REQUEST, "ts": "2026-01-05T00:00:00"}, False),  # no offset
    ({**_REQUEST, "client": "x" * 129}, False),
    ({**_REQUEST, "client": 5}, False),
    # No coercion: "12" is not a number and true is not 1.
    ({**_REQUEST, "ttfb_ms": "12.5"}, False),
    ({**_REQUEST, "bytes": "1024"}, False),
    ({**_REQUEST, "bytes": True}, False),
    ({**_REQUEST, "ts": True}, False),
    ({**_REQUEST, "ts": 1.5}, False),
    ({**_REQUEST, "node": {"role": "storage", "id": 7}}, False),
    ({**_REQUEST, "kind": "log"}, False),
]


@pytest.mark.parametrize(("event", "valid"), AGREEMENT)
def test_native_schema_agrees_with_the_model(event: dict[str, Any], valid: bool) -> None:
    by_schema = not errors(NATIVE, {"events": [event]})
    try:
        TypeAdapter(NativeEvent).validate_json(json.dumps(event))
        by_model = True
    except ValidationError:
        by_model = False
    assert (by_schema, by_model) == (valid, valid)


def test_native_envelope() -> None:
    assert errors(NATIVE, {"events": []}) == []
    assert errors(NATIVE, {"events": [_REQUEST] * 1001})
    assert errors(NATIVE, {"events": [], "token": "t"})
    assert errors(NATIVE, {})
    assert errors(NATIVE, [_REQUEST])


# RFC 3339 (§5.6) also allows a lower-case "t" and "z" and a leap second, which
# datetime.fromisoformat alone refuses; NativeEvent normalises them.
RFC3339_EDGES = ["2026-01-05t00:00:00z", "2026-01-05T00:00:00z", "2026-12-31T23:59:60Z"]


@pytest.mark.parametrize("ts", RFC3339_EDGES)
def test_model_accepts_every_rfc3339_timestamp(ts: str) -> None:
    assert errors(NATIVE, {"events": [{**_REQUEST, "ts": ts}]}) == []
    TypeAdapter(NativeEvent).validate_json(json.dumps({**_REQUEST, "ts": ts}))


# -- openapi.yaml ---------------------------------------------------------------------------------


def test_openapi_components_are_the_generated_schemas() -> None:
    document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    assert document["openapi"] == "3.1.0"
    assert document["components"]["schemas"] == schemagen.openapi_components()


def test_openapi_component_schemas_mean_what_schemas_mean() -> None:
    """A component, with its references resolved, is the schema file's document (the registry,
    read from a file and never sent over HTTP, is no component)."""
    document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    assert "Registry" not in document["components"]["schemas"]
    for name in schemagen.OPENAPI_SCHEMA_FILES:
        committed = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
        title = committed["title"]
        bundled = {
            **document["components"]["schemas"][title],
            "components": {"schemas": document["components"]["schemas"]},
        }
        by_component = jsonschema_rs.dereference(bundled)
        by_component.pop("components")
        by_file = jsonschema_rs.dereference(committed)
        for schema in (by_component, by_file):
            for key in ("$defs", "$schema", "description"):
                schema.pop(key, None)
        assert _without_discriminators(by_component) == _without_discriminators(by_file), name


def _without_discriminators(schema: Any) -> Any:
    """`discriminator` (an OpenAPI annotation) names its targets by reference: drop it."""
    if isinstance(schema, dict):
        return {k: _without_discriminators(v) for k, v in schema.items() if k != "discriminator"}
    if isinstance(schema, list):
        return [_without_discriminators(v) for v in schema]
    return schema


def test_openapi_operations_are_tagged_operator() -> None:
    document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    # The lead API's operations (tag lead, with their own `servers`) are checked by
    # tests/test_lead_openapi.py.
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method != "servers" and operation["tags"] != ["lead"]
    ]
    assert {(path, method) for path, method, _ in operations} == {
        ("/v1/events", "post"),
        ("/v1/atlas/events", "post"),
        ("/v1/config", "get"),
        ("/v1/client.js", "get"),
        ("/v1/operator", "get"),
        ("/v1/proof/consistency", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    }
    # Both programs serve these three, each with its own answers (described per operation);
    # relay serve's /metrics and detailed /readyz are on its operator listener (P9).
    expected = {
        "/healthz": ["operator", "lead"],
        "/readyz": ["operator", "metrics", "lead"],
        "/metrics": ["metrics", "lead"],
    }
    for path, _, operation in operations:
        assert operation["tags"] == expected.get(path, ["operator"]), path


def test_every_schema_is_a_component_and_every_reference_resolves() -> None:
    """What client generators need (issue 19): the lead's answers and a problem per status are
    components, and no reference points outside components.schemas or at nothing."""
    text = OPENAPI.read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    components = document["components"]["schemas"]
    assert "x-lead-schemas" not in document
    lead = {TypeAdapter(model).json_schema()["title"] for model in schemagen.LEAD_MODELS}
    assert lead <= set(components)
    for status in schemagen.PROBLEM_STATUSES:
        assert components[f"Problem{status}"]["properties"]["status"]["const"] == status
    references = set(re.findall(r"""\$ref: ['"]?([^'"\s]+)""", text))
    schema_refs = {r for r in references if r.startswith("#/components/schemas/")}
    assert {r.removeprefix("#/components/schemas/") for r in schema_refs} <= set(components)
    others = references - schema_refs
    assert all(re.fullmatch(r"#/components/(parameters|headers|responses)/\w+", r) for r in others)


def test_lead_count_objects_name_the_native_vocabulary() -> None:
    """The lead's outcomes, ops and signals objects list exactly what relay counts (every name is
    present in an answer, relay/lead/health.py), as typed properties a client generator keeps,
    and admit the other names unverified data may hold, as counts."""
    components = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))["components"]["schemas"]
    for model, names in (
        (LeadFiguresOutcomes, get_args(Outcome)),
        (LeadFiguresOps, get_args(Op)),
        (LeadSignals, get_args(Signal)),
    ):
        schema = TypeAdapter(model).json_schema()
        assert schema["required"] == list(names)
        assert list(schema["properties"]) == list(names)
        assert schema["additionalProperties"] == {"minimum": 0, "type": "integer"}
        assert components[schema["title"]]["required"] == list(names)


@pytest.mark.parametrize(
    ("field", "words"),
    [("op", Op), ("outcome", Outcome), ("signal", Signal), ("asset", Asset)],
)
def test_the_integrators_table_lists_each_vocabulary_exactly(field: str, words: Any) -> None:
    """docs/integrators.md's native-schema table names every word the schema takes, and no other
    (it once lacked `upload_failed`)."""
    text = (Path(__file__).parent.parent / "docs" / "integrators.md").read_text(encoding="utf-8")
    (row,) = [line for line in text.splitlines() if line.startswith(f"| `{field}` |")]
    type_cell = re.split(r"(?<!\\)\|", row)[2]  # cells split at unescaped bars
    assert set(re.findall(r'`"([a-z0-9_]+)"`', type_cell)) == set(get_args(words))
