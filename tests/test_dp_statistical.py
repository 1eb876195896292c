"""Differential privacy, measured: released counts of neighbouring inputs differ by ≤ e^ε.

Two inputs differ in one contributor who floods a cell; the aggregator bounds it to m events (P4),
so the exact values of the cell differ by Δ = 6·m in L1 norm, the sensitivity the noise is
calibrated to. Both are released many times through the production noise function (OpenDP's
sampler cannot be seeded, and nothing is). For every outcome t of a statistic T of a release,
ε-DP requires P[T = t | D] ≤ e^ε · P[T = t | D'] and the converse; the test checks this on the
histogram of T, on bins with enough mass, with a tolerance from binomial sampling error.

T is the most revealing statistic there is: the privacy loss itself. On each value i where the
inputs differ (D has v'_i + 2), a release y contributes clip(y_i − v'_i, 0, 2); the log
likelihood ratio of a release is (2T − Δ)/b, so the bound is reached exactly at T = Δ. The test
therefore also checks that the ratio there is e^ε within sampling error: the noise is not larger
than promised either, which is what makes the upper-bound check meaningful.

Only the values that differ are released here: values are noised independently, so their joint
distribution is that of the full release projected onto them (post-processing), while 925 values
per release would make 40 000 releases take minutes.
"""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal

from relay.aggregate.cells import Cell, OpenWindows
from relay.aggregate.observation import IngestRecord, Observation
from relay.privacy import dp
from relay.privacy.ledger import COUNTERS_PER_EVENT, noise_scale
from tests.conftest import observation

EPSILON = Decimal(1)
M = 2  # max_events_per_contributor
RELEASES = 40_000
Z = 5.0  # one-sided; with ≤ 26 comparisons the family-wise false alarm rate is below 1e-5
MIN_COUNT = 100  # bins with enough mass: the normal approximation of the binomial holds
TARGET = 1  # the contributor whose presence the adversary tests


def _request(contributor: int) -> Observation:
    # Every optional field set: the event touches all six noised values it can.
    return observation(
        contributor,
        "d1",
        name="timeout",
        asset="video",
        ttfb_ms=250.0,
        duration_ms=4000.0,
        bytes=1_000_000,
    )


def _cell(with_target: bool) -> Cell:
    windows = OpenWindows(M, max_cells_per_contributor=2, nodes=frozenset({("distributor", "d1")}))
    background = [_request(c) for c in range(100, 160) for _ in range(3)]  # 60 × m = 120 kept
    flood = [_request(TARGET)] * 500 if with_target else []  # bounded to m
    windows.apply(IngestRecord(0, "EU", background + flood, {}, {}))
    return windows.pop(0).cells[("distributor", "d1", "EU")]


def _loss_histogram(exact: list[int], base: list[int], scale: int) -> Counter[int]:
    noisy = dp.add_noise(exact * RELEASES, scale)
    assert all(type(value) is int and value >= 0 for value in noisy)
    k = len(exact)
    return Counter(
        sum(min(max(y - b, 0), 2) for y, b in zip(noisy[i * k : (i + 1) * k], base, strict=True))
        for i in range(RELEASES)
    )


def test_neighbouring_releases_differ_by_at_most_e_to_the_epsilon() -> None:
    d, d_prime = dp.cell_counts(_cell(True)), dp.cell_counts(_cell(False))
    differs = [i for i, (a, b) in enumerate(zip(d, d_prime, strict=True)) if a != b]
    delta = M * COUNTERS_PER_EVENT
    # The flood was bounded to m events, which use the whole sensitivity (the worst case).
    assert sum(d[i] - d_prime[i] for i in differs) == delta
    assert all(d[i] - d_prime[i] == M for i in differs)
    scale = noise_scale(delta, EPSILON)
    assert scale == 12

    base = [d_prime[i] for i in differs]
    with_target = _loss_histogram([d[i] for i in differs], base, scale)
    without = _loss_histogram(base, base, scale)

    bound = math.exp(EPSILON)
    checked = 0
    for t in range(delta + 1):
        p, q = with_target[t] / RELEASES, without[t] / RELEASES
        if min(with_target[t], without[t]) < MIN_COUNT:
            continue
        checked += 1
        for a, b in ((p, q), (q, p)):
            sigma = math.sqrt((a * (1 - a) + bound**2 * b * (1 - b)) / RELEASES)
            assert a - bound * b <= Z * sigma, (t, p, q, a / b)
    assert checked >= 8  # most of the loss histogram had enough mass to be tested

    # Tightness: at T = Δ the likelihood ratio is e^ε exactly; log-ratio error ≈ √(1/n₁ + 1/n₂).
    top_with, top_without = with_target[delta], without[delta]
    observed = math.log(top_with / top_without)
    assert abs(observed - float(EPSILON)) <= Z * math.sqrt(1 / top_with + 1 / top_without)
