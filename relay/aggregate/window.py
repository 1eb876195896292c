"""Window arithmetic: event time → window start, and which windows are due to seal."""

from __future__ import annotations

__all__ = ["due_until", "window_start"]


def window_start(ts_ms: int, window_ms: int) -> int:
    """Start of the window holding `ts_ms`; windows are aligned to the Unix epoch."""
    return ts_ms - ts_ms % window_ms


def due_until(now_ms: int, window_ms: int, lateness_ms: int) -> int:
    """Every window that starts before the returned instant is due to seal at `now_ms`.

    A window [s, s + W) seals once `now >= s + W + lateness`.
    """
    return window_start(now_ms - lateness_ms, window_ms)
