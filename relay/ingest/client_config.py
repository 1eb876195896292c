"""The client config document (DESIGN §3.3): what apps should send, with a cheap ETag."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import orjson
from pydantic import Field, with_config
from typing_extensions import TypedDict

from relay.config import ClientConfig
from relay.ingest.models import SCHEMA_VERSION

__all__ = ["ClientConfigDocument", "RenderedClientConfig"]

_Kind = Literal["request", "signal"]


@with_config(extra="forbid")
class ClientConfigDocument(TypedDict):
    """`GET /v1/config`: what apps should send (§3.3)."""

    schema_version: Annotated[int, Field(ge=1)]
    enabled_kinds: list[_Kind]
    sampling: dict[_Kind, Annotated[float, Field(ge=0, le=1)]]
    flush_interval_seconds: Annotated[int, Field(ge=1)]
    max_batch_size: Annotated[int, Field(ge=1)]


class RenderedClientConfig:
    """`GET /v1/config`, rendered once per (re)load so a poll costs no work."""

    def __init__(self, config: ClientConfig) -> None:
        doc: ClientConfigDocument = {
            "schema_version": SCHEMA_VERSION,
            "enabled_kinds": config.enabled_kinds,
            "sampling": config.sampling,
            "flush_interval_seconds": config.flush_interval_seconds,
            "max_batch_size": config.max_batch_size,
        }
        self.body = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'
        self.max_age = config.max_age_seconds
