"""Schemathesis hooks shared by the pytest suite (imported by tests/test_openapi_conformance.py)
and the CLI (`hooks` in schemathesis.toml).

A case that declares `Content-Encoding: gzip` is sent with its body gzipped. Otherwise every case
with that header would only ever reach the documented bad-gzip answer (a 400 to a schema-valid
request, as schemathesis sees it), and the body behind it would never be exercised.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    headers = {name.lower(): value for name, value in (case.headers or {}).items()}
    if str(headers.get("content-encoding", "")).strip().lower() != "gzip":
        return
    sent = case.as_transport_kwargs(base_url="http://127.0.0.1")
    if "json" in sent:
        raw = json.dumps(sent["json"]).encode()
    elif isinstance(sent.get("data"), str):
        raw = sent["data"].encode()
    elif isinstance(sent.get("data"), bytes):
        raw = sent["data"]
    else:
        return
    kwargs["data"] = gzip.compress(raw)
