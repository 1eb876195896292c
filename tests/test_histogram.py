from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.aggregate.histogram import (
    GAMMA,
    MAX_INDEX,
    MAX_VALUE,
    MIN_VALUE,
    HistogramError,
    bucket_index,
    from_document,
    merge_documents,
    quantile,
    representative,
    to_document,
)

EXACT_GAMMA = Fraction(27, 25)
BOUND = 0.05

values = st.one_of(
    st.integers(min_value=0, max_value=2**40),
    st.floats(min_value=0, max_value=2**40, allow_nan=False),
)
value_lists = st.lists(values, max_size=200)
above_min = st.one_of(
    st.integers(min_value=MIN_VALUE + 1, max_value=2**40),
    st.floats(min_value=MIN_VALUE, max_value=2**40, exclude_min=True),
)


def histogram(vals: list[float] | list[int]) -> dict[str, list[int]]:
    return to_document(Counter(bucket_index(v) for v in vals))


def nearest_rank(vals: list[float], q: float) -> float:
    rank = max(1, math.ceil(Fraction(repr(q)) * len(vals)))
    return sorted(vals)[rank - 1]


def within_bound(value: float, rep: int) -> bool:
    if value <= MIN_VALUE:
        return abs(rep - value) <= MIN_VALUE
    return abs(rep - value) <= BOUND * value


# Layout


def test_layout_constants() -> None:
    assert float(EXACT_GAMMA) == GAMMA
    assert MIN_VALUE * EXACT_GAMMA ** (MAX_INDEX - 1) < 2**40 <= MIN_VALUE * EXACT_GAMMA**MAX_INDEX
    assert MAX_VALUE >= 2**40


def test_representatives_strictly_increasing() -> None:
    reps = [representative(i) for i in range(MAX_INDEX + 1)]
    assert reps[0] == 0
    assert all(a < b for a, b in pairwise(reps))


def test_representatives_follow_the_formula() -> None:
    for i in range(1, MAX_INDEX + 1):
        exact = 2 * MIN_VALUE * EXACT_GAMMA**i / (1 + EXACT_GAMMA)
        assert abs(representative(i) - exact) <= Fraction(1, 2)


def test_representative_bound_holds_across_each_bucket() -> None:
    # The error is largest at the bucket edges; check both against the exact bounds.
    for i in range(1, MAX_INDEX + 1):
        lower = MIN_VALUE * EXACT_GAMMA ** (i - 1)
        upper = MIN_VALUE * EXACT_GAMMA**i
        rep = representative(i)
        assert abs(rep - lower) <= BOUND * lower
        assert abs(rep - upper) <= BOUND * upper


@pytest.mark.parametrize("index", [-1, MAX_INDEX + 1])
def test_representative_rejects_unknown_index(index: int) -> None:
    with pytest.raises(HistogramError):
        representative(index)


# bucket_index


@given(values)
def test_every_value_is_within_the_error_bound(value: float) -> None:
    assert within_bound(value, representative(bucket_index(value)))


@given(values, values)
def test_bucket_index_is_monotone(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert bucket_index(lo) <= bucket_index(hi)


@given(values)
def test_bucket_index_matches_exact_arithmetic(value: float) -> None:
    index = bucket_index(value)
    exact = Fraction(value)
    if index == 0:
        assert exact <= MIN_VALUE
    else:
        assert MIN_VALUE * EXACT_GAMMA ** (index - 1) < exact <= MIN_VALUE * EXACT_GAMMA**index


def test_boundaries_exactly() -> None:
    for i in range(MAX_INDEX + 1):
        bound = MIN_VALUE * EXACT_GAMMA**i
        near = float(bound)
        candidates = [
            near,
            math.nextafter(near, 0),
            math.nextafter(math.nextafter(near, 0), 0),
            math.nextafter(near, math.inf),
            math.nextafter(math.nextafter(near, math.inf), math.inf),
            math.floor(bound),
            math.ceil(bound),
        ]
        for value in candidates:
            if value > MAX_VALUE:
                continue
            expected = i if Fraction(value) <= bound else i + 1
            assert bucket_index(value) == expected, (i, value)


def test_small_values_fall_in_bucket_zero() -> None:
    assert bucket_index(0) == 0
    assert bucket_index(0.0) == 0
    assert bucket_index(MIN_VALUE) == 0
    assert bucket_index(math.nextafter(MIN_VALUE, math.inf)) == 1
    assert bucket_index(MIN_VALUE + 1) == 1


def test_top_of_the_range() -> None:
    assert bucket_index(2**40) == MAX_INDEX
    assert bucket_index(MAX_VALUE) == MAX_INDEX
    with pytest.raises(HistogramError):
        bucket_index(math.nextafter(MAX_VALUE, math.inf))


@pytest.mark.parametrize("value", [-1, -0.5, math.nan, math.inf, -math.inf, 2**41])
def test_bucket_index_rejects_out_of_range(value: float) -> None:
    with pytest.raises(HistogramError):
        bucket_index(value)


# Documents


def test_empty_histogram() -> None:
    assert to_document({}) == {"values": [], "counts": []}
    assert from_document({"values": [], "counts": []}) == {}
    assert merge_documents([]) == {"values": [], "counts": []}
    assert quantile({"values": [], "counts": []}, 0.5) is None


def test_to_document_shape() -> None:
    doc = to_document({3: 2, 0: 5, 1: 0})
    assert doc == {"values": [0, representative(3)], "counts": [5, 2]}


@given(st.dictionaries(st.integers(0, MAX_INDEX), st.integers(1, 2**40)))
def test_document_round_trip(counts: dict[int, int]) -> None:
    doc = to_document(counts)
    assert doc["values"] == sorted(doc["values"])
    assert from_document(doc) == counts
    assert to_document(from_document(doc)) == doc


def test_zero_counts_are_dropped() -> None:
    rep = representative(5)
    assert from_document({"values": [0, rep], "counts": [0, 3]}) == {5: 3}


@pytest.mark.parametrize(
    "doc",
    [
        {"values": [105], "counts": [1]},  # not a representative
        {"values": [104, 0], "counts": [1, 1]},  # unsorted
        {"values": [104, 104], "counts": [1, 1]},  # duplicate
        {"values": [0, 104], "counts": [1]},  # length mismatch
        {"values": [104], "counts": [-1]},  # negative count
        {"values": [104], "counts": [1.5]},  # fractional count
        {"values": [104.0], "counts": [1]},  # float value
        {"values": [True], "counts": [1]},  # bool is not an integer here
        {"values": [104], "counts": [True]},
        {"values": "104", "counts": [1]},  # not an array
        {"values": [104]},  # missing key
        {"values": [104], "counts": [1], "sum": 104},  # extra key
    ],
)
def test_from_document_rejects_malformed(doc: dict[str, object]) -> None:
    with pytest.raises(HistogramError):
        from_document(doc)


@pytest.mark.parametrize("counts", [{1: -1}, {MAX_INDEX + 1: 1}, {-1: 1}])
def test_to_document_rejects_malformed(counts: dict[int, int]) -> None:
    with pytest.raises(HistogramError):
        to_document(counts)


# Merging


@given(value_lists, value_lists)
def test_merge_equals_histogram_of_concatenation(a: list[float], b: list[float]) -> None:
    assert merge_documents([histogram(a), histogram(b)]) == histogram(a + b)


@given(value_lists, value_lists, value_lists)
def test_merge_is_associative_and_commutative(
    a: list[float], b: list[float], c: list[float]
) -> None:
    ha, hb, hc = histogram(a), histogram(b), histogram(c)
    left = merge_documents([merge_documents([ha, hb]), hc])
    right = merge_documents([ha, merge_documents([hb, hc])])
    assert left == right == merge_documents([hc, hb, ha])
    assert merge_documents([ha, hb]) == merge_documents([hb, ha])


def test_merge_rejects_a_malformed_member() -> None:
    with pytest.raises(HistogramError):
        merge_documents([histogram([1, 2]), {"values": [1], "counts": [1]}])


# Quantiles


@given(st.lists(above_min, min_size=1, max_size=300), st.floats(0, 1))
def test_quantile_within_bound_of_exact(vals: list[float], q: float) -> None:
    estimate = quantile(histogram(vals), q)
    assert estimate is not None
    exact = nearest_rank(vals, q)
    assert abs(estimate - exact) <= BOUND * exact


def test_quantile_nearest_rank() -> None:
    doc = histogram(list(range(1000, 101_000, 1000)))  # 100 values, 1 000 .. 100 000
    assert quantile(doc, 0.0) == representative(bucket_index(1000))
    assert quantile(doc, 0.07) == representative(bucket_index(7000))  # rank 7, not 8
    assert quantile(doc, 0.5) == representative(bucket_index(50_000))
    assert quantile(doc, 1.0) == representative(bucket_index(100_000))


@pytest.mark.parametrize("q", [-0.01, 1.01, math.nan])
def test_quantile_rejects_q_outside_unit_interval(q: float) -> None:
    with pytest.raises(HistogramError):
        quantile(histogram([1000]), q)
