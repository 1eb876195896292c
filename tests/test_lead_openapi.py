"""The running lead API conforms to openapi.yaml (tag lead), as the operator relay does.

A real lead (StoreSource over the fixture's documents, the aiohttp app) serves on a real socket
from its own thread and loop (tests/test_lead_data.py `ThreadedLead`). Schemathesis generates
requests from the document, positive and negative, and checks every answer: no 5xx, a documented
status code, content type and headers, a body matching its schema. Schema-valid requests must get
a 2xx, with two documented exceptions the schema cannot express: a 404 for a name that is not
stored (any generated origin or seq), and a 400 `invalid-range` for `from` not before `to` or a
too small `step`. The hand-written tests below validate answers generation does not reach: real
batches, summaries and checkpoints, unverified documents, and 401s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relay.lead.api import create_lead_app
from relay.lead.service import LeadService
from tests.test_lead_api import tamper
from tests.test_lead_data import ORIGIN_A, ORIGIN_B, RANGE, ThreadedLead, lead_settings

OPENAPI = Path(__file__).resolve().parent.parent / "openapi.yaml"
TIMEOUT = 10.0

_EXPECTED_PROBLEMS = {
    404: ("urn:relay:problem:not-found", "urn:relay:problem:unverified"),
    400: ("urn:relay:problem:invalid-range",),
}


def lead_positive_data_acceptance(ctx: Any, response: Any, case: schemathesis.Case) -> None:
    """A schema-valid request gets a 2xx, or one of the answers the schema cannot rule out."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or 200 <= response.status_code < 400:
        return
    allowed = _EXPECTED_PROBLEMS.get(response.status_code, ())
    kind = response.json().get("type") if allowed else None
    assert kind in allowed, f"valid request refused: {response.status_code} {response.text}"


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    lead_positive_data_acceptance,
]

schema = schemathesis.openapi.from_path(
    OPENAPI,
    config=schemathesis.Config.from_dict(
        {
            "generation": {
                "max-examples": 60,
                "deterministic": True,
                "no-shrink": True,
                "database": "none",
                "with-security-parameters": False,
            },
            "phases": {"stateful": {"enabled": False}},
            "request-timeout": TIMEOUT,
        }
    ),
).include(tag="lead")


@pytest.fixture(scope="module")
def live_lead(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedLead]:
    with ThreadedLead(tmp_path_factory.mktemp("lead")) as lead:
        yield lead


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_lead_api_conforms_to_openapi(case: schemathesis.Case, live_lead: ThreadedLead) -> None:
    case.call_and_validate(base_url=live_lead.base_url, checks=CHECKS, allow_redirects=False)


def _validate(
    operation: str, response: requests.Response, path: dict[str, Any] | None = None
) -> None:
    """Check a hand-made exchange with the same checks as the generated ones."""
    case = schema[operation]["GET"].Case(path_parameters=path)
    case.validate_response(response, checks=[c for c in CHECKS if c is not not_a_server_error])


def _exchange(
    lead: ThreadedLead, operation: str, path: dict[str, Any], params: dict[str, str]
) -> dict[str, Any]:
    response = requests.get(
        lead.base_url + operation.format(**path), params=params, timeout=TIMEOUT
    )
    assert response.status_code == 200, (operation, response.text)
    _validate(operation, response, path)
    body: dict[str, Any] = response.json()
    return body


REAL = [
    ("/v1/nodes", {}, RANGE),
    ("/v1/nodes/{role}/{id}/series", {"role": "distributor", "id": "d1"}, RANGE),
    ("/v1/operators", {}, {}),
    ("/v1/batches", {}, RANGE),
    ("/v1/batches/{origin}/{seq}", {"origin": ORIGIN_A, "seq": 0}, {}),
    ("/v1/summaries/{origin}/{seq}/{i}", {"origin": ORIGIN_A, "seq": 0, "i": 1}, {}),
    ("/v1/checkpoints/{origin}", {"origin": ORIGIN_A}, {}),
]


def test_real_documents_conform(live_lead: ThreadedLead) -> None:
    for operation, path, params in REAL:
        _exchange(live_lead, operation, path, params)
    page = requests.get(live_lead.base_url + "/dashboard", timeout=TIMEOUT)
    _validate("/dashboard", page)


def test_unverified_documents_conform(tmp_path: Path) -> None:
    with ThreadedLead(tmp_path) as lead:
        tamper(lead_settings(tmp_path), f"{ORIGIN_B}|s|0|0", requests="lots")
        assert lead.service is not None
        lead.run(lead.service.verification.refresh())
        flag = {"include_unverified": "true"}
        summary = {"origin": ORIGIN_B, "seq": 0, "i": 0}
        for operation, path, params in (
            ("/v1/nodes", {}, {**RANGE, **flag}),
            ("/v1/batches", {}, {**RANGE, **flag}),
            ("/v1/batches/{origin}/{seq}", {"origin": ORIGIN_B, "seq": 0}, flag),
            ("/v1/summaries/{origin}/{seq}/{i}", summary, flag),
            ("/v1/operators", {}, {}),
        ):
            _exchange(lead, operation, path, params)
        hidden = requests.get(
            lead.base_url + "/v1/summaries/{origin}/{seq}/{i}".format(**summary), timeout=TIMEOUT
        )
        assert hidden.status_code == 404
        _validate("/v1/summaries/{origin}/{seq}/{i}", hidden, summary)


def test_unauthorized_conforms(tmp_path: Path) -> None:
    with ThreadedLead(tmp_path, tokens={"lead": "t0ken"}) as lead:
        url = lead.base_url + "/v1/operators"
        response = requests.get(url, timeout=TIMEOUT)
        assert response.status_code == 401
        _validate("/v1/operators", response)
        good = requests.get(url, headers={"Authorization": "Bearer t0ken"}, timeout=TIMEOUT)
        assert good.status_code == 200


def test_every_route_is_documented_and_every_documented_path_served() -> None:
    document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method != "servers" and "lead" in operation["tags"]
    }
    app = create_lead_app(cast(LeadService, None), {})
    served = {
        (route.method, re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", route.resource.canonical))
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert served == documented
