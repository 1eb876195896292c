"""Index names (DESIGN §7, pinned): what the sinks write to and the configuration checks."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

__all__ = ["MAX_INDEX_NAME", "index_name", "origin_slug"]

#: Elasticsearch refuses index names longer than this many bytes.
MAX_INDEX_NAME: Final = 255
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def origin_slug(origin: str) -> str:
    """The origin as it appears in index names (DESIGN §7, pinned): lower-cased, every run of
    characters outside [a-z0-9] replaced by one `-` (`relay.example.org/eu-1` →
    `relay-example-org-eu-1`). Two origins can share a slug; that only lets their keys write each
    other's indices, and a 409 is still checked against the stored content."""
    return _NOT_SLUG.sub("-", origin.lower())


def index_name(prefix: str, kind: str, origin: str, window_start_ms: int) -> str:
    """`<prefix><kind>-<origin slug>-YYYY.MM`, the month (UTC) of the window start."""
    month = datetime.fromtimestamp(window_start_ms / 1000, tz=UTC).strftime("%Y.%m")
    return f"{prefix}{kind}-{origin_slug(origin)}-{month}"
