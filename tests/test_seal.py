"""The seal stage on its own: spans, the pure batch builder, the release policies, and the
commit-then-forget order against a real WAL and outbox (no HTTP server)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.aggregate.cells import OpenWindows, WindowState
from relay.aggregate.observation import IngestRecord
from relay.attest.batch import ZERO_HASH, verify_batch
from relay.attest.checkpoint import open_checkpoint
from relay.attest.keys import OperatorKey
from relay.config import PrivacyConfig, Settings, WindowConfig
from relay.seal.batch import Span, plan_spans, seal_span
from relay.seal.release import DpPolicy, KThresholdPolicy, release_policy
from relay.serve import OperatorRelay
from tests.conftest import T0_MS, FakeClock, observation

W = 60_000
ORIGIN = "test.relay/seal"


def state_with(start_ms: int, cells: int = 2, contributors: int = 3) -> WindowState:
    windows = OpenWindows(max_events_per_contributor=50)
    windows.sealed_until_ms = start_ms
    windows.apply(
        IngestRecord(
            start_ms,
            "EU",
            [
                observation(c, f"d{n}", window_start_ms=start_ms, ttfb_ms=20 + c)
                for n in range(cells)
                for c in range(contributors)
            ],
            {"late": 1},
            {},  # no source network keys: each contributor counts as its own network
        )
    )
    return windows.pop(start_ms)


# -- plan_spans ---------------------------------------------------------------------------------


def test_each_window_with_data_is_a_span_and_empty_runs_are_one_gap() -> None:
    a, b = state_with(T0_MS + W), state_with(T0_MS + 4 * W)
    spans = plan_spans([b, a], T0_MS, T0_MS + 6 * W, W)
    assert [(s.start_ms - T0_MS, s.end_ms - T0_MS) for s in spans] == [
        (0, W),
        (W, 2 * W),
        (2 * W, 4 * W),
        (4 * W, 5 * W),
        (5 * W, 6 * W),
    ]
    assert [s.gap for s in spans] == [True, False, True, False, True]
    assert spans[1].state is a and spans[3].state is b


def test_windows_not_due_are_left_out() -> None:
    spans = plan_spans([state_with(T0_MS + W)], T0_MS, T0_MS + W, W)
    assert [(s.start_ms, s.end_ms, s.gap) for s in spans] == [(T0_MS, T0_MS + W, True)]


# -- seal_span ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> OperatorKey:
    return OperatorKey.generate(ORIGIN)


def k_policy(k: int = 3) -> KThresholdPolicy:
    return KThresholdPolicy(PrivacyConfig(k=k), WindowConfig())


def test_seal_span_signs_a_verifiable_batch_with_its_documents_and_checkpoint(
    key: OperatorKey,
) -> None:
    span = Span(T0_MS, T0_MS + W, state_with(T0_MS))
    sealed = seal_span(
        span, None, key, k_policy(), signed_at_ms=T0_MS + 2 * W, window_ms=W, index_prefix="r-"
    )
    header = verify_batch(key.verifier, sealed.signed.msg, sealed.signed.sig)
    assert header["seq"] == 0 and header["prev"] == "A" * 43 + "="
    assert header["n"] == 2 and header["privacy"]["mode"] == "aggregate"
    assert header["stats"]["accepted"] == 6 and header["stats"]["late"] == 1
    assert [d.source.get("i") for d in sealed.documents] == [None, 0, 1]
    assert sealed.head.seq == 0 and sealed.head.sealed_until_ms == T0_MS + W
    assert open_checkpoint(sealed.head.checkpoint, key.verifier).size == 1


def test_seal_span_is_a_function_of_its_inputs(key: OperatorKey) -> None:
    span = Span(T0_MS, T0_MS + W, state_with(T0_MS))
    first = seal_span(span, None, key, k_policy(), signed_at_ms=1, window_ms=W, index_prefix="")
    again = seal_span(span, None, key, k_policy(), signed_at_ms=1, window_ms=W, index_prefix="")
    assert again.signed.msg == first.signed.msg and again.documents == first.documents
    # It reads the state, never consumes it: the window is still whole for a retry.
    assert span.state.accepted == 6 and len(span.state.cells) == 2
    # The next batch extends the head it is given.
    gap = Span(T0_MS + W, T0_MS + 3 * W, WindowState(T0_MS + W))
    after = seal_span(
        gap, first.head, key, k_policy(), signed_at_ms=2, window_ms=W, index_prefix=""
    )
    header = verify_batch(key.verifier, after.signed.msg, after.signed.sig)
    assert header["seq"] == 1 and header["gap"] is True and header["n"] == 0
    assert after.signed.header["prev"] != ZERO_HASH
    assert open_checkpoint(after.head.checkpoint, key.verifier).size == 2


def test_a_handover_batch_names_the_next_key(key: OperatorKey) -> None:
    successor = OperatorKey.generate(ORIGIN)
    span = Span(T0_MS, T0_MS + W, WindowState(T0_MS))
    sealed = seal_span(
        span,
        None,
        key,
        k_policy(),
        signed_at_ms=1,
        window_ms=W,
        index_prefix="",
        next_key=successor,
    )
    assert sealed.signed.header["next_kid"] == successor.kid
    assert sealed.kid == key.kid and sealed.next_kid == successor.kid


# -- release policies ---------------------------------------------------------------------------


def test_k_threshold_policy_publishes_cells_with_k_contributors_and_counts_the_rest() -> None:
    state = state_with(T0_MS, cells=2, contributors=3)
    release = k_policy(k=4).release(state, T0_MS, T0_MS + W)
    assert release.summaries == []
    assert release.signed_stats == release.exact_stats
    assert release.exact_stats["suppressed_cells"] == 2
    assert release.exact_stats["suppressed_events"] == 6


def test_dp_policy_signs_stats_of_the_noisy_summaries_only() -> None:
    privacy = PrivacyConfig(mode="dp", nodes=[{"role": "distributor", "id": "d0"}], geo="none")
    policy = release_policy(privacy, WindowConfig(seconds=300))
    assert isinstance(policy, DpPolicy)
    assert isinstance(release_policy(PrivacyConfig(), WindowConfig()), KThresholdPolicy)
    state = state_with(T0_MS, cells=2, contributors=3)
    release = policy.release(state, T0_MS, T0_MS + W)
    assert [(s["node"]["id"], s["region"]) for s in release.summaries] == [("d0", "ZZ")]
    assert release.signed_stats["accepted"] == sum(
        s["requests"] + sum(s["signals"].values()) for s in release.summaries
    )
    assert release.signed_stats["late"] == 0  # exact counts stay with the operator
    assert release.exact_stats["late"] == 1 and release.exact_stats["accepted"] == 6
    assert policy.header()["mode"] == "dp"


# -- the stage: commit, then forget -------------------------------------------------------------


@pytest.fixture
def relay_factory(tmp_path: Path) -> Callable[..., OperatorRelay]:
    def make(clock: FakeClock, **privacy: Any) -> OperatorRelay:
        settings = Settings(
            origin=ORIGIN,
            data_dir=tmp_path / "data",
            window={"seconds": 60, "lateness_seconds": 10},
            privacy={"k": 3, **privacy},
            outbox={"ship_interval_seconds": 3600},
        )
        return OperatorRelay(settings, clock=clock)

    return make


def wal_bytes(relay: OperatorRelay) -> int:
    return sum(p.stat().st_size for p in (relay.settings.data_dir / "wal").glob("segment-*"))


async def test_window_state_and_wal_stay_until_the_outbox_commit_succeeds(
    relay_factory: Callable[..., OperatorRelay],
) -> None:
    clock = FakeClock()
    relay = relay_factory(clock)
    await relay.start()
    try:
        window = clock() - clock() % W
        await relay.commit(
            IngestRecord(
                window,
                "EU",
                # 20 cells: a batch bigger than the outbox file's free pages.
                [
                    observation(c, f"d{n}", window_start_ms=window)
                    for n in range(20)
                    for c in range(3)
                ],
                {},
                {},
            )
        )
        clock.advance(75)
        db: sqlite3.Connection = relay.outbox._db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(sqlite3.OperationalError):
            await relay.seal_due()
        assert relay.windows.starts() == [window]
        assert relay.windows.window(window).accepted == 60
        assert relay.windows.sealed_until_ms == window
        assert wal_bytes(relay) > 0
        assert relay.outbox.head() is None and relay.sealer.head is None
        db.execute("PRAGMA max_page_count = 1073741823")
        await relay.seal_due()  # (or the seal loop, retrying, got there first)
        assert relay.windows.starts() == []
        assert relay.windows.sealed_until_ms == window + W
        assert wal_bytes(relay) == 0  # P8: pruned once committed
        head = relay.outbox.head()
        assert head is not None and head == relay.sealer.head and head.seq == 0
    finally:
        await relay.stop()


async def test_dp_retry_commits_the_noise_drawn_first(
    relay_factory: Callable[..., OperatorRelay],
) -> None:
    """A second noisy release of the same window would spend budget twice (P7): the retry
    stores the batch the failed attempt drew."""
    clock = FakeClock()
    nodes = [{"role": "distributor", "id": f"d{n}"} for n in range(10)]
    relay = relay_factory(clock, mode="dp", nodes=nodes, geo="none")
    await relay.start()
    try:
        clock.advance(75)
        db: sqlite3.Connection = relay.outbox._db
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(sqlite3.OperationalError):
            await relay.seal_due()
        drawn = relay.sealer.pending
        assert drawn is not None
        db.execute("PRAGMA max_page_count = 1073741823")
        await relay.seal_due()  # (or the seal loop, retrying, got there first)
        assert relay.outbox.head() == drawn.head
    finally:
        await relay.stop()
