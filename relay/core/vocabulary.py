"""The words of the native schema (DESIGN §3.1, pinned) and the one node-id pattern.

Input models, the fast decoder, configuration, the DP release, the index mappings and the lead all
name roles, ops, outcomes, signals and assets: these Literals are their single definition.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import StringConstraints, with_config
from typing_extensions import TypedDict

__all__ = [
    "NETWORK_WIDE",
    "NODE_ID",
    "NODE_ID_MAX",
    "NODE_ID_PYTHON_PATTERN",
    "NODE_ID_SCHEMA_PATTERN",
    "Asset",
    "NodeId",
    "NodeRef",
    "Op",
    "Outcome",
    "Role",
    "Signal",
    "is_node_id",
]

Role = Literal["distributor", "storage"]
Op = Literal["download", "upload", "probe"]
Outcome = Literal[
    "ok", "timeout", "http_4xx", "http_5xx", "dns", "tls", "connection", "aborted", "other"
]
Signal = Literal[
    "blacklisted", "playback_slow", "playback_codec", "missing_operators", "upload_failed"
]
Asset = Literal["video", "image", "other"]

# A node id: 1 to 128 of these characters. One definition, spelled for each regex engine below.
_NODE_ID_CHARS = "[A-Za-z0-9:._-]"
NODE_ID_MAX: Final = 128
#: As the JSON Schemas publish it (ECMA-262 and pydantic's Rust regex: `$` is the end of text).
NODE_ID_SCHEMA_PATTERN: Final = f"^{_NODE_ID_CHARS}+$"
#: For Python's `re` (msgspec): `\Z`, since `$` there also matches before a final newline, which
#: would make "a\n" a second node.
NODE_ID_PYTHON_PATTERN: Final = f"^{_NODE_ID_CHARS}+\\Z"
#: The whole rule, length included, for `fullmatch`.
NODE_ID: Final = re.compile(f"{_NODE_ID_CHARS}{{1,{NODE_ID_MAX}}}")

#: The storage cell that network-wide signals land on (`missing-operators-for-bag`): reserved,
#: never a host (hosts have no `_`) nor a bucket id (digits), so the Atlas path never names it.
NETWORK_WIDE: Final = "_all"


def is_node_id(text: str) -> bool:
    """True if ``text`` is a valid node id (the reserved NETWORK_WIDE is one)."""
    return NODE_ID.fullmatch(text) is not None


#: A node id as documents carry it: the whole rule as a pydantic-annotated type.
NodeId = Annotated[
    str, StringConstraints(min_length=1, max_length=NODE_ID_MAX, pattern=NODE_ID_SCHEMA_PATTERN)
]


# A node as events, the configuration's node list and published summaries name it: a TypedDict,
# so documents are typed by it and the JSON Schemas generated from it (no docstring: it would
# become the schemas' description).
@with_config(extra="forbid", strict=True)
class NodeRef(TypedDict):
    role: Role
    id: NodeId
