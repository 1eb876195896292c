"""From a tally to what a lead reads: ratios, percentiles, a status and its reasons in plain words.

Status (thresholds in `lead.thresholds`, README "Node status"), first match wins:

- unknown: fewer than `min_requests` requests in the range: too little to judge;
- down: success ratio (ok / requests) below `down_success_ratio` (0.5), which includes a node
  that answered no request successfully;
- degraded: success ratio below `degraded_success_ratio` (0.95), or p90 time to first byte above
  `degraded_ttfb_p90_ms` (2 s), or p90 download time above `degraded_duration_p90_ms` (off);
- healthy: otherwise.

Percentiles are nearest-rank over the exactly merged histograms (relay.aggregate.histogram), so
they carry the histogram's bound: within 5 % of a true value of the merged data.

In dp mode every published count carries discrete Laplace noise of scale b. A figure summed from
m noised counts gets a 95 % margin of ln(1/0.05)·√(Σ b²): for one count that is the exact
b·ln 20 (P(|Z| > t) ≤ e^(−t/b)), and for sums it stays above the normal approximation
1.96·√(2·Σ b²). `requests` is itself a sum of the noisy outcomes of each summary.
"""

from __future__ import annotations

import math
from typing import Any, Final, get_args

from relay.aggregate import histogram
from relay.config import LeadThresholds
from relay.ingest.models import Outcome, Signal
from relay.lead.tally import Tally

__all__ = ["SEVERITY", "figures", "percentiles_ms", "status_of"]

OUTCOMES: Final[tuple[str, ...]] = get_args(Outcome)
SIGNALS: Final[tuple[str, ...]] = get_args(Signal)
#: Statuses from worst to best: the order the dashboard sorts by.
SEVERITY: Final[tuple[str, ...]] = ("down", "degraded", "unknown", "healthy")
_QUANTILES: Final = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
_LN20: Final = math.log(20)


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


def status_of(
    requests: int,
    success_ratio: float | None,
    ttfb_p90_ms: float | None,
    duration_p90_ms: float | None,
    thresholds: LeadThresholds,
) -> tuple[str, list[str]]:
    """The status and, for anything but healthy, the reasons in plain words."""
    if requests < thresholds.min_requests or success_ratio is None:
        return "unknown", [f"only {requests} requests in this period: too few to judge"]
    failed = f"{(1 - success_ratio) * 100:.1f} % of requests failed"
    if success_ratio < thresholds.down_success_ratio:
        return "down", [failed]
    reasons = []
    if success_ratio < thresholds.degraded_success_ratio:
        reasons.append(failed)
    slow_start = thresholds.degraded_ttfb_p90_ms
    if slow_start is not None and ttfb_p90_ms is not None and ttfb_p90_ms > slow_start:
        reasons.append(f"slow to start: 1 in 10 requests waited over {_seconds(ttfb_p90_ms)}")
    slow_load = thresholds.degraded_duration_p90_ms
    if slow_load is not None and duration_p90_ms is not None and duration_p90_ms > slow_load:
        reasons.append(f"slow downloads: 1 in 10 took over {_seconds(duration_p90_ms)}")
    return ("degraded", reasons) if reasons else ("healthy", [])


def _noise(tally: Tally, dp_scales: dict[str, int]) -> dict[str, Any] | None:
    noised = {origin: n for origin, n in tally.origins.items() if origin in dp_scales}
    if not noised:
        return None
    variance = sum(n * dp_scales[origin] ** 2 for origin, n in noised.items())
    return {
        "scale": max(dp_scales[origin] for origin in noised),
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


def figures(tally: Tally, thresholds: LeadThresholds, dp_scales: dict[str, int]) -> dict[str, Any]:
    """The numbers of a node (or a region of it, or a point of its series)."""
    requests = tally.requests
    ok = tally.outcomes.get("ok", 0)
    ratio = min(1.0, ok / requests) if requests > 0 else None
    ttfb = percentiles_ms(tally.ttfb_us)
    duration = percentiles_ms(tally.duration_us)
    status, reasons = status_of(requests, ratio, ttfb["p90"], duration["p90"], thresholds)
    return {
        "status": status,
        "reasons": reasons,
        "requests": requests,
        "outcomes": _vocabulary(tally.outcomes, OUTCOMES),
        "success_ratio": ratio,
        "error_rate": None if ratio is None else 1 - ratio,
        "signals": _vocabulary(tally.signals, SIGNALS),
        "ttfb_ms": ttfb,
        "duration_ms": duration,
        "operators": sorted(tally.origins),
        "summaries": tally.summaries,
        "last_window_end_ms": tally.last_window_end_ms,
        "noise": _noise(tally, dp_scales),
    }
