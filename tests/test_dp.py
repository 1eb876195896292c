"""dp mode (P7): configuration and ledger, bounds, the mechanism, and the published batches."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import opendp.prelude as opendp
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.aggregate import histogram
from relay.aggregate.cells import OpenWindows, WindowState
from relay.aggregate.observation import IngestRecord, Observation
from relay.config import ConfigError, Settings, load_settings
from relay.privacy import dp
from relay.privacy.geo import REGIONS
from relay.privacy.ledger import (
    COUNTERS_PER_EVENT,
    LedgerError,
    derive_epsilon,
    noise_scale,
    plan_budget,
    windows_per_day,
)
from relay.seal.release import dp_release
from relay.serve import OperatorRelay
from relay.sinks.store import EmbeddedStore
from tests.conftest import (
    RunningRelay,
    from_network,
    observation,
    request_event,
    signal_event,
)

ROOT = Path(__file__).resolve().parent.parent
NODES = [{"role": "distributor", "id": "d1"}, {"role": "storage", "id": "s1"}]
DP = {"mode": "dp", "nodes": NODES}

StartRelay = Callable[..., Any]


def dp_settings(**privacy: Any) -> Settings:
    return Settings(privacy={**DP, **privacy})


# -- configuration and ledger -------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [1, 7, 60, 300, 3600, 50_000, 86_400])
def test_defaults_are_accepted_by_the_ledger_for_any_window(seconds: int) -> None:
    settings = Settings(window={"seconds": seconds}, privacy=DP)
    release = dp_release(settings.privacy, seconds)
    budget = release.budget
    assert budget.daily_epsilon <= settings.privacy.daily_epsilon_cap == Decimal("0.3")
    assert budget.scale * budget.epsilon >= budget.sensitivity  # b ≥ Δ/ε


def test_default_dp_parameters() -> None:
    header = dp_release(dp_settings().privacy, 300).header()
    assert header == {
        "mode": "dp",
        "geo": "region",
        "publication": "fixed",
        "unit": "contributor-day",
        "max_events_per_contributor": 50,
        "max_cells_per_contributor": 2,
        "sensitivity": 300,
        "mechanism": "discrete_laplace",
        "scale": 576_924,
        "epsilon": "0.00052",
        "window_epsilon": "0.00104",
        "delta": 0,
        "windows_per_day": 288,
        "daily_epsilon": "0.29952",
        "daily_epsilon_cap": "0.3",
    }


def test_ledger_refusal_names_the_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings_from({"privacy": {**DP, "epsilon": 0.01}})
    message = str(caught.value)
    for key in (
        "privacy.epsilon",
        "privacy.max_cells_per_contributor",
        "window.seconds",
        "privacy.daily_epsilon_cap",
    ):
        assert key in message
    assert "ε = 5.76 per contributor-day" in message  # 288 × 2 × 0.01, exact


def test_ledger_accepts_exactly_the_cap() -> None:
    # 0.3 / (288 × 2) is not a decimal; 24 windows × 1 cell × 0.0125 = 0.3 is, exactly.
    settings = Settings(
        window={"seconds": 3600},
        privacy={**DP, "epsilon": "0.0125", "max_cells_per_contributor": 1},
    )
    budget = dp_release(settings.privacy, 3600).budget
    assert budget.daily_epsilon == Decimal("0.3")
    with pytest.raises(LedgerError):
        plan_budget(
            epsilon=Decimal("0.0125000001"),
            max_events=50,
            cells=1,
            window_seconds=3600,
            cap=Decimal("0.3"),
        )


def test_ledger_refuses_a_scale_beyond_2_to_the_40() -> None:
    with pytest.raises(ConfigError, match=r"privacy\.max_events_per_contributor"):
        load_settings_from(
            {"privacy": {**DP, "max_events_per_contributor": 10**9, "daily_epsilon_cap": 1e-3}}
        )


@pytest.mark.parametrize(
    ("privacy", "key"),
    [
        ({"mode": "dp"}, "privacy.nodes"),
        ({**DP, "nodes": [*NODES, NODES[0]]}, "privacy.nodes"),
        ({**DP, "geo": "country"}, "privacy.geo"),
        ({**DP, "max_cells_per_contributor": 0}, "privacy.max_cells_per_contributor"),
        ({**DP, "epsilon": "nan"}, "privacy.epsilon"),
        ({**DP, "epsilon": 0}, "privacy.epsilon"),
        ({**DP, "daily_epsilon_cap": -1}, "privacy.daily_epsilon_cap"),
        ({**DP, "nodes": [{"role": "gateway", "id": "g"}]}, "privacy.nodes"),
        ({**DP, "nodes": [{"role": "storage", "id": "bad id"}]}, "privacy.nodes"),
    ],
)
def test_invalid_dp_configuration_names_the_key(privacy: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_settings_from({"privacy": privacy})


def test_aggregate_mode_ignores_the_dp_keys() -> None:
    settings = load_settings_from({"privacy": {"epsilon": 5}})  # over budget, but not dp
    assert settings.privacy.mode == "aggregate"


def test_epsilon_is_an_exact_decimal_from_yaml_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings_from({"privacy": {**DP, "epsilon": 0.0001}}).privacy.epsilon == Decimal(
        "0.0001"
    )
    monkeypatch.setenv("RELAY_PRIVACY__MODE", "dp")
    monkeypatch.setenv("RELAY_PRIVACY__NODES", json.dumps(NODES))
    monkeypatch.setenv("RELAY_PRIVACY__EPSILON", "0.00045")
    settings = load_settings(None)
    assert settings.privacy.epsilon == Decimal("0.00045")
    assert dp_release(settings.privacy, 300).header()["epsilon"] == "0.00045"


def test_relay_serve_refuses_to_start_over_budget(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "relay.yaml"
    config.write_text(
        yaml.safe_dump({"data_dir": str(data_dir), "privacy": {**DP, "epsilon": 0.01}})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "privacy.daily_epsilon_cap" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data_dir.exists()


def load_settings_from(config: dict[str, Any]) -> Settings:
    """load_settings over a YAML file holding `config` (so YAML typing applies)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "relay.yaml"
        path.write_text(yaml.safe_dump(config))
        return load_settings(path)


# -- ledger arithmetic ----------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [1, 7, 60, 300, 299, 3600, 50_000, 86_399, 86_400])
def test_windows_per_day_is_the_most_windows_a_utc_day_overlaps(seconds: int) -> None:
    # Days and windows both start at multiples of their length from the epoch, so a day starts
    # at every offset r within a window that is a multiple of gcd(86400, s), and only those.
    offsets = range(0, seconds, math.gcd(86_400, seconds))
    most = max((r + 86_400 - 1) // seconds + 1 for r in offsets)
    assert windows_per_day(seconds) == most


@settings(max_examples=300, deadline=None)
@given(
    cap=st.decimals(min_value="0.001", max_value="100", places=3),
    cells=st.integers(1, 1000),
    seconds=st.integers(1, 86_400),
)
def test_derived_epsilon_spends_at_most_the_cap(cap: Decimal, cells: int, seconds: int) -> None:
    per_day = windows_per_day(seconds)
    epsilon = derive_epsilon(cap, cells, per_day)
    assert epsilon > 0
    assert Fraction(epsilon) * cells * per_day <= Fraction(cap)
    # Two significant digits, rounded down: the next step up would be over the cap.
    digits = epsilon.normalize().as_tuple().digits
    assert len(digits) <= 2
    step = Decimal(1).scaleb(epsilon.adjusted() - 1)
    assert Fraction(epsilon + step) * cells * per_day > Fraction(cap)


def test_noise_scale_is_the_smallest_integer_at_least_delta_over_epsilon() -> None:
    assert noise_scale(300, Decimal("0.00052")) == 576_924  # 576 923.07…
    assert noise_scale(12, Decimal(1)) == 12
    assert noise_scale(6, Decimal("0.1")) == 60  # exact: not 60.000000000000007


# -- contribution bounds --------------------------------------------------------------------------


def obs(contributor: int, node: str = "d1", **fields: Any) -> Observation:
    return observation(contributor, node, **fields)


def record(observations: Iterable[Observation], region: str = "EU") -> IngestRecord:
    return IngestRecord(0, region, list(observations), {}, {})


def test_flood_by_one_client_is_bounded_in_cells_and_events() -> None:
    nodes = frozenset(("distributor", f"d{i}") for i in range(10))
    windows = OpenWindows(5, max_cells_per_contributor=2, nodes=nodes)
    flood = tuple(obs(7, f"d{i % 12}") for i in range(1200))  # 10 listed nodes and 2 others
    windows.apply(record(flood))
    windows.apply(record((obs(8, "d5"),)))
    state = windows.pop(0)
    touched = {key: cell for key, cell in state.cells.items() if 7 in cell.contributors}
    assert len(touched) == 2
    assert all(cell.contributors[7] == 5 == cell.requests for cell in touched.values())
    assert state.unlisted == 200  # d10, d11: dropped before bounding
    assert state.over_cap == 1200 - 200 - 10
    assert state.cells[("distributor", "d5", "EU")].contributors == {8: 1}
    assert state.accepted == 1201
    assert windows.estimated_bytes == 0  # the accounting returns to zero with the window


def test_aggregate_mode_has_no_cell_bound() -> None:
    windows = OpenWindows(5)
    windows.apply(record(tuple(obs(7, f"d{i}") for i in range(40))))
    state = windows.pop(0)
    assert (len(state.cells), state.over_cap, state.unlisted) == (40, 0, 0)


_events = st.lists(
    st.tuples(
        st.integers(0, 5),  # contributor (0 is the one removed)
        st.sampled_from(["d1", "d2", "d3", "dx"]),
        st.sampled_from(["EU", "NA", "ZZ"]),
        st.sampled_from(["request", "signal"]),
        st.sampled_from(["ok", "timeout", "blacklisted", "playback_slow"]),
        st.sampled_from([None, "video", "image"]),
        st.one_of(st.none(), st.floats(0, 600_000)),
        st.one_of(st.none(), st.floats(0, 3_600_000)),
        st.one_of(st.none(), st.integers(0, 2**40 - 1)),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(events=_events, m=st.integers(1, 4), c=st.integers(1, 3))
def test_one_contributor_moves_at_most_c_cells_by_at_most_delta(
    events: list[tuple[Any, ...]], m: int, c: int
) -> None:
    nodes = frozenset(("distributor", n) for n in ("d1", "d2", "d3"))

    def cells(without: int | None) -> dict[Any, list[int]]:
        windows = OpenWindows(m, max_cells_per_contributor=c, nodes=nodes)
        for who, node, region, kind, name, asset, ttfb, duration, size in events:
            if who == without:
                continue
            if kind == "signal":
                name = "blacklisted" if name in ("ok", "timeout") else name
                fields: dict[str, Any] = {"kind": kind, "name": name, "op": None}
            else:
                name = "ok" if name not in ("ok", "timeout") else name
                fields = {"name": name, "ttfb_ms": ttfb, "duration_ms": duration, "bytes": size}
            # One record per event: the region is a request's, and the order is kept.
            windows.apply(record([obs(who, node, asset=asset, **fields)], region))
        return {k: dp.cell_counts(cell) for k, cell in windows.pop(0).cells.items()}

    with_all, without = cells(None), cells(0)
    empty = [0] * dp.LAYOUT_SIZE
    moved = [
        sum(abs(a - b) for a, b in zip(with_all.get(k, empty), without.get(k, empty), strict=True))
        for k in with_all.keys() | without.keys()
    ]
    assert max(moved, default=0) <= COUNTERS_PER_EVENT * m
    assert sum(1 for distance in moved if distance) <= c


# -- the mechanism --------------------------------------------------------------------------------


def test_noise_is_integer_clamped_and_from_opendp() -> None:
    noisy = dp.add_noise([0, 1, 5, 2**53 - 1] * 2000, 3)
    assert all(type(value) is int and 0 <= value <= 2**53 - 1 for value in noisy)
    assert noisy.count(0) > 1000  # clamped, not dropped
    assert len(set(noisy[2::4])) > 5  # noise, not a constant
    measurement = cast(opendp.Measurement, dp._measurement(3))
    assert isinstance(measurement, opendp.Measurement)
    assert str(measurement.output_measure) == "MaxDivergence"
    assert measurement.input_domain == opendp.vector_domain(opendp.atom_domain(T="i64"))
    # OpenDP's own privacy map agrees with the calibration: Δ = 6 at b = 60 costs ε = 0.1.
    assert measurement.map(3) == 1.0  # type: ignore[no-untyped-call]
    at_60 = cast(opendp.Measurement, dp._measurement(60))
    assert at_60.map(6) == pytest.approx(0.1, rel=1e-12)  # type: ignore[no-untyped-call]


def test_noise_rejects_what_it_cannot_release() -> None:
    with pytest.raises(ValueError, match="scale"):
        dp.add_noise([1], 0)
    with pytest.raises(ValueError, match="integers"):
        dp.add_noise([1.0], 3)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="integers"):
        dp.add_noise([-1], 3)


def test_noisy_summary_is_consistent() -> None:
    windows = OpenWindows(50, max_cells_per_contributor=2, nodes=frozenset({("distributor", "d1")}))
    windows.apply(record((obs(1, ttfb_ms=20.0), obs(2, kind="signal", name="dns"))))
    cell = windows.pop(0).cells[("distributor", "d1", "EU")]
    noisy = dp.add_noise(dp.cell_counts(cell), 2)
    summary = dp.noisy_summary(("distributor", "d1", "EU"), noisy, 0, 60_000)
    assert summary["requests"] == sum(summary["outcomes"].values())
    assert list(summary["outcomes"]) == sorted(dp.OUTCOMES)
    assert set(summary["ops"]) == set(dp.OPS)
    assert set(summary["signals"]) == set(dp.SIGNALS)
    assert set(summary["assets"]) == set(dp.ASSETS)
    assert "bytes" not in summary
    for name in ("ttfb_us", "duration_us", "throughput_bps"):
        histogram.from_document(summary[name])  # a valid document of the shared layout


def test_the_layout_round_trips_the_exact_summary() -> None:
    key = ("distributor", "d1", "EU")
    windows = OpenWindows(50, max_cells_per_contributor=2, nodes=frozenset({key[:2]}))
    events = (
        obs(1, ttfb_ms=20.0, duration_ms=900.0, bytes=50_000, asset="video"),
        obs(2, name="timeout", op="probe", ttfb_ms=0.05),
        obs(3, kind="signal", name="playback_slow", op=None, asset="image"),
    )
    windows.apply(record(events))
    cell = windows.pop(0).cells[key]
    summary = dp.noisy_summary(key, dp.cell_counts(cell), 0, 60_000)
    expected = cell.summary(key, 0, 60_000)
    del expected["bytes"]
    for block in ("outcomes", "ops", "signals", "assets"):
        summary[block] = {name: count for name, count in summary[block].items() if count}
    assert summary == expected


# -- no seedable randomness ------------------------------------------------------------------------

# Allowed: the shipper's retry jitter (decides when, never what, is published) and the `relay
# bench` load generator (fabricates test traffic; no serving module imports it).
_RANDOM_ALLOWED = ("relay/outbox/shipper.py", "relay/bench/")
_RANDOM = re.compile(
    r"^\s*(import random\b|from random import|import numpy|from numpy)|\bnp\.random\b"
    r"|\bnumpy\.random\b|\brandom\.seed\b|\bRandom\(",
    re.MULTILINE,
)


def test_relay_has_no_seedable_rng_on_the_production_path() -> None:
    sources = {
        str(path.relative_to(ROOT)): path.read_text(encoding="utf-8")
        for path in sorted((ROOT / "relay").rglob("*.py"))
    }
    offenders = [
        name
        for name, source in sources.items()
        if _RANDOM.search(source) and not name.startswith(_RANDOM_ALLOWED)
    ]
    assert offenders == []
    importers = [
        name
        for name, source in sources.items()
        if "relay.bench" in source and not name.startswith(("relay/bench/", "relay/cli.py"))
    ]
    assert importers == []
    source = sources["relay/privacy/dp.py"]
    assert "import opendp.prelude" in source
    assert "make_laplace" in source


# -- end to end over HTTP --------------------------------------------------------------------------


def stored(relay: OperatorRelay) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    store = EmbeddedStore(relay.settings.data_dir / "store.sqlite", readonly=True)
    try:
        docs = [d.source for d in store.documents()]
    finally:
        store.close()
    return [d for d in docs if "att" not in d], [d for d in docs if "att" in d]


def no_floats(value: Any) -> bool:
    if isinstance(value, dict):
        return all(no_floats(v) for v in value.values())
    if isinstance(value, list):
        return all(no_floats(v) for v in value)
    return not isinstance(value, float)


async def test_dp_mode_publishes_the_fixed_cells_with_noisy_integers(
    start_relay: StartRelay,
) -> None:
    running: RunningRelay = await start_relay(privacy=DP)
    relay = running.relay
    header = relay.policy.header()
    events = [
        request_event("d1", client=f"c{i}", ttfb_ms=30 + i, duration_ms=900, bytes=10_000)
        for i in range(20)
    ]
    events += [signal_event("d1", client="c1"), request_event("unlisted", client="c2")]
    flood = [request_event("d1", client="flood")] * 300
    for network, sent in enumerate((events, flood)):
        status, body = await running.post(
            "/v1/events", {"events": sent}, headers=from_network(network)
        )
        assert status == 202 and body["accepted"] == len(sent)

    assert await running.seal_after(60 + 10) == 1
    assert await running.seal_after(60) == 1  # an empty window: the same cells, all noise
    assert await relay.shipper.ship_pending()
    batch_docs, summary_docs = stored(relay)
    assert len(batch_docs) == 2

    expected = sorted((node["role"], node["id"], region) for node in NODES for region in REGIONS)
    for batch in batch_docs:
        signed = json.loads(batch["signed"].split("\n", 1)[1])
        assert no_floats(signed)
        assert signed["privacy"] == header
        assert signed["n"] == len(expected) == 16
        mine = sorted((s for s in summary_docs if s["seq"] == batch["seq"]), key=lambda s: s["i"])
        assert [(s["node"]["role"], s["node"]["id"], s["region"]) for s in mine] == expected
        for summary in mine:
            leaf = {key: value for key, value in summary.items() if key != "att"}
            assert no_floats(leaf)
            assert "bytes" not in leaf
            assert leaf["requests"] == sum(leaf["outcomes"].values())
            assert set(leaf["outcomes"]) == set(dp.OUTCOMES)
            for name in ("ttfb_us", "duration_us", "throughput_bps"):
                histogram.from_document(leaf[name])
        # Signed stats come from the noisy summaries only (exact ones would leak).
        stats = signed["stats"]
        published = sum(s["requests"] + sum(s["signals"].values()) for s in mine)
        assert stats["accepted"] == published
        # The same counts as an aggregate-mode batch names, every one but `accepted` zero.
        assert set(stats) == set(WindowState(0).stats(0, 0))
        assert {k: v for k, v in stats.items() if k != "accepted"} == dict.fromkeys(
            set(stats) - {"accepted"}, 0
        )

    # The guarantee is stated at /v1/operator too, and the ledger holds.
    async with running.http.get(running.url("/v1/operator")) as resp:
        operator = await resp.json()
    privacy = operator["privacy"]
    assert privacy == header
    assert privacy["mechanism"] == "discrete_laplace" and type(privacy["scale"]) is int
    assert Decimal(privacy["daily_epsilon"]) <= Decimal(privacy["daily_epsilon_cap"])
    assert Fraction(privacy["sensitivity"], privacy["scale"]) <= Fraction(privacy["epsilon"])
    assert privacy["windows_per_day"] == 1440  # 60 s windows in the tests

    # Exact drops reach the operator's metrics only: 298 of the flood, 1 unlisted event.
    registry = relay.metrics.registry
    over_cap = registry.get_sample_value("relay_events_dropped_total", {"reason": "over_cap"})
    suppressed = registry.get_sample_value("relay_events_dropped_total", {"reason": "suppressed"})
    assert (over_cap, suppressed) == (250, 1)
