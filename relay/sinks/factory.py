"""The sink `sink.type` names, built from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.sinks.base import Sink
from relay.sinks.dead_letter import DeadLetterFile
from relay.sinks.elasticsearch import ElasticsearchSink, make_client
from relay.sinks.local import NdjsonSink, StoreSink

if TYPE_CHECKING:
    from relay.config import Settings
    from relay.metrics import RelayMetrics

__all__ = ["make_sink"]


def make_sink(settings: Settings, metrics: RelayMetrics) -> Sink:
    sink = settings.sink
    if sink.type == "store":
        return StoreSink(settings.data_dir / "store.sqlite")
    if sink.type == "ndjson":
        return NdjsonSink(sink.path or settings.data_dir / "documents.ndjson")
    assert sink.url is not None  # SinkConfig requires it for elasticsearch
    client = make_client(
        sink.url,
        api_key=sink.api_key.get_secret_value() if sink.api_key else None,
        ca_certs=sink.ca_certs,
        request_timeout=sink.request_timeout_seconds,
    )
    dead_letters = DeadLetterFile(settings.data_dir / "dead-letter.ndjson")
    return ElasticsearchSink(client, dead_letters, metrics)
