"""The client config document (DESIGN §3.3): what apps should send, with a cheap ETag."""

from __future__ import annotations

import hashlib

import orjson

from relay.config import ClientConfig
from relay.ingest.models import SCHEMA_VERSION

__all__ = ["ClientConfigDocument"]


class ClientConfigDocument:
    """`GET /v1/config`, rendered once per (re)load so a poll costs no work."""

    def __init__(self, config: ClientConfig) -> None:
        doc = {
            "schema_version": SCHEMA_VERSION,
            "enabled_kinds": config.enabled_kinds,
            "sampling": config.sampling,
            "flush_interval_seconds": config.flush_interval_seconds,
            "max_batch_size": config.max_batch_size,
        }
        self.body = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'
        self.max_age = config.max_age_seconds
