"""The lead's small pieces: time parameters, status thresholds, batch selections."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from relay.config import LeadThresholds
from relay.lead.health import (
    OriginPrivacy,
    coverage_of,
    percentiles_ms,
    reporters_at_least,
    status_of,
)
from relay.lead.tally import BatchSelection, Tally
from relay.lead.timerange import RangeError, TimeRange, parse_instant, parse_range, parse_step

EPOCH_2026 = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1767571200000", EPOCH_2026),
        ("2026-01-05T00:00:00Z", EPOCH_2026),
        ("2026-01-05t00:00:00.25z", EPOCH_2026 + 250),
        ("2026-01-05 01:30:00+01:30", EPOCH_2026),
        ("2026-01-04T22:00:00.123456-02:00", EPOCH_2026 + 123),
        ("2016-12-31T23:59:60Z", int(datetime(2017, 1, 1, tzinfo=UTC).timestamp() * 1000)),
    ],
)
def test_instants(text: str, expected: int) -> None:
    assert parse_instant("from", text) == expected


def test_instant_bounds_are_the_specs() -> None:
    """openapi.yaml's LeadFrom/LeadTo: an integer from 0 to 2^53 - 1 (schemathesis found 2^53)."""
    assert parse_instant("to", "0") == 0
    assert parse_instant("to", "9007199254740991") == 2**53 - 1


@pytest.mark.parametrize(
    "text",
    ["yesterday", "2026-02-30T00:00:00Z", "2026-01-05", "1e12", "-1", "9007199254740992"],
)
def test_bad_instants(text: str) -> None:
    with pytest.raises(RangeError, match=r"^from "):
        parse_instant("from", text)


def test_ranges_and_steps() -> None:
    assert parse_range(None, None, 100_000_000) == TimeRange(100_000_000 - 86_400_000, 100_000_000)
    assert parse_range("5", None, 100) == TimeRange(5, 100)
    with pytest.raises(RangeError, match="before"):
        parse_range("100", "100", 0)
    day = TimeRange(0, 86_400_000)
    assert [parse_step(s, day) for s in (None, "300", "30s", "5m", "1h", "1d")] == [
        None,
        300_000,
        30_000,
        300_000,
        3_600_000,
        86_400_000,
    ]
    assert parse_step("9s", day) == 9_000  # 9 600 points: allowed
    for bad in ("0", "5w", "-5m", "8s"):  # 8s: 10 800 points
        with pytest.raises(RangeError):
            parse_step(bad, day)


def test_status_thresholds() -> None:
    t = LeadThresholds()
    assert status_of(9, "both", 0.5, None, None, t) == (
        "unknown",
        ["only 9 requests in this period: too few to judge"],
    )
    assert status_of(10, "both", 0.49, None, None, t) == ("down", ["51.0 % of requests failed"])
    assert status_of(10, "both", 0.5, None, None, t) == ("degraded", ["50.0 % of requests failed"])
    assert status_of(100, "both", 0.95, 2000.0, 9e6, t) == ("healthy", [])
    assert status_of(100, "both", 0.99, 2100.0, None, t)[0] == "degraded"
    strict = LeadThresholds(degraded_duration_p90_ms=5000, degraded_ttfb_p90_ms=None)
    assert status_of(100, "both", 0.99, 9e6, 6000.0, strict) == (
        "degraded",
        ["slow downloads: 1 in 10 took over 6.0 s"],
    )
    with pytest.raises(ValueError, match="down_success_ratio"):
        LeadThresholds(down_success_ratio=0.9, degraded_success_ratio=0.8)


def test_one_sided_data_is_never_down_nor_healthy() -> None:
    t = LeadThresholds()
    assert [coverage_of(*counts) for counts in ((0, 0), (5, 0), (5, 5), (5, 3))] == [
        "none",
        "failures_only",
        "successes_only",
        "both",
    ]
    # Thousands of failures without a success: no share failed is known, so no verdict.
    status, reasons = status_of(5000, "failures_only", None, None, None, t)
    assert status == "unknown" and reasons[0].startswith("5000 failed requests reported")
    # Successes alone: not healthy, but slow successes still make the node degraded.
    status, reasons = status_of(5000, "successes_only", None, 300.0, None, t)
    assert status == "unknown" and reasons[0].startswith("5000 requests reported OK")
    assert status_of(5000, "successes_only", None, 2500.0, None, t) == (
        "degraded",
        ["slow to start: 1 in 10 requests waited over 2.5 s"],
    )
    # Too few requests still says so first.
    assert status_of(3, "failures_only", None, None, None, t)[1] == [
        "only 3 requests in this period: too few to judge"
    ]


def test_reporters_floor_is_the_smallest_k_and_none_with_dp() -> None:
    tally = Tally(origins={"a": 2, "b": 1})
    assert reporters_at_least(tally, {"a": OriginPrivacy(k=10), "b": OriginPrivacy(k=5)}) == 5
    assert reporters_at_least(tally, {"a": OriginPrivacy(k=10)}) is None  # b's k unknown
    dp = {"a": OriginPrivacy(k=10), "b": OriginPrivacy(scale=4)}
    assert reporters_at_least(tally, dp) is None  # b's cells are not published by k
    assert reporters_at_least(Tally(), {}) is None


def test_percentiles_of_a_foreign_histogram_are_unknown() -> None:
    # 12345 is not a representative value of relay's layout: unverified data can hold anything.
    assert percentiles_ms({12345: 1}) == {"p50": None, "p90": None, "p99": None}
    assert percentiles_ms({}) == {"p50": None, "p90": None, "p99": None}


def test_batch_selection_ranges() -> None:
    batches = {("b", 0), ("a", 3), ("a", 1), ("a", 2), ("a", 7), ("b", 1)}
    included = BatchSelection.of(batches, include=True)
    assert included.ranges == (("a", 1, 3), ("a", 7, 7), ("b", 0, 1))
    assert included.contains("a", 2) and not included.contains("a", 5)
    excluded = BatchSelection.of(batches, include=False)
    assert excluded.contains("a", 5) and not excluded.contains("b", 1)
    assert excluded.contains("c", 0)
