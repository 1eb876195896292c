"""Fixed, mergeable log-scale histogram: the only form in which distributions leave the relay (P6).

Layout (a DDSketch with a fixed γ, shared by every relay so histograms merge exactly):

- values are non-negative numbers in a base unit (µs for durations, bytes/s for throughput);
- bucket 0 holds every value in [0, MIN_VALUE] and is represented by 0: below MIN_VALUE the error
  is absolute, at most MIN_VALUE units (0.1 ms for durations);
- bucket i in 1..MAX_INDEX holds (MIN_VALUE·γ^(i−1), MIN_VALUE·γ^i] and is represented by the
  integer round(2·MIN_VALUE·γ^i / (1 + γ)), which is within (γ−1)/(γ+1) ≈ 3.85 % of every value in
  the bucket; rounding to an integer adds at most 0.5/MIN_VALUE = 0.5 %, so the bound is < 5 %;
- values above MAX_VALUE (≈ 1.15·10^12, past 2^40) are rejected rather than clamped, so the bound
  holds for every counted value.

Bounds and representatives are computed from γ = 27/25 in exact rational arithmetic, so the layout
is identical on every platform and a float or integer value lands in the bucket its exact value
belongs to, boundaries included. (No representative is within 10⁻³ of a rounding tie, so other
implementations get the same integers from plain floating point.)

Document form, which is what gets signed and is exactly the Elasticsearch `histogram` field type:
`{"values": [representative, ... ascending], "counts": [count, ...]}`, non-empty buckets only.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from fractions import Fraction
from itertools import accumulate
from typing import Annotated

from pydantic import Field, with_config
from typing_extensions import TypedDict

from relay.core.fields import Count

__all__ = [
    "BOUNDS",
    "GAMMA",
    "MAX_INDEX",
    "MAX_VALUE",
    "MIN_VALUE",
    "Histogram",
    "HistogramError",
    "bucket_index",
    "from_document",
    "merge_documents",
    "quantile",
    "representative",
    "to_document",
]


@with_config(extra="forbid")
class Histogram(TypedDict):
    """A distribution, exactly the Elasticsearch `histogram` field type (P6).

    Log-scale buckets with a fixed layout shared by every relay (relay.aggregate.histogram):
    `values` are bucket representatives in ascending order, `counts` the number of events in each;
    only non-empty buckets are listed, and both arrays have the same length.
    """

    values: Annotated[list[Count], Field(json_schema_extra={"uniqueItems": True})]
    counts: list[Count]


GAMMA = 1.08
MIN_VALUE = 100
MAX_INDEX = 301  # smallest index with MIN_VALUE·γ^MAX_INDEX ≥ 2^40


class HistogramError(ValueError):
    """A value outside the layout, or a document that is not a valid histogram of this layout."""


def _layout() -> tuple[tuple[float, ...], tuple[int, ...]]:
    gamma = Fraction(str(GAMMA))  # 27/25: the decimal γ, not its binary approximation
    uppers: list[float] = []
    representatives: list[int] = [0]
    for i in range(MAX_INDEX + 1):
        exact = MIN_VALUE * gamma**i
        # The largest float ≤ the exact bound: then `value <= upper` holds for a float or an
        # integer value exactly when it holds for the real bound.
        upper = float(exact)
        if Fraction(upper) > exact:
            upper = math.nextafter(upper, 0.0)
        uppers.append(upper)
        if i > 0:
            representatives.append(round(2 * exact / (1 + gamma)))
    return tuple(uppers), tuple(representatives)


# _UPPER[i] is the inclusive upper bound of bucket i (bucket 0: MIN_VALUE).
_UPPER, _REPRESENTATIVES = _layout()
#: The inclusive upper bound of each bucket: for a value already known to be in
#: [0, MAX_VALUE], `bisect_left(BOUNDS, value)` is its bucket, as `bucket_index` computes it. For
#: hot loops that check the range themselves and cannot afford a second check and call.
BOUNDS: tuple[float, ...] = _UPPER
_INDEX_BY_REPRESENTATIVE = {r: i for i, r in enumerate(_REPRESENTATIVES)}

MAX_VALUE = _UPPER[MAX_INDEX]


def bucket_index(value: float) -> int:
    """The bucket holding a value in [0, MAX_VALUE]; HistogramError otherwise (NaN included)."""
    if 0 <= value <= MAX_VALUE:
        # Bucket i is (_UPPER[i-1], _UPPER[i]]: the first bound ≥ value. A binary search over
        # the exact float bounds is both exact and, in C, faster than a logarithm plus fix-up.
        return bisect_left(_UPPER, value)
    raise HistogramError(f"value {value!r} is outside the histogram range [0, {MAX_VALUE:.0f}]")


def representative(index: int) -> int:
    """The integer standing for every value in bucket `index`."""
    if not 0 <= index <= MAX_INDEX:
        raise HistogramError(f"bucket index {index} is outside [0, {MAX_INDEX}]")
    return _REPRESENTATIVES[index]


def to_document(counts: Mapping[int, int]) -> Histogram:
    """The document form of bucket index → count; zero counts are left out."""
    values: list[int] = []
    doc_counts: list[int] = []
    for index in sorted(counts):
        count = counts[index]
        if type(count) is not int or count < 0:
            raise HistogramError(f"bucket {index} has count {count!r}; counts are integers ≥ 0")
        if count:
            if not 0 <= index <= MAX_INDEX:
                raise HistogramError(f"bucket index {index} is outside [0, {MAX_INDEX}]")
            values.append(_REPRESENTATIVES[index])
            doc_counts.append(count)
    return {"values": values, "counts": doc_counts}


def from_document(doc: Mapping[str, object]) -> dict[int, int]:
    """Bucket index → count of a document; raises HistogramError on anything but this layout.

    Zero counts are accepted (Elasticsearch allows them) and dropped.
    """
    if set(doc) != {"values", "counts"}:
        raise HistogramError(
            f"a histogram has exactly the keys values and counts, not {sorted(doc)}"
        )
    values = doc["values"]
    counts = doc["counts"]
    if not isinstance(values, list | tuple) or not isinstance(counts, list | tuple):
        raise HistogramError("values and counts must be arrays")
    if len(values) != len(counts):
        raise HistogramError(f"{len(values)} values but {len(counts)} counts")
    result: dict[int, int] = {}
    previous = -1
    for value, count in zip(values, counts, strict=True):
        if type(value) is not int or value not in _INDEX_BY_REPRESENTATIVE:
            raise HistogramError(f"{value!r} is not a representative value of this layout")
        if value <= previous:
            raise HistogramError("values must be strictly ascending (no duplicates)")
        if type(count) is not int or count < 0:
            raise HistogramError(f"count {count!r} for value {value}; counts are integers ≥ 0")
        previous = value
        if count:
            result[_INDEX_BY_REPRESENTATIVE[value]] = count
    return result


def merge_documents(docs: Iterable[Mapping[str, object]]) -> Histogram:
    """The histogram of all values of all documents: counts of equal representatives are added."""
    total: dict[int, int] = {}
    for doc in docs:
        for index, count in from_document(doc).items():
            total[index] = total.get(index, 0) + count
    return to_document(total)


def quantile(doc: Mapping[str, object], q: float) -> int | None:
    """Nearest-rank q-quantile: the representative of the bucket holding rank ceil(q·N).

    None for an empty histogram. q is taken at its shortest decimal spelling, so 0.07 of 100
    values is rank 7 and not rank 8 (which is what binary 0.07·100 = 7.000000000000001 gives).
    """
    if not 0.0 <= q <= 1.0:
        raise HistogramError(f"quantile {q!r} is outside [0, 1]")
    counts = from_document(doc)
    n = sum(counts.values())
    if n == 0:
        return None
    rank = max(1, math.ceil(Fraction(repr(q)) * n))
    indices = sorted(counts)
    cumulative = list(accumulate(counts[i] for i in indices))
    return _REPRESENTATIVES[indices[bisect_left(cumulative, rank)]]
