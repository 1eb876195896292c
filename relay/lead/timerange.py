"""Time ranges of the lead API: `from` / `to` as epoch milliseconds or RFC 3339, and `step`.

A range is half-open, [from, to): a summary belongs to it when its window starts inside it.
Without `to` the range ends now; without `from` it starts 24 hours before its end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from relay.core.numbers import MAX_SAFE_INT

__all__ = [
    "DEFAULT_SPAN_MS",
    "MAX_POINTS",
    "RangeError",
    "TimeRange",
    "parse_instant",
    "parse_range",
    "parse_step",
]

DEFAULT_SPAN_MS = 24 * 3600 * 1000
#: The most points one series answer holds (a chart is a few hundred pixels wide anyway).
MAX_POINTS = 10_000

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)
_STEP = re.compile(r"^([0-9]{1,9})([smhd]?)$")
_UNIT_MS = {"": 1000, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class RangeError(ValueError):
    """A `from`, `to` or `step` that cannot be used; the message names the parameter."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    from_ms: int
    to_ms: int


def parse_instant(name: str, text: str) -> int:
    """Epoch milliseconds from an integer in [0, 2^53 - 1] (openapi.yaml's bounds) or an RFC 3339
    date-time (leap second 60 allowed)."""
    if re.fullmatch(r"[0-9]{1,16}", text):
        if int(text) > MAX_SAFE_INT:
            raise RangeError(f"{name} must be at most 2^53 - 1 epoch milliseconds")
        return int(text)
    match = _RFC3339.match(text)
    if match is None:
        raise RangeError(f"{name} must be epoch milliseconds or an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7) or "", match.group(8)
    # RFC 3339 allows second 60 (a leap second); it is the same instant as :59 plus one second.
    leap = second == 60
    try:
        offset = UTC
        if zone not in ("Z", "z"):
            sign = 1 if zone[0] == "+" else -1
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            offset = timezone(sign * timedelta(hours=hours, minutes=minutes))
        moment = datetime(year, month, day, hour, minute, 59 if leap else second, tzinfo=offset)
    except ValueError as exc:
        raise RangeError(f"{name} is not a valid date-time: {exc}") from None
    millis = int((fraction + "000")[:3])
    epoch = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (epoch.days * 86_400 + epoch.seconds + leap) * 1000 + millis


def parse_range(start: str | None, end: str | None, now_ms: int) -> TimeRange:
    to_ms = now_ms if end is None else parse_instant("to", end)
    from_ms = to_ms - DEFAULT_SPAN_MS if start is None else parse_instant("from", start)
    if from_ms >= to_ms:
        raise RangeError("from must be before to")
    return TimeRange(from_ms, to_ms)


def parse_step(text: str | None, time_range: TimeRange) -> int | None:
    """A step in milliseconds (`300`, `30s`, `5m`, `1h`, `1d`; plain numbers are seconds).

    None means one point per window. A step that would give more than MAX_POINTS points over
    the range is refused.
    """
    if text is None:
        return None
    match = _STEP.match(text)
    if match is None or int(match.group(1)) == 0:
        raise RangeError("step must be a positive whole number of s, m, h or d, such as 5m")
    step_ms = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if (time_range.to_ms - time_range.from_ms) // step_ms > MAX_POINTS:
        raise RangeError(f"step is too small for the range: more than {MAX_POINTS} points")
    return step_ms
