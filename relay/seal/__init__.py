"""Sealing: a due window's state becomes a signed batch in the outbox (DESIGN §5.3, §6).

`release` decides what a window publishes (the k-threshold roll-up or the dp release),
`batch` turns a span of window state into a signed batch with its documents and checkpoint (a
pure function), and `stage` runs it against the relay's WAL, windows and outbox: commit first,
then forget.
"""
