"""Discrete Laplace noise on a cell's counts (P7), sampled by OpenDP.

Mechanism. Every published count x of a cell becomes clamp(x + Z), Z drawn from the discrete
Laplace distribution of integer scale b, P(Z = z) ∝ exp(−|z| / b) for every integer z, and clamp
limiting the result to [0, 2^53 − 1]. The noise comes from OpenDP's `make_laplace` over `i64`
values, which samples exactly, on rationals, with the algorithm of Canonne, Kamath & Steinke,
"The Discrete Gaussian for Differential Privacy" (NeurIPS 2020), §5.2 / Algorithm 2, fed by a
CSPRNG (OpenSSL's `RAND_bytes`). There is no seedable generator and no floating-point step
between the sampler and the published integer: b is an integer (exact as an f64), the counts are
integers, and clamping is post-processing, so it costs no privacy.

Sensitivity. The noised values of a cell (`cell_counts`) are the outcome, op, signal and asset
counts and every bin of the three histograms. One request event adds 1 to at most 6 of them
(ledger.COUNTERS_PER_EVENT): its outcome, its op, its asset if any, and one bin of each histogram
it reports; a signal adds 1 to at most 2 (its signal, its asset). `requests` is not noised on its
own: it is the sum of the noisy outcomes (post-processing), so outcomes always add up to
requests. One contributor adds at most m = `privacy.max_events_per_contributor` events to a cell
per window (P4), so removing it moves the cell's vector by at most Δ = 6·m in L1 norm. Noise of
scale b ≥ Δ/ε on every value then makes the cell's release ε-differentially private for that
contributor (the geometric mechanism: Ghosh, Roughgarden & Sundararajan, "Universally
Utility-Maximizing Privacy Mechanisms", STOC 2009; Dwork & Roth 2014, Theorem 3.6 for Laplace).

`bytes` (a sum of values up to 2^40 per event) has no useful sensitivity bound and is not
published in dp mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final, get_args

import opendp.prelude as dp

from relay.aggregate import histogram
from relay.aggregate.cells import Cell, CellKey, Summary, by_name, node_ref
from relay.core.numbers import MAX_SAFE_INT
from relay.core.vocabulary import Asset, Op, Outcome, Signal
from relay.privacy.ledger import MAX_SCALE

__all__ = [
    "ASSETS",
    "LAYOUT_SIZE",
    "OPS",
    "OUTCOMES",
    "SIGNALS",
    "add_noise",
    "cell_counts",
    "noisy_summary",
]

dp.enable_features("contrib")

OUTCOMES: Final[tuple[str, ...]] = get_args(Outcome)
OPS: Final[tuple[str, ...]] = get_args(Op)
SIGNALS: Final[tuple[str, ...]] = get_args(Signal)
ASSETS: Final[tuple[str, ...]] = get_args(Asset)
_BINS: Final = histogram.MAX_INDEX + 1
_HISTOGRAMS: Final = ("ttfb_us", "duration_us", "throughput_bps")

# The order of a cell's noised values: four categorical blocks, then three histograms.
_BLOCKS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("outcomes", OUTCOMES),
    ("ops", OPS),
    ("signals", SIGNALS),
    ("assets", ASSETS),
)
LAYOUT_SIZE: Final = sum(len(names) for _, names in _BLOCKS) + len(_HISTOGRAMS) * _BINS


def cell_counts(cell: Cell) -> list[int]:
    """The exact values of a cell, in layout order: the input of the mechanism.

    The layout is the four categorical blocks (every name of their vocabulary), then every bin
    of the three histograms: LAYOUT_SIZE values, the same for every cell.
    """
    counts: list[int] = []
    for attribute, names in _BLOCKS:
        counter: Mapping[str, int] = getattr(cell, attribute)
        counts.extend(counter.get(name, 0) for name in names)
    for bins in (cell.ttfb, cell.duration, cell.throughput):
        counts.extend(bins.get(index, 0) for index in range(_BINS))
    return counts


@lru_cache(maxsize=4)
def _measurement(scale: int) -> Callable[[list[int]], Any]:
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64")
    measurement: Callable[[list[int]], Any] = dp.m.make_laplace(*space, scale=float(scale))
    return measurement


def add_noise(exact: Sequence[int], scale: int) -> list[int]:
    """Each value plus independent discrete Laplace(scale) noise, clamped to [0, 2^53 − 1]."""
    if not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"noise scale {scale} is outside [1, 2^40]")
    if any(type(value) is not int or not 0 <= value <= MAX_SAFE_INT for value in exact):
        raise ValueError("exact counts must be integers in [0, 2^53 − 1]")
    noisy: list[int] = _measurement(scale)(list(exact))
    return [min(max(value, 0), MAX_SAFE_INT) for value in noisy]


def noisy_summary(
    key: CellKey, noisy: Sequence[int], window_start_ms: int, window_end_ms: int
) -> Summary:
    """The published fields of a cell from its noisy values in layout order.

    Every key of the fixed vocabularies is present (noisy zeros included); histogram documents
    list non-zero bins only, as in aggregate mode. `requests` is the sum of the noisy outcomes.
    """
    if len(noisy) != LAYOUT_SIZE:
        raise ValueError(f"{len(noisy)} noisy values; the layout has {LAYOUT_SIZE}")
    role, node_id, region = key
    blocks: dict[str, dict[str, int]] = {}
    at = 0
    for attribute, names in _BLOCKS:
        blocks[attribute] = dict(zip(names, noisy[at : at + len(names)], strict=True))
        at += len(names)
    ttfb, duration, throughput = (
        histogram.to_document(dict(enumerate(noisy[at + i * _BINS : at + (i + 1) * _BINS])))
        for i in range(len(_HISTOGRAMS))
    )
    return {
        "window_start_ms": window_start_ms,
        "window_end_ms": window_end_ms,
        "node": node_ref(role, node_id),
        "region": region,
        "requests": sum(blocks["outcomes"].values()),
        "outcomes": by_name(blocks["outcomes"]),
        "ops": by_name(blocks["ops"]),
        "signals": by_name(blocks["signals"]),
        "assets": by_name(blocks["assets"]),
        "ttfb_us": ttfb,
        "duration_us": duration,
        "throughput_bps": throughput,
    }
