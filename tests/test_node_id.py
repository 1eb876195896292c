"""Drift 1 (issue 14): one node-id rule. Every check that decides whether a string is a node id
accepts and rejects the same strings; the only difference is the reserved NETWORK_WIDE, which
the Atlas path never names itself."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import msgspec
import orjson
import pydantic
import pytest

from relay.core.vocabulary import NETWORK_WIDE, NodeRef, is_node_id
from relay.ingest import decode
from relay.ingest.atlas import scrub_atlas
from relay.ingest.decode import decode_atlas
from tests.conftest import memory_admission
from tests.test_atlas import CTX

VALID = ["a", "1:3", "0", "mrbovo.distributor.cc:8443", "A-z_0.9", "x" * 128, NETWORK_WIDE]
INVALID = ["", "a\n", "\na", "a\r", "a b", " ", "x" * 129, "é", "a/b", "a\x00", "<script>", "a+b"]


def pydantic_model(candidate: str) -> bool:
    # The node refs of input models, configuration and summaries (relay.core.vocabulary.NodeRef).
    try:
        pydantic.TypeAdapter(NodeRef).validate_json(
            orjson.dumps({"role": "storage", "id": candidate})
        )
    except pydantic.ValidationError:
        return False
    return True


def fast_decoder(candidate: str) -> bool:
    # The msgspec decoder of native bodies (relay.ingest.decode).
    try:
        msgspec.json.decode(orjson.dumps({"role": "storage", "id": candidate}), type=decode.NodeRef)
    except msgspec.ValidationError:
        return False
    return True


def atlas_path(candidate: str) -> bool:
    # An Atlas event naming a distributor by id, decoded and scrubbed as the handler does.
    event = {"type": "distributor-response-timeout", "distributorId": candidate, "user": {}}
    body = orjson.dumps({"events": [event]})
    result = scrub_atlas(decode_atlas(body, 1000).events, CTX, memory_admission())
    return bool(result.observations)


CHECKS: dict[str, Callable[[str], bool]] = {
    "is_node_id": is_node_id,
    "pydantic NodeRef": pydantic_model,
    "msgspec NodeRef": fast_decoder,
    "atlas": atlas_path,
}


@pytest.mark.parametrize("name", CHECKS)
def test_every_check_accepts_and_rejects_the_same_ids(name: str) -> None:
    check = CHECKS[name]
    accepted = {c for c in VALID + INVALID if check(c)}
    expected = set(VALID) - ({NETWORK_WIDE} if name == "atlas" else set())
    assert accepted == expected


def test_the_pattern_is_written_once() -> None:
    # Any other copy of the character class in relay's Python code is a second definition.
    root = Path(__file__).parent.parent / "relay"
    spelled = re.compile(r"A-Za-z0-9:\._-")
    holders = [
        str(p.relative_to(root))
        for p in sorted(root.rglob("*.py"))
        if spelled.search(p.read_text(encoding="utf-8"))
    ]
    assert holders == ["core/vocabulary.py", "verify/leaves.py"]  # leaves: its docstring
