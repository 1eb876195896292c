"""Ingest: the app-facing HTTP API, validation and scrubbing of observations."""
