"""Sinks: where signed documents go (embedded store, Elasticsearch, NDJSON)."""
