"""From a tally to what a lead reads: ratios, percentiles, a status and its reasons in plain words.

A node is judged only on what its clients report (DESIGN §3.2, §8). Atlas reports successful
downloads but not failed ones, and failed uploads but not successful ones, so a series may hold
one side only. `coverage` says which sides the figures hold:

- both: ok requests and failed ones; the success ratio means what it says;
- successes_only: ok requests only: no success ratio (it would read 100 %), but the timings of
  those requests are real, so slowness can still make the node degraded;
- failures_only: failed requests only: no success ratio (it would read 0 %) and no verdict;
- none: no request at all (signals only).

Summaries count outcomes over all ops together (not per op), so coverage is decided per node,
region or point over all its requests; `ops` says which operations those were.

Status (thresholds in `lead.thresholds`, docs/leads.md "Node status"), first match wins:

- unknown: fewer than `min_requests` requests in the range: too little to judge; or one-sided
  data (failures only; successes only and not slow): nothing to judge the node on;
- down: success ratio (ok / requests) below `down_success_ratio` (0.5), with both sides reported;
- degraded: success ratio below `degraded_success_ratio` (0.95), or p90 time to first byte above
  `degraded_ttfb_p90_ms` (2 s), or p90 download time above `degraded_duration_p90_ms` (off);
- healthy: otherwise, with both sides reported.

Percentiles are nearest-rank over the exactly merged histograms (relay.aggregate.histogram), so
they carry the histogram's bound: within 5 % of a true value of the merged data.

In dp mode every published count carries discrete Laplace noise of scale b. A figure summed from
m noised counts gets a 95 % margin of ln(1/0.05)·√(Σ b²): for one count that is the exact
b·ln 20 (P(|Z| > t) ≤ e^(−t/b)), and for sums it stays above the normal approximation
1.96·√(2·Σ b²). `requests` is itself a sum of the noisy outcomes of each summary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from relay.aggregate import histogram
from relay.config import LeadThresholds
from relay.core.vocabulary import Op, Outcome, Signal
from relay.lead.tally import Tally

__all__ = [
    "SEVERITY",
    "Coverage",
    "OriginPrivacy",
    "coverage_of",
    "figures",
    "percentiles_ms",
    "reporters_at_least",
    "status_of",
]

OUTCOMES: Final[tuple[str, ...]] = get_args(Outcome)
SIGNALS: Final[tuple[str, ...]] = get_args(Signal)
OPS: Final[tuple[str, ...]] = get_args(Op)
Coverage = Literal["both", "successes_only", "failures_only", "none"]
#: Statuses from worst to best: the order the dashboard sorts by.
SEVERITY: Final[tuple[str, ...]] = ("down", "degraded", "unknown", "healthy")
_QUANTILES: Final = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
_LN20: Final = math.log(20)


@dataclass(frozen=True, slots=True)
class OriginPrivacy:
    """What an operator's batch headers in a range say about the guarantee of its summaries.

    k: the smallest `privacy.k` of its aggregate-mode batches (each published cell had at least
    k distinct contributors, P5); None when it has none. scale: the largest discrete Laplace
    scale of its dp-mode batches; None when it has none.
    """

    k: int | None = None
    scale: int | None = None


def percentiles_ms(counts: dict[int, int]) -> dict[str, float | None]:
    """p50, p90, p99 in milliseconds of a merged µs histogram.

    None where it is empty, or not a histogram of relay's layout (possible in unverified data).
    """
    values = sorted(counts)
    doc = {"values": values, "counts": [counts[value] for value in values]}
    result: dict[str, float | None] = dict.fromkeys(name for name, _ in _QUANTILES)
    try:
        for name, q in _QUANTILES:
            value = histogram.quantile(doc, q)
            result[name] = None if value is None else value / 1000
    except histogram.HistogramError:
        return dict.fromkeys(result)
    return result


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def coverage_of(requests: int, ok: int) -> Coverage:
    """Which sides of the outcome the requests of a series report."""
    if requests <= 0:
        return "none"
    if ok <= 0:
        return "failures_only"
    return "successes_only" if ok >= requests else "both"


def _slowness(
    ttfb_p90_ms: float | None, duration_p90_ms: float | None, thresholds: LeadThresholds
) -> list[str]:
    reasons = []
    slow_start = thresholds.degraded_ttfb_p90_ms
    if slow_start is not None and ttfb_p90_ms is not None and ttfb_p90_ms > slow_start:
        reasons.append(f"slow to start: 1 in 10 requests waited over {_seconds(ttfb_p90_ms)}")
    slow_load = thresholds.degraded_duration_p90_ms
    if slow_load is not None and duration_p90_ms is not None and duration_p90_ms > slow_load:
        reasons.append(f"slow downloads: 1 in 10 took over {_seconds(duration_p90_ms)}")
    return reasons


def status_of(
    requests: int,
    coverage: Coverage,
    success_ratio: float | None,
    ttfb_p90_ms: float | None,
    duration_p90_ms: float | None,
    thresholds: LeadThresholds,
) -> tuple[str, list[str]]:
    """The status and, for anything but healthy, the reasons in plain words.

    One-sided data is never `down` nor `healthy`: a count of failures without the successes
    beside it says nothing about the share that failed, and successes without failures cannot
    show that none failed. Slowness stays meaningful on successes alone (their timings are
    measured), so that can still make a node degraded.
    """
    if requests < thresholds.min_requests:
        return "unknown", [f"only {requests} requests in this period: too few to judge"]
    if coverage == "failures_only":
        return "unknown", [
            f"{requests} failed requests reported and no successful one: its clients report "
            "failures only (Atlas: uploads), so the share that failed is not known"
        ]
    slow = _slowness(ttfb_p90_ms, duration_p90_ms, thresholds)
    if coverage == "successes_only" or success_ratio is None:  # (the ratio is None only then)
        one_sided = (
            f"{requests} requests reported OK and no failed one: its clients report successes "
            "only (Atlas: downloads), so the share that failed is not known"
        )
        return ("degraded", slow) if slow else ("unknown", [one_sided])
    failed = f"{(1 - success_ratio) * 100:.1f} % of requests failed"
    if success_ratio < thresholds.down_success_ratio:
        return "down", [failed]
    reasons = [failed] if success_ratio < thresholds.degraded_success_ratio else []
    reasons += slow
    return ("degraded", reasons) if reasons else ("healthy", [])


def _noise(tally: Tally, privacy: Mapping[str, OriginPrivacy]) -> dict[str, Any] | None:
    scales = {o: scale for o, p in privacy.items() if (scale := p.scale) is not None}
    noised = {origin: n for origin, n in tally.origins.items() if origin in scales}
    if not noised:
        return None
    variance = sum(n * scales[origin] ** 2 for origin, n in noised.items())
    return {
        "scale": max(scales[origin] for origin in noised),
        "summaries": sum(noised.values()),
        "margin95": {
            "count": round(_LN20 * math.sqrt(variance), 1),
            "requests": round(_LN20 * math.sqrt(len(OUTCOMES) * variance), 1),
        },
    }


def _vocabulary(counts: dict[str, int], names: tuple[str, ...]) -> dict[str, int]:
    """Every name of the fixed vocabulary (zeros included), then any others seen, sorted."""
    extra = sorted(set(counts) - set(names))
    return {name: counts.get(name, 0) for name in (*names, *extra)}


def reporters_at_least(tally: Tally, privacy: Mapping[str, OriginPrivacy]) -> int | None:
    """A floor on the distinct contributors behind every summary counted in the tally.

    Each published aggregate-mode cell had at least its batch's k contributors (P5), so the
    smallest k over the counted operators holds for every summary. None when any counted
    operator has no such floor in the range (dp mode publishes a fixed node list, not by k).
    """
    floors: list[int] = []
    for origin in tally.origins:
        found = privacy.get(origin)
        if found is None or found.k is None or found.scale is not None:
            return None
        floors.append(found.k)
    return min(floors, default=None)


def figures(
    tally: Tally, thresholds: LeadThresholds, privacy: Mapping[str, OriginPrivacy]
) -> dict[str, Any]:
    """The numbers of a node (or a region of it, or a point of its series)."""
    requests = tally.requests
    ok = tally.outcomes.get("ok", 0)
    coverage = coverage_of(requests, ok)
    # Only a series reporting both sides has a meaningful ratio (module docstring).
    ratio = min(1.0, ok / requests) if coverage == "both" else None
    ttfb = percentiles_ms(tally.ttfb_us)
    duration = percentiles_ms(tally.duration_us)
    status, reasons = status_of(requests, coverage, ratio, ttfb["p90"], duration["p90"], thresholds)
    return {
        "status": status,
        "reasons": reasons,
        "coverage": coverage,
        "requests": requests,
        "outcomes": _vocabulary(tally.outcomes, OUTCOMES),
        "ops": _vocabulary(tally.ops, OPS),
        "success_ratio": ratio,
        "error_rate": None if ratio is None else 1 - ratio,
        "signals": _vocabulary(tally.signals, SIGNALS),
        "ttfb_ms": ttfb,
        "duration_ms": duration,
        "operators": sorted(tally.origins),
        "summaries": tally.summaries,
        "last_window_end_ms": tally.last_window_end_ms,
        "reporters_at_least": reporters_at_least(tally, privacy),
        "noise": _noise(tally, privacy),
    }
