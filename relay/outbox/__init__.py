"""Outbox: sealed, signed batches kept durably until every sink has them (DESIGN §6)."""
